//! [`Transport`]: how a connection's bytes meet its socket, plaintext or
//! TLS, behind the three calls the handshake and the transmission phase
//! make (`recv_into`, `send_all`, and whether spliced replies are possible).
//!
//! The plaintext arm receives through the ring. It sends through the ring
//! too, except on a connection whose node answers at once (`null-co`):
//! there a plain non-blocking `sendmsg(2)` goes first and the ring takes
//! only what the socket had no room for (`op::send_all_eager`), since the
//! ring would enter the kernel for the send alone. With a file the send
//! rides in the same `io_uring_enter` as the reads, and a separate call
//! measured slower (4k randread qd32: 103k vs 118k IOPS). Receiving
//! directly did not pay either: with fio the socket is nearly always empty
//! when the reader comes back, and the ring tries the receive again when
//! it submits, later. The only cost TLS adds to a plaintext connection is
//! the match.

use engine::buf::{Buf, BufResult};
use engine::op::{self, GatherList, SharedFd};

use super::tls::{TlsConn, TlsSession};

/// A connection's transport. See the module docs.
pub(crate) enum Transport {
    Plain,
    Tls(Box<TlsConn>),
}

impl Transport {
    /// The transport for a connection handed over with `tls` state (if any).
    pub(crate) fn new(tls: Option<TlsSession>) -> Transport {
        match tls {
            None => Transport::Plain,
            Some(s) => Transport::Tls(Box::new(TlsConn::new(s))),
        }
    }

    /// The `Send` part, to move the connection to another iothread.
    pub(crate) fn into_session(self) -> Option<TlsSession> {
        match self {
            Transport::Plain => None,
            Transport::Tls(t) => Some(t.into_session()),
        }
    }

    /// Receives at most `want` bytes of the stream after `buf.len()`;
    /// 0 means the peer closed.
    #[inline]
    pub(crate) async fn recv_into(
        &self,
        fd: &SharedFd,
        buf: Buf,
        want: usize,
    ) -> BufResult<usize, Buf> {
        match self {
            Transport::Plain => op::recv_into(fd, buf, want).await,
            Transport::Tls(t) => t.recv_into(fd, buf, want).await,
        }
    }

    /// Sends the whole list (TLS: encrypted, with anything rustls queued).
    /// With `eager`, a plaintext connection sends with a plain non-blocking
    /// `sendmsg(2)` first and uses the ring only for what did not fit.
    #[inline]
    pub(crate) async fn send_all(
        &self,
        fd: &SharedFd,
        list: GatherList,
        eager: bool,
    ) -> BufResult<(), GatherList> {
        match self {
            Transport::Plain if eager => op::send_all_eager(fd, list).await,
            Transport::Plain => op::send_all(fd, list).await,
            Transport::Tls(t) => t.send_all(fd, list).await,
        }
    }

    /// Whether reply data may go from the page cache to the socket without
    /// passing through memory (not through TLS: it must be encrypted).
    #[inline]
    pub(crate) fn can_splice(&self) -> bool {
        matches!(self, Transport::Plain)
    }

    /// True when the transport has bytes of its own to send (TLS alerts
    /// or key updates made while receiving): the sender should run.
    #[inline]
    pub(crate) fn wants_write(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(t) => t.wants_write(),
        }
    }

    /// Ends the stream cleanly before the socket closes (TLS `close_notify`).
    pub(crate) async fn close(&self, fd: &SharedFd) {
        if let Transport::Tls(t) = self {
            t.close(fd).await;
        }
    }
}
