//! One accepted monitor connection's output side: the socket writer shared
//! by command replies (connection thread) and events (any thread).
//!
//! The writer sits behind a mutex so a reply and an event never interleave
//! inside one line. A client that stops reading must not wedge the thread
//! that emits events, so writes have a timeout, and a connection whose
//! write failed is shut down and never written again.

use super::wire::encode_message;
use serde_json::Value;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How long one write may block before the client is considered dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected monitor socket, Unix or TCP.
#[derive(Debug)]
pub(crate) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    pub(crate) fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    /// Reads what is there, with any descriptors passed along (unix
    /// sockets only: `SCM_RIGHTS`).
    pub(crate) fn read_with_fds(&mut self, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        match self {
            Stream::Unix(s) => drivers::socket::recv_with_fds(s, buf),
            Stream::Tcp(s) => s.read(buf).map(|n| (n, Vec::new())),
        }
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(t),
            Stream::Tcp(s) => s.set_write_timeout(t),
        }
    }

    pub(crate) fn shutdown(&self) {
        // Errors mean the socket is already gone, which is the goal.
        let _ = match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

/// The shared, writable half of a monitor connection.
#[derive(Debug)]
pub(crate) struct MonitorConn {
    writer: Mutex<Stream>,
    pretty: bool,
    /// Set once `qmp_capabilities` succeeds; events go only to these.
    negotiated: AtomicBool,
    closed: AtomicBool,
}

impl MonitorConn {
    pub(crate) fn new(writer: Stream, pretty: bool) -> io::Result<Self> {
        writer.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(MonitorConn {
            writer: Mutex::new(writer),
            pretty,
            negotiated: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    pub(crate) fn set_negotiated(&self) {
        self.negotiated.store(true, Ordering::Release);
    }

    pub(crate) fn is_negotiated(&self) -> bool {
        self.negotiated.load(Ordering::Acquire)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends one message as a line. Failure closes the connection: a
    /// partial line would desynchronize the client anyway.
    pub(crate) fn send(&self, msg: &Value) -> bool {
        if self.is_closed() {
            return false;
        }
        let bytes = encode_message(msg, self.pretty);
        // A poisoned lock only means another sender panicked mid-write;
        // the stream itself is still usable.
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        match w.write_all(&bytes).and_then(|()| w.flush()) {
            Ok(()) => true,
            Err(e) => {
                log::debug!("qmp: closing monitor connection after write error: {e}");
                self.closed.store(true, Ordering::Release);
                w.shutdown();
                false
            }
        }
    }

    /// Closes the socket; the reading thread then sees EOF and exits.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        w.shutdown();
    }
}
