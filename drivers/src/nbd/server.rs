//! [`NbdServer`]: the listener, the handshake, and the hand-over of each
//! connection to its export's iothread.
//!
//! Connections are accepted and negotiated on one iothread (`accept_on`),
//! with a handshake deadline (QEMU's `handshake-max-seconds`, the lesson of
//! CVE-2024-7409), then moved, as a plain fd plus the negotiated state, to
//! the iothread the export picks (round robin over its list), where the
//! transmission phase runs with the socket and the node's I/O on one ring.
//! At `max-connections` the loop stops accepting until a connection ends
//! (`gate`), so further clients wait in the listen backlog, as in QEMU.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use engine::block::{BusyGuard, DirtyBitmap};
use engine::iothread::{spawn_local, IoThreadHandle};
use engine::op::{self, SharedFd};

use super::conn;
use super::gate::{AcceptGate, Slot};
use super::negotiate::{negotiate, HandshakeEnd};
use super::registry::Registry;
use crate::export::{Export, ExportCommon, ExportError};
use crate::socket::Listener;
use crate::stats::{peer_name, RateLimit};

/// Handshake failures are a client's doing: their log lines are limited.
static HANDSHAKE_LOG: RateLimit = RateLimit::new();

/// `nbd-server-start` arguments.
#[derive(Debug)]
pub struct NbdServerConfig {
    /// The listening socket (see [`crate::socket::listen`]).
    pub listener: Listener,
    /// Connections served at once; 0 is unlimited.
    pub max_connections: u32,
    /// Handshakes not finished within this are dropped (`None`: no limit).
    /// The TLS handshake is part of it.
    pub handshake_timeout: Option<Duration>,
    /// Require TLS (`tls-creds`): the client must upgrade with
    /// `NBD_OPT_STARTTLS` before anything else; client authorization
    /// (`tls-authz`) is the config's client certificate verifier.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// A dirty bitmap an export offers as `qemu:dirty-bitmap:NAME`.
#[derive(Debug)]
pub struct NbdBitmap {
    /// `NAME` of the context.
    pub name: String,
    /// The bits block status reports.
    pub bitmap: Arc<DirtyBitmap>,
    /// Keeps the bitmap busy until the export is gone.
    pub hold: BusyGuard,
}

/// The NBD part of `block-export-add`.
#[derive(Debug, Default)]
pub struct NbdExportOptions {
    /// Export name clients ask for.
    pub name: String,
    /// Free-form description (≤ 4096 bytes).
    pub description: Option<String>,
    /// Offer `qemu:allocation-depth`.
    pub allocation_depth: bool,
    /// Dirty bitmaps offered as `qemu:dirty-bitmap:NAME`, in context-id order.
    pub bitmaps: Vec<NbdBitmap>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NbdError {
    /// The accept iothread is gone.
    #[error("iothread unavailable: {0}")]
    IoThread(#[from] engine::EngineError),
}

struct ServerShared {
    registry: Arc<Registry>,
    gate: Arc<AcceptGate>,
    max_connections: u32,
    handshake_timeout: Option<Duration>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// A running NBD server. See the module docs.
pub struct NbdServer {
    shared: Arc<ServerShared>,
    unix_path: Option<PathBuf>,
    local_port: Option<u16>,
}

impl NbdServer {
    /// Starts accepting on `accept_on`. The server owns the listening
    /// socket from now on and closes it when it stops.
    pub fn start(
        config: NbdServerConfig,
        accept_on: IoThreadHandle,
    ) -> Result<NbdServer, NbdError> {
        let local_port = config.listener.local_port();
        let (listener, unix_path) = config.listener.into_parts();
        let shared = Arc::new(ServerShared {
            registry: Arc::new(Registry::default()),
            gate: AcceptGate::new(config.max_connections),
            max_connections: config.max_connections,
            handshake_timeout: config.handshake_timeout,
            tls: config.tls,
        });
        let sh = shared.clone();
        let started = accept_on.post(move || spawn_local(accept_loop(SharedFd::new(listener), sh)));
        if let Err(e) = started {
            if let Some(p) = &unix_path {
                let _ = std::fs::remove_file(p);
            }
            return Err(e.into());
        }
        Ok(NbdServer {
            shared,
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
    /// The accept loop drops its pending accept (cancelling it) and with
    /// it the listening socket; a socket the daemon was handed is closed,
    /// never shut down, since its launcher (systemd) may hold a copy.
    pub fn stop(&self) {
        if self.shared.gate.is_stopped() {
            return;
        }
        self.shared.gate.stop();
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

/// Send buffer asked for on every connection.
const SOCKET_BUF: usize = 4 << 20;

async fn accept_loop(listener: SharedFd, shared: Arc<ServerShared>) {
    let gate = shared.gate.clone();
    // At max-connections, no accept is pending: clients wait in the backlog.
    while let Some(slot) = gate.slot().await {
        let Some(accepted) = gate.unless_stopped(op::accept(&listener)).await else {
            break;
        };
        let fd = match accepted {
            Ok(fd) => fd,
            Err(e) => {
                log::warn!("nbd: accept failed: {e}");
                drop(slot);
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE)
                        | Some(libc::ENFILE)
                        | Some(libc::ENOBUFS)
                        | Some(libc::ENOMEM)
                ) {
                    op::sleep(Duration::from_millis(100)).await;
                } else if e.raw_os_error() == Some(libc::EINVAL) {
                    // Not listening any more.
                    break;
                }
                continue;
            }
        };
        let _ = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::TcpNoDelay, &true);
        // A 1 MiB read reply fits the socket in one sendmsg instead of
        // five partial ones (the default is about 208 KiB); the kernel caps
        // it at net.core.wmem_max.
        let _ = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::SndBuf, &SOCKET_BUF);
        spawn_local(handshake(SharedFd::new(fd), shared.clone(), slot));
    }
}

async fn handshake(fd: SharedFd, shared: Arc<ServerShared>, slot: Slot) {
    let tls = shared.tls.as_ref();
    let outcome = match shared.handshake_timeout {
        Some(limit) => op::timeout(limit, negotiate(&fd, &shared.registry, tls)).await,
        None => Ok(negotiate(&fd, &shared.registry, tls).await),
    };
    let hs = match outcome {
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
    let Some(export) = shared.registry.get(&hs.negotiated.export_name) else {
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
    let posted = thread.post(move || conn::start(fd, hs, exp, conn_id, Box::new(slot)));
    if posted.is_err() {
        export.disconnect(conn_id);
    }
}
