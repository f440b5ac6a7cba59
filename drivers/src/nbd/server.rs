//! [`NbdServer`]: the listener, the handshake, and the hand-over of each
//! connection to its export's iothread.
//!
//! Connections are accepted and negotiated on one iothread (`accept_on`),
//! with a handshake deadline (QEMU's `handshake-max-seconds`, the lesson of
//! CVE-2024-7409), then moved, as a plain fd plus the negotiated state, to
//! the iothread the export picks (round robin over its list), where the
//! transmission phase runs with the socket and the node's I/O on one ring.

use std::net::ToSocketAddrs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::iothread::{spawn_local, IoThreadHandle};
use engine::op::{self, SharedFd};

use super::conn;
use super::negotiate::{negotiate, HandshakeEnd};
use super::registry::Registry;
use crate::export::{Export, ExportCommon, ExportError};
use crate::stats::{peer_name, RateLimit};

/// Handshake failures are a client's doing: their log lines are limited.
static HANDSHAKE_LOG: RateLimit = RateLimit::new();

/// Where the server listens.
#[derive(Debug)]
pub enum NbdAddr {
    /// A unix socket path (created; removed on stop).
    Unix(PathBuf),
    /// A TCP host and port (`port` may be a service name or `0`).
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: String,
    },
    /// An already listening socket.
    Fd(OwnedFd),
}

/// `nbd-server-start` arguments.
#[derive(Debug)]
pub struct NbdServerConfig {
    /// Listening address.
    pub addr: NbdAddr,
    /// Connections served at once; 0 is unlimited.
    pub max_connections: u32,
    /// Handshakes not finished within this are dropped (`None`: no limit).
    pub handshake_timeout: Option<Duration>,
}

