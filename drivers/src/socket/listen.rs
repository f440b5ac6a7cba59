//! A listening socket from an address: bind a unix path or a TCP address,
//! or check a descriptor the daemon was handed, with QEMU's checks and
//! messages (`socket_listen()` in `util/qemu-sockets.c`).

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{
    getsockname, getsockopt, listen as listen_fd, sockopt, AddressFamily, Backlog, SockType,
    SockaddrLike, SockaddrStorage,
};

/// Where to listen.
#[derive(Debug)]
pub enum ListenAddr {
    /// A unix socket path: created (a stale socket file is replaced).
    Unix(PathBuf),
    /// A TCP host and port; an empty host means every address.
    Tcp {
        /// Host name or address (`[v6]` brackets allowed).
        host: String,
        /// Port number.
        port: String,
    },
    /// A socket the daemon was handed (inherited, socket activation,
    /// `getfd`); `name` is how the address named it, for messages.
    Fd {
        /// The descriptor, owned from now on.
        fd: OwnedFd,
        /// The `str` of the address.
        name: String,
    },
}

/// The kind of a listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `AF_UNIX`.
    Unix,
    /// `AF_INET` or `AF_INET6`.
    Inet,
}

/// A listening stream socket, owned. Closing it (dropping, or dropping
/// what it was turned into) stops the listening; the socket file it
/// created is the server's to remove ([`Listener::created_path`]).
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    family: Family,
    created_path: Option<PathBuf>,
    local: String,
    local_port: Option<u16>,
}

/// Why there is no listening socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// `bind(2)` or `listen(2)` on an address failed.
    #[error("Failed to bind socket to {addr}: {source}")]
    Bind {
        /// The address as given.
        addr: String,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// A stale socket file could not be removed.
    #[error("Failed to unlink socket {path}: {source}")]
    Unlink {
        /// The path.
        path: String,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// A TCP address did not resolve.
    #[error("address resolution failed for {host}:{port}: {reason}")]
    Resolve {
        /// Host as given.
        host: String,
        /// Port as given.
        port: String,
        /// Why.
        reason: String,
    },
    /// The descriptor is not a socket.
    #[error("File descriptor '{0}' is not a socket")]
    NotSocket(String),
    /// The descriptor cannot listen (connected, unbound, not a stream of
    /// a family ringstor serves).
    #[error("Failed to listen on fd socket: {0}")]
    Listen(#[source] std::io::Error),
    /// Something else the kernel refused.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

impl Listener {
    /// The socket.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Unix or TCP.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The socket file `listen` created, which the server removes when it
    /// stops (never set for a descriptor it was handed).
    pub fn created_path(&self) -> Option<&Path> {
        self.created_path.as_deref()
    }

    /// The TCP port listened on (the real one after port 0).
    pub fn local_port(&self) -> Option<u16> {
        self.local_port
    }

    /// QEMU's text for the address: `unix:/path` or `tcp:host:port`.
    pub fn describe(&self) -> &str {
        &self.local
    }

    /// The descriptor and the socket file to remove when done.
    pub fn into_parts(self) -> (OwnedFd, Option<PathBuf>) {
        (self.fd, self.created_path)
    }
}

/// Backlog of sockets bound here; an inherited listening socket keeps the
/// one its creator chose.
const BACKLOG: i32 = 128;

/// Opens a listening socket for `addr`.
pub fn listen(addr: ListenAddr) -> Result<Listener, ListenError> {
    match addr {
        ListenAddr::Unix(path) => listen_unix(path),
        ListenAddr::Tcp { host, port } => listen_tcp(&host, &port),
        ListenAddr::Fd { fd, name } => adopt_listener(fd, &name),
    }
}

/// Like QEMU, a leftover socket file from a previous run is unlinked
/// first; unlike QEMU, any other kind of file is left alone and reported,
/// so a typo cannot delete user data.
fn listen_unix(path: PathBuf) -> Result<Listener, ListenError> {
    let shown = path.display().to_string();
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(&path).map_err(|source| ListenError::Unlink {
                path: shown.clone(),
                source,
            })?;
        }
    }
    let l = UnixListener::bind(&path).map_err(|source| ListenError::Bind {
        addr: shown.clone(),
        source,
    })?;
    Ok(Listener {
        fd: l.into(),
        family: Family::Unix,
        created_path: Some(path),
        local: format!("unix:{shown}"),
        local_port: None,
    })
}

/// Tries each resolved address in turn like QEMU's `inet_listen_saddr()`.
fn listen_tcp(host: &str, port: &str) -> Result<Listener, ListenError> {
    let resolve_err = |reason: String| ListenError::Resolve {
        host: host.to_string(),
        port: port.to_string(),
        reason,
    };
    let port_num: u16 = port
        .parse()
        .map_err(|_| resolve_err("port is not a number".into()))?;
    let h = host.trim_start_matches('[').trim_end_matches(']');
    let h = if h.is_empty() { "0.0.0.0" } else { h };
    let addrs: Vec<SocketAddr> = (h, port_num)
        .to_socket_addrs()
        .map_err(|e| resolve_err(e.to_string()))?
        .collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "no address");
    for a in addrs {
        match TcpListener::bind(a) {
            Ok(l) => {
                let local = l.local_addr()?;
                return Ok(Listener {
                    fd: l.into(),
                    family: Family::Inet,
                    created_path: None,
                    local: format!("tcp:{}:{}", show_ip(&local), local.port()),
                    local_port: Some(local.port()),
                });
            }
            Err(e) => last = e,
        }
    }
    Err(ListenError::Bind {
        addr: format!("{host}:{port}"),
        source: last,
    })
}

