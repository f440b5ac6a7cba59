//! Connecting to the server and running the client handshake: blocking
//! (the first connection, during `blockdev-add`, retried for
//! `open-timeout`) and in the ring (reconnections on an iothread). With
//! `tls-creds` both upgrade to TLS first (`NBD_OPT_STARTTLS`), so a
//! reconnection runs a full TLS handshake again.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use engine::buf::Buf;
use engine::op::{self, GatherList, SharedFd};
use nix::sys::socket::{
    self, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, UnixAddr,
};

use super::io::Io;
use super::tls::{BlockingIo, ClientTls, Spare};
use super::{ClientOptions, ServerAddr};
use crate::nbd::proto::{Action, ClientHandshake, ServerInfo};
use crate::nbd::tls::{self, TlsSession};

/// One step of the handshake may take this long before the attempt fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// A resolved address.
#[derive(Debug, Clone)]
pub(crate) enum Addr {
    Unix(PathBuf),
    Inet(SocketAddr),
}

/// Why connecting failed, in QEMU's words where it has them.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("address resolution failed for {host}:{port}: {source}")]
    Resolve {
        host: String,
        port: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to connect to '{addr}': {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to read initial magic: {0}")]
    Io(#[source] std::io::Error),
    /// The TLS handshake failed, or the server ended the TLS session
    /// before the negotiation was done (QEMU's words where it has them).
    #[error("{0}")]
    Tls(String),
    #[error("NBD export is read-only")]
    ReadOnly,
    #[error(transparent)]
    Handshake(#[from] crate::nbd::proto::ClientHandshakeError),
}

/// Resolves the server address once (the resolver blocks; reconnects reuse this).
pub(crate) fn resolve(server: &ServerAddr) -> Result<Vec<Addr>, DialError> {
    match server {
        ServerAddr::Unix(p) => Ok(vec![Addr::Unix(p.clone())]),
        ServerAddr::Inet { host, port } => {
            let err = |source| DialError::Resolve {
                host: host.clone(),
                port: port.clone(),
                source,
            };
            let portn: u16 = port.parse().map_err(|_| {
                err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "port is not a number",
                ))
            })?;
            let list: Vec<Addr> = (host.as_str(), portn)
                .to_socket_addrs()
                .map_err(err)?
                .map(Addr::Inet)
                .collect();
            if list.is_empty() {
                return Err(err(std::io::ErrorKind::NotFound.into()));
            }
            Ok(list)
        }
    }
}

fn describe(a: &Addr) -> String {
    match a {
        Addr::Unix(p) => p.display().to_string(),
        Addr::Inet(s) => s.to_string(),
    }
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn io(&mut self) -> &mut dyn ReadWrite {
        match self {
            Stream::Unix(s) => s,
            Stream::Tcp(s) => s,
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn connect_once(addrs: &[Addr]) -> Result<Stream, DialError> {
    let mut last = None;
    for a in addrs {
        let r = match a {
            Addr::Unix(p) => UnixStream::connect(p).map(Stream::Unix),
            Addr::Inet(s) => TcpStream::connect_timeout(s, STEP_TIMEOUT).map(|t| {
                let _ = t.set_nodelay(true);
                Stream::Tcp(t)
            }),
        };
        match r {
            Ok(s) => return Ok(s),
            Err(e) => {
                last = Some(DialError::Connect {
                    addr: describe(a),
                    source: e,
                })
            }
        }
    }
    Err(last.unwrap_or(DialError::Io(std::io::ErrorKind::NotFound.into())))
}

fn handshake_blocking(
    s: &mut Stream,
    opts: &ClientOptions,
) -> Result<(ServerInfo, Option<Spare>), DialError> {
    let tls = opts.tls.as_ref();
    match s {
        Stream::Unix(u) => {
            u.set_read_timeout(Some(STEP_TIMEOUT))
                .map_err(DialError::Io)?;
            u.set_write_timeout(Some(STEP_TIMEOUT))
                .map_err(DialError::Io)?;
        }
        Stream::Tcp(t) => {
            t.set_read_timeout(Some(STEP_TIMEOUT))
                .map_err(DialError::Io)?;
            t.set_write_timeout(Some(STEP_TIMEOUT))
                .map_err(DialError::Io)?;
        }
    }
    let mut io = BlockingIo {
        sock: s.io(),
        tls: None,
    };
    let mut hs = new_handshake(opts);
    loop {
        match hs.step() {
            Action::Send(b) => io.write_all(&b).map_err(|e| io_error(tls, &io.tls, e))?,
            Action::Recv(n) => {
                let mut b = vec![0u8; n];
                io.read_exact(&mut b)
                    .map_err(|e| io_error(tls, &io.tls, e))?;
                hs.input(&b);
            }
            Action::StartTls => {
                let Some(t) = tls else {
                    return Err(DialError::Tls("TLS was not asked for".into()));
                };
                io.tls = Some(t.handshake_blocking(&mut io.sock).map_err(DialError::Tls)?);
            }
            Action::Done(r) => {
                let info = r?;
                let spare = io.tls.take().map(|c| Spare(TlsSession::new(c, &[])));
                return Ok((info, spare));
            }
        }
    }
}

fn new_handshake(opts: &ClientOptions) -> ClientHandshake {
    let mut hs = ClientHandshake::new(&opts.export);
    if opts.tls.is_some() {
        hs = hs.with_tls();
    }
    if let Some(b) = &opts.x_dirty_bitmap {
        hs = hs.with_x_dirty_bitmap(b);
    }
    hs
}

/// A failed read or write of the negotiation; once TLS is up, in the
/// words of a failed option reply, with the TLS reason.
fn io_error<T>(tls: Option<&ClientTls>, up: &Option<T>, e: std::io::Error) -> DialError {
    match (tls, up) {
        (Some(t), Some(_)) => {
            DialError::Tls(format!("Failed to read option reply: {}", t.describe(&e)))
        }
        _ => DialError::Io(e),
    }
}

/// The first connection: retried until `open_timeout` has passed (one
/// attempt when it is zero). A refused export (or TLS session) is not
/// retried.
pub(crate) fn dial_blocking(
    addrs: &[Addr],
    opts: &ClientOptions,
) -> Result<(OwnedFd, ServerInfo, Option<Spare>), DialError> {
    let deadline = Instant::now() + opts.open_timeout;
    loop {
        let attempt = connect_once(addrs).and_then(|mut s| {
            let (info, spare) = handshake_blocking(&mut s, opts)?;
            let fd: OwnedFd = match s {
                Stream::Unix(u) => {
                    let _ = u.set_read_timeout(None);
                    let _ = u.set_write_timeout(None);
                    u.into()
                }
                Stream::Tcp(t) => {
                    let _ = t.set_read_timeout(None);
                    let _ = t.set_write_timeout(None);
                    t.into()
                }
            };
            Ok((fd, info, spare))
        });
        match attempt {
            Ok(v) => return Ok(v),
            Err(DialError::Handshake(e)) => return Err(DialError::Handshake(e)),
            Err(DialError::Tls(e)) => return Err(DialError::Tls(e)),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

async fn connect_ring(a: &Addr) -> std::io::Result<SharedFd> {
    let family = match a {
        Addr::Unix(_) => AddressFamily::Unix,
        Addr::Inet(SocketAddr::V4(_)) => AddressFamily::Inet,
        Addr::Inet(SocketAddr::V6(_)) => AddressFamily::Inet6,
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    let fd = SharedFd::new(fd);
    match a {
        Addr::Unix(p) => op::connect(&fd, UnixAddr::new(p.as_path())?).await?,
        Addr::Inet(SocketAddr::V4(v4)) => op::connect(&fd, SockaddrIn::from(*v4)).await?,
        Addr::Inet(SocketAddr::V6(v6)) => op::connect(&fd, SockaddrIn6::from(*v6)).await?,
    }
    if matches!(a, Addr::Inet(_)) {
        let _ = socket::setsockopt(&fd, socket::sockopt::TcpNoDelay, &true);
    }
    Ok(fd)
}

async fn recv_exact(io: &Io, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Buf::with_capacity(n.max(1));
    buf.set_len(0);
    while buf.len() < n {
        let want = n - buf.len();
        let (r, b) = io.recv_into(buf, want).await;
        buf = b;
        match r {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf.as_slice()[..n].to_vec())
}

fn timed_out() -> DialError {
    DialError::Io(std::io::ErrorKind::TimedOut.into())
}

async fn handshake_ring(fd: SharedFd, opts: &ClientOptions) -> Result<(Io, ServerInfo), DialError> {
    let tls = opts.tls.as_ref();
    let mut io = Io::new(fd, None);
    let mut hs = new_handshake(opts);
    loop {
        match hs.step() {
            Action::Send(b) => {
                let mut list = GatherList::new();
                list.push_bytes(&b);
                match op::timeout(STEP_TIMEOUT, io.send_all(list)).await {
                    Ok((r, _)) => r.map_err(DialError::Io)?,
                    Err(_) => return Err(timed_out()),
                }
            }
            Action::Recv(n) => match op::timeout(STEP_TIMEOUT, recv_exact(&io, n)).await {
                Ok(r) => hs.input(&r.map_err(|e| io_error(tls, &io.describe(), e))?),
                Err(_) => return Err(timed_out()),
            },
            Action::StartTls => {
                let Some(t) = tls else {
                    return Err(DialError::Tls("TLS was not asked for".into()));
                };
                let fd = io.fd.clone();
                let up = tls::connect(&fd, t.config.clone(), t.server_name());
                match op::timeout(STEP_TIMEOUT, up).await {
                    Ok(Ok(conn)) => io = Io::new(fd, Some(conn)),
                    Ok(Err(e)) => return Err(DialError::Tls(t.describe_end(&e))),
                    Err(_) => return Err(timed_out()),
                }
            }
            Action::Done(r) => return Ok((io, r?)),
        }
    }
}

/// One connection attempt in the ring (a reconnection).
pub(crate) async fn dial_ring(
    addrs: &[Addr],
    opts: &ClientOptions,
) -> Result<(Rc<Io>, ServerInfo), DialError> {
    let mut last = None;
    for a in addrs {
        match op::timeout(STEP_TIMEOUT, connect_ring(a)).await {
            Ok(Ok(fd)) => {
                let (io, info) = handshake_ring(fd, opts).await?;
                return Ok((Rc::new(io), info));
            }
            Ok(Err(e)) => {
                last = Some(DialError::Connect {
                    addr: describe(a),
                    source: e,
                })
            }
            Err(_) => {
                last = Some(DialError::Connect {
                    addr: describe(a),
                    source: std::io::ErrorKind::TimedOut.into(),
                })
            }
        }
    }
    Err(last.unwrap_or(DialError::Io(std::io::ErrorKind::NotFound.into())))
}
