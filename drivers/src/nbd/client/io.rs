//! [`Io`]: a client connection's socket, plaintext or TLS, behind the
//! calls the ring handshake, the reader and the writer make. One `Io` is
//! shared (`Rc`) by the reader and the writer task of a connection; with
//! TLS only the writer sends, so records leave in the order rustls made
//! them (see `nbd/tls.rs`).

use engine::buf::{Buf, BufResult};
use engine::op::{self, GatherList, SharedFd};
use rustls::ClientConnection;

use crate::nbd::tls::TlsConn;

/// One connection's byte stream. See the module docs.
pub(crate) struct Io {
    pub(crate) fd: SharedFd,
    tls: Option<TlsConn<ClientConnection>>,
}

impl Io {
    pub(crate) fn new(fd: SharedFd, tls: Option<TlsConn<ClientConnection>>) -> Io {
        Io { fd, tls }
    }

    /// Receives at most `want` bytes of the stream after `buf.len()`;
    /// 0 means the server closed.
    pub(crate) async fn recv_into(&self, buf: Buf, want: usize) -> BufResult<usize, Buf> {
        match &self.tls {
            None => op::recv_into(&self.fd, buf, want).await,
            Some(t) => t.recv_into(&self.fd, buf, want).await,
        }
    }

    /// Sends the whole list (TLS: encrypted, with anything rustls queued).
    pub(crate) async fn send_all(&self, list: GatherList) -> BufResult<(), GatherList> {
        match &self.tls {
            None => op::send_all(&self.fd, list).await,
            Some(t) => t.send_all(&self.fd, list).await,
        }
    }

    /// True when TLS has records of its own to send (an alert or a key
    /// update made while receiving): the writer should run.
    pub(crate) fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Protocol and cipher suite, for the log (`None`: plaintext).
    pub(crate) fn describe(&self) -> Option<String> {
        self.tls.as_ref().map(|t| t.describe())
    }
}