fn show_ip(a: &SocketAddr) -> String {
    match a {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
    }
}

/// Checks a handed-over descriptor: a stream socket of a family ringstor
/// serves, listening, or bound and then made to listen (as QEMU calls
/// `listen()` on it). Refuses an unbound socket, which QEMU would let the
/// kernel bind to a random port on every address.
pub fn check_listener(fd: &OwnedFd, name: &str) -> Result<(), ListenError> {
    let st = nix::sys::stat::fstat(fd).map_err(std::io::Error::from)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(ListenError::NotSocket(name.to_string()));
    }
    let unsupported = || ListenError::Listen(Errno::EOPNOTSUPP.into());
    let local: SockaddrStorage =
        getsockname(fd.as_raw_fd()).map_err(|e| ListenError::Listen(e.into()))?;
    let family = match local.family() {
        Some(AddressFamily::Unix) => Family::Unix,
        Some(AddressFamily::Inet) | Some(AddressFamily::Inet6) => Family::Inet,
        _ => return Err(unsupported()),
    };
    match getsockopt(fd, sockopt::SockType) {
        Ok(SockType::Stream) => {}
        Ok(_) => return Err(unsupported()),
        Err(e) => return Err(ListenError::Listen(e.into())),
    }
    let listening =
        getsockopt(fd, sockopt::AcceptConn).map_err(|e| ListenError::Listen(e.into()))?;
    if !listening {
        let bound = match family {
            Family::Unix => local
                .as_unix_addr()
                .is_some_and(|u| u.path().is_some() || u.as_abstract().is_some()),
            Family::Inet => local_port(&local).is_some_and(|p| p != 0),
        };
        match (bound, family) {
            (true, _) => {}
            // What listen(2) says, as in QSD.
            (false, Family::Unix) => return Err(ListenError::Listen(Errno::EINVAL.into())),
            // listen(2) would bind it to a random port on every address.
            (false, Family::Inet) => {
                return Err(ListenError::Listen(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "socket is not bound to an address",
                )))
            }
        }
        let backlog = Backlog::new(BACKLOG).map_err(std::io::Error::from)?;
        listen_fd(fd, backlog).map_err(|e| ListenError::Listen(e.into()))?;
    }
    Ok(())
}

fn local_port(a: &SockaddrStorage) -> Option<u16> {
    a.as_sockaddr_in()
        .map(|v4| v4.port())
        .or_else(|| a.as_sockaddr_in6().map(|v6| v6.port()))
}

fn adopt_listener(fd: OwnedFd, name: &str) -> Result<Listener, ListenError> {
    check_listener(&fd, name)?;
    // Inherited descriptors come without close-on-exec.
    fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(std::io::Error::from)?;
    let local: SockaddrStorage = getsockname(fd.as_raw_fd()).map_err(std::io::Error::from)?;
    let (family, shown, port) = if let Some(u) = local.as_unix_addr() {
        let p = match (u.path(), u.as_abstract()) {
            (Some(p), _) => p.display().to_string(),
            (None, Some(a)) => format!("@{}", String::from_utf8_lossy(a)),
            (None, None) => String::new(),
        };
        (Family::Unix, format!("unix:{p}"), None)
    } else {
        let port = local_port(&local);
        let ip = local
            .as_sockaddr_in()
            .map(|v4| v4.ip().to_string())
            .or_else(|| local.as_sockaddr_in6().map(|v6| format!("[{}]", v6.ip())))
            .unwrap_or_default();
        (
            Family::Inet,
            format!("tcp:{ip}:{}", port.unwrap_or(0)),
            port,
        )
    };
    Ok(Listener {
        fd,
        family,
        created_path: None,
        local: shown,
        local_port: port,
    })
}
