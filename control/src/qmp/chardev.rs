//! A monitor's listening socket before its monitor starts.
//!
//! QEMU opens a `--chardev socket,server=on` when it parses the option, and
//! with `wait=on` (the default) blocks there until the first client
//! connects; that client gets the greeting once `--monitor` attaches the
//! chardev. [`Chardev`] holds the socket and that first client until
//! [`super::MonitorServer::start`] takes them.

use std::io::{self, ErrorKind};
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use drivers::socket::{Family, Listener};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::conn::Stream;

/// How often a blocked `wait=on` start-up checks whether to give up.
const WAIT_TICK_MS: u16 = 100;

/// A listening monitor socket, Unix or TCP.
pub(crate) enum Socket {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Socket {
    pub(crate) fn accept(&self) -> io::Result<Stream> {
        match self {
            Socket::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Socket::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
        }
    }

    pub(crate) fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Socket::Unix(l) => l.set_nonblocking(on),
            Socket::Tcp(l) => l.set_nonblocking(on),
        }
    }

    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Socket::Unix(l) => l.as_fd(),
            Socket::Tcp(l) => l.as_fd(),
        }
    }

    pub(crate) fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Socket::Unix(_) => None,
            Socket::Tcp(l) => l.local_addr().ok(),
        }
    }
}

/// An opened `--chardev socket,server=on`. See the module docs. Dropped
/// unused, it removes the socket file it created.
pub struct Chardev {
    socket: Option<Socket>,
    /// The socket file to remove at shutdown (one this daemon created).
    created_path: Option<PathBuf>,
    /// The client `wait=on` waited for.
    first: Option<Stream>,
    described: String,
}

impl std::fmt::Debug for Chardev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chardev")
            .field("addr", &self.described)
            .finish_non_exhaustive()
    }
}

impl Chardev {
    /// Wraps a listening socket.
    pub fn new(listener: Listener) -> Chardev {
        let family = listener.family();
        let described = format!("disconnected:{},server=on", listener.describe());
        let (fd, created_path) = listener.into_parts();
        let socket = match family {
            Family::Unix => Socket::Unix(UnixListener::from(fd)),
            Family::Inet => Socket::Tcp(TcpListener::from(fd)),
        };
        Chardev {
            socket: Some(socket),
            created_path,
            first: None,
            described,
        }
    }

    /// QEMU's name for it while it waits, e.g.
    /// `disconnected:unix:/run/qmp.sock,server=on`.
    pub fn describe(&self) -> &str {
        &self.described
    }

    /// `wait=on`: blocks until a client connects, which the monitor then
    /// serves first. Every 100 ms asks `give_up` (a quit signal), and
    /// returns `Ok(false)` if it says so.
    pub fn wait_for_client(&mut self, mut give_up: impl FnMut() -> bool) -> io::Result<bool> {
        let Some(socket) = &self.socket else {
            return Ok(false);
        };
        socket.set_nonblocking(true)?;
        loop {
            if give_up() {
                return Ok(false);
            }
            let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(WAIT_TICK_MS)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
            match socket.accept() {
                // accept(2) does not pass O_NONBLOCK on: the stream blocks.
                Ok(stream) => {
                    self.first = Some(stream);
                    return Ok(true);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The socket, the socket file it created (now the caller's to
    /// remove) and the client `wait=on` waited for.
    pub(crate) fn take(mut self) -> Option<(Socket, Option<PathBuf>, Option<Stream>)> {
        let socket = self.socket.take()?;
        Some((socket, self.created_path.take(), self.first.take()))
    }
}

impl Drop for Chardev {
    fn drop(&mut self) {
        if let Some(p) = self.created_path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}