/// The NBD part of `block-export-add`.
#[derive(Debug, Clone, Default)]
pub struct NbdExportOptions {
    /// Export name clients ask for.
    pub name: String,
    /// Free-form description (≤ 4096 bytes).
    pub description: Option<String>,
    /// Offer `qemu:allocation-depth`.
    pub allocation_depth: bool,
    /// Dirty bitmaps offered as `qemu:dirty-bitmap:NAME`.
    pub bitmaps: Vec<String>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NbdError {
    /// Binding or listening failed.
    #[error("Failed to bind socket to {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// A TCP address did not resolve.
    #[error("address resolution failed for {0}")]
    Resolve(String),
    /// The accept iothread is gone.
    #[error("iothread unavailable: {0}")]
    IoThread(#[from] engine::EngineError),
}

struct ServerShared {
    registry: Arc<Registry>,
    stopped: AtomicBool,
    connections: AtomicUsize,
    max_connections: u32,
    handshake_timeout: Option<Duration>,
}

/// A running NBD server. See the module docs.
pub struct NbdServer {
    shared: Arc<ServerShared>,
    listener: Mutex<Option<OwnedFd>>,
    unix_path: Option<PathBuf>,
    local_port: Option<u16>,
}

impl NbdServer {
    /// Binds and starts accepting on `accept_on`.
    pub fn start(
        config: NbdServerConfig,
        accept_on: IoThreadHandle,
    ) -> Result<NbdServer, NbdError> {
        let (listener, unix_path, local_port) = bind(config.addr)?;
        let keep = listener.try_clone().map_err(|e| NbdError::Bind {
            addr: "listener".into(),
            source: e,
        })?;
        let shared = Arc::new(ServerShared {
            registry: Arc::new(Registry::default()),
            stopped: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            max_connections: config.max_connections,
            handshake_timeout: config.handshake_timeout,
        });
        let sh = shared.clone();
        accept_on.post(move || spawn_local(accept_loop(SharedFd::new(listener), sh)))?;
        Ok(NbdServer {
            shared,
            listener: Mutex::new(Some(keep)),
            unix_path,
            local_port,
        })
    }

    /// The TCP port bound (useful with port 0).
    pub fn local_port(&self) -> Option<u16> {
        self.local_port
    }

    /// Adds an export; fails if the name is taken.
    pub fn add_export(
        &self,
        common: ExportCommon,
        opts: NbdExportOptions,
    ) -> Result<Box<dyn Export>, ExportError> {
        if common.iothreads.is_empty() {
            return Err(ExportError::Failed("export has no iothread".into()));
        }
        let multi_conn = self.shared.max_connections != 1;
        let e = self.shared.registry.add(
            common,
            opts.name,
            opts.description.unwrap_or_default(),
            opts.allocation_depth,
            opts.bitmaps,
            multi_conn,
        )?;
        Ok(Box::new(e))
    }

    /// True when an export has this NBD name.
    pub fn has_export_name(&self, name: &str) -> bool {
        self.shared.registry.contains(name)
    }

    /// Stops listening. Exports stay until the control plane removes them.
    pub fn stop(&self) {
        if self.shared.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(l) = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            // Wakes the pending accept (it fails with EINVAL), which ends the loop.
            let _ = nix::sys::socket::shutdown(l.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
        if let Some(p) = &self.unix_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind(addr: NbdAddr) -> Result<(OwnedFd, Option<PathBuf>, Option<u16>), NbdError> {
    match addr {
        NbdAddr::Unix(path) => {
            let shown = path.display().to_string();
            // QEMU replaces a stale socket; never delete anything else.
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
                    let _ = std::fs::remove_file(&path);
                }
            }
            let l = std::os::unix::net::UnixListener::bind(&path).map_err(|e| NbdError::Bind {
                addr: shown,
                source: e,
            })?;
            Ok((l.into(), Some(path), None))
        }
        NbdAddr::Tcp { host, port } => {
            let shown = format!("{host}:{port}");
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let addrs: Vec<_> = (
                host.as_str(),
                port.parse::<u16>()
                    .map_err(|_| NbdError::Resolve(shown.clone()))?,
            )
                .to_socket_addrs()
                .map_err(|_| NbdError::Resolve(shown.clone()))?
                .collect();
            let mut last = None;
            for a in addrs {
                match std::net::TcpListener::bind(a) {
                    Ok(l) => {
                        let port = l.local_addr().map(|a| a.port()).ok();
                        return Ok((l.into(), None, port));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(NbdError::Bind {
                addr: shown,
                source: last.unwrap_or_else(|| std::io::Error::other("no address")),
            })
        }
        NbdAddr::Fd(fd) => Ok((fd, None, None)),
    }
}

/// Send buffer asked for on every connection.
const SOCKET_BUF: usize = 4 << 20;

/// Releases a server-wide connection slot when dropped.
struct Slot(Arc<ServerShared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn accept_loop(listener: SharedFd, shared: Arc<ServerShared>) {
    loop {
        let fd = match op::accept(&listener).await {
            Ok(fd) => fd,
            Err(e) => {
                if shared.stopped.load(Ordering::Acquire) {
                    break;
                }
                log::warn!("nbd: accept failed: {e}");
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE)
                        | Some(libc::ENFILE)
                        | Some(libc::ENOBUFS)
                        | Some(libc::ENOMEM)
                ) {
                    op::sleep(Duration::from_millis(100)).await;
                } else if e.raw_os_error() == Some(libc::EINVAL) {
                    break;
                }
                continue;
            }
        };
        if shared.stopped.load(Ordering::Acquire) {
            break;
        }
        let n = shared.connections.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = Slot(shared.clone());
        if shared.max_connections != 0 && n > shared.max_connections as usize {
            HANDSHAKE_LOG.info(format_args!(
                "nbd: refusing {}: max-connections {} reached",
                peer_name(std::os::fd::AsFd::as_fd(&fd))
                    .as_deref()
                    .unwrap_or("a client"),
                shared.max_connections
            ));
            drop(fd);
            drop(slot);
            continue;
        }
        let _ = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::TcpNoDelay, &true);
        // A 1 MiB read reply fits the socket in one sendmsg instead of
        // five partial ones (the default is about 208 KiB); the kernel caps
        // it at net.core.wmem_max.
        let _ = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::SndBuf, &SOCKET_BUF);
        spawn_local(handshake(SharedFd::new(fd), shared.clone(), slot));
    }
}

async fn handshake(fd: SharedFd, shared: Arc<ServerShared>, slot: Slot) {
    let outcome = match shared.handshake_timeout {
        Some(limit) => op::timeout(limit, negotiate(&fd, &shared.registry)).await,
        None => Ok(negotiate(&fd, &shared.registry).await),
    };
    let (neg, leftover) = match outcome {
        Ok(Ok(v)) => v,
        Ok(Err(HandshakeEnd::Closed)) | Ok(Err(HandshakeEnd::Aborted)) => return,
        Ok(Err(e)) => {
            let peer = peer_name(std::os::fd::AsFd::as_fd(&fd));
            HANDSHAKE_LOG.info(format_args!(
                "nbd: {}: {e}",
                peer.as_deref().unwrap_or("client")
            ));
            return;
        }
        Err(op::Elapsed) => {
            let peer = peer_name(std::os::fd::AsFd::as_fd(&fd));
            HANDSHAKE_LOG.info(format_args!(
                "nbd: {} did not finish the handshake within {:?}; dropping it",
                peer.as_deref().unwrap_or("client"),
                shared.handshake_timeout
            ));
            return;
        }
    };
    let Some(export) = shared.registry.get(&neg.export_name) else {
        return;
    };
    let Ok(fd) = fd.try_into_owned() else {
        log::error!("nbd: connection socket still in use after the handshake");
        return;
    };
    let Ok(dup) = fd.try_clone() else { return };
    let Some(conn_id) = export.connect(dup) else {
        return;
    };
    let Some(thread) = export.pick_thread() else {
        export.disconnect(conn_id);
        return;
    };
    let exp = export.clone();
    // The slot lives as long as the connection.
    let posted = thread.post(move || conn::start(fd, leftover, neg, exp, conn_id, Box::new(slot)));
    if posted.is_err() {
        export.disconnect(conn_id);
    }
}
