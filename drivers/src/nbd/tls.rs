//! TLS on an NBD connection: rustls' buffered connection (a
//! [`ServerConnection`] for the NBD server, a [`ClientConnection`] for the
//! `nbd` client node), fed from a receive buffer and drained into send
//! batches, on the iothread (and ring) that owns the socket. No thread of
//! its own, no kTLS.
//!
//! ```text
//!  socket ─recv─► ciphertext Buf ─read_tls, process_new_packets─► rustls ─reader()─► caller's Buf
//!  caller's GatherList ─writer().write_vectored─► rustls records ─write_tls─► ciphertext list ─sendmsg─► socket
//! ```
//!
//! Vectored writes let one record carry a reply header and the start of
//! its data (and several small replies share one), so the client decrypts
//! few, full records. (rustls 0.23's unbuffered API copies through a
//! per-record `Vec` too, and cannot coalesce slices.)
//!
//! # Sharing
//!
//! [`TlsSession`] is the `Send` state that moves with the socket from the
//! accept iothread to the connection's iothread (or, for the client node,
//! from the control thread's blocking handshake to an iothread). [`TlsConn`] wraps it for
//! use by the reader and the writer task of one connection, which share
//! one thread: every borrow ends before an `await`. Only one task sends
//! (the writer, or the handshake), so records go out in the order rustls
//! made them; when receiving makes rustls want to send (an alert, a
//! key update), [`TlsConn::wants_write`] tells the caller to wake its
//! sender.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use engine::buf::{Buf, BufResult};
use engine::op::{self, GatherList, SharedFd};
use rustls::client::ClientConnectionData;
use rustls::pki_types::ServerName;
use rustls::server::ServerConnectionData;
use rustls::{ClientConfig, ClientConnection, ConnectionCommon, ServerConfig, ServerConnection};

/// Ciphertext received per `recv`: several full records.
const RX_BUF: usize = 128 * 1024;
/// Plaintext encrypted before a `sendmsg`: big enough to amortise the
/// system call, small enough that the client decrypts one part while the
/// next is encrypted.
const TX_CHUNK: usize = 256 * 1024;
/// Slices handed to rustls per vectored write.
const TX_SLICES: usize = 64;

/// Either side of a rustls connection: the session code only needs the
/// part both share.
pub(crate) trait TlsSide:
    std::ops::DerefMut<Target = ConnectionCommon<<Self as TlsSide>::Data>>
{
    type Data;
}

impl TlsSide for ServerConnection {
    type Data = ServerConnectionData;
}

impl TlsSide for ClientConnection {
    type Data = ClientConnectionData;
}

/// The TLS state of one connection (`Send`: it moves between iothreads
/// with the socket, between the handshake and the transmission phase).
pub(crate) struct TlsSession<C = ServerConnection> {
    tls: C,
    /// Ciphertext received; `rx[rx_pos..]` is not yet given to rustls.
    /// `None` while a receive is in flight.
    rx: Option<Buf>,
    rx_pos: usize,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<C: TlsSide> TlsSession<C> {
    /// A session whose handshake is done (or to be run by [`handshake`]);
    /// `early` are bytes of the TLS stream already received.
    pub(crate) fn new(mut tls: C, early: &[u8]) -> TlsSession<C> {
        // The sender bounds what it encrypts at once (TX_CHUNK) instead.
        tls.set_buffer_limit(None);
        let mut rx = Buf::with_capacity(RX_BUF.max(early.len()));
        rx.extend_from_slice(early);
        TlsSession {
            tls,
            rx: Some(rx),
            rx_pos: 0,
        }
    }

    /// Moves up to `want` decrypted bytes to the end of `dst`, giving
    /// rustls buffered ciphertext as needed. `Ok(None)`: more ciphertext
    /// must be received first. `Ok(Some(0))`: the client closed the TLS
    /// session (`close_notify`).
    fn read_plain(&mut self, dst: &mut Buf, want: usize) -> io::Result<Option<usize>> {
        loop {
            let room = want.min(dst.capacity() - dst.len());
            match self.tls.reader().read(&mut dst.spare_mut()[..room]) {
                Ok(n) => {
                    dst.set_len(dst.len() + n);
                    return Ok(Some(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if !self.feed()? {
                return Ok(None);
            }
        }
    }

    /// Gives rustls some buffered ciphertext and processes it; false when
    /// none is left.
    fn feed(&mut self) -> io::Result<bool> {
        let Some(rx) = &self.rx else {
            return Ok(false);
        };
        let mut rest = match rx.as_slice().get(self.rx_pos..) {
            Some(r) if !r.is_empty() => r,
            _ => return Ok(false),
        };
        let n = self.tls.read_tls(&mut rest)?;
        if n == 0 {
            return Err(io::Error::other("TLS record layer took no input"));
        }
        self.rx_pos += n;
        self.tls.process_new_packets().map_err(tls_error)?;
        Ok(true)
    }

    /// Encrypts `slices` (all of them: the session has no buffer limit).
    fn encrypt(&mut self, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        while !slices.is_empty() {
            let n = self.tls.writer().write_vectored(slices)?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            IoSlice::advance_slices(&mut slices, n);
        }
        Ok(())
    }

    /// Moves every record rustls has for the wire into `out`.
    fn drain(&mut self, out: &mut Vec<u8>) {
        while self.tls.wants_write() {
            match self.tls.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// A [`TlsSession`] in use on one iothread. See the module docs.
pub(crate) struct TlsConn<C = ServerConnection> {
    s: RefCell<TlsSession<C>>,
    /// Ciphertext batches, kept for their arena's capacity.
    tx: RefCell<Option<GatherList>>,
}

impl<C: TlsSide> TlsConn<C> {
    pub(crate) fn new(session: TlsSession<C>) -> TlsConn<C> {
        TlsConn {
            s: RefCell::new(session),
            tx: RefCell::new(None),
        }
    }

    /// The `Send` state, to move to another iothread.
    pub(crate) fn into_session(self) -> TlsSession<C> {
        self.s.into_inner()
    }

    /// Protocol version and cipher suite, for the log.
    pub(crate) fn describe(&self) -> String {
        let s = self.s.borrow();
        let version = s.tls.protocol_version().map(|v| format!("{v:?}"));
        let suite = s
            .tls
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()));
        format!(
            "{} {}",
            version.as_deref().unwrap_or("?"),
            suite.as_deref().unwrap_or("?")
        )
    }

    /// True when rustls has records to send that no send has taken yet.
    pub(crate) fn wants_write(&self) -> bool {
        self.s.borrow().tls.wants_write()
    }

    /// Receives at most `want` plaintext bytes after `buf.len()`, like
    /// [`op::recv_into`] on a plain socket (0 means the client closed).
    pub(crate) async fn recv_into(
        &self,
        fd: &SharedFd,
        mut buf: Buf,
        want: usize,
    ) -> BufResult<usize, Buf> {
        loop {
            let got = self.s.borrow_mut().read_plain(&mut buf, want);
            match got {
                Ok(Some(n)) => return (Ok(n), buf),
                Ok(None) => {}
                Err(e) => return (Err(e), buf),
            }
            match self.recv_ciphertext(fd).await {
                Ok(0) => return (Ok(0), buf),
                Ok(_) => {}
                Err(e) => return (Err(e), buf),
            }
        }
    }

    /// Receives ciphertext into the (fully consumed) receive buffer.
    async fn recv_ciphertext(&self, fd: &SharedFd) -> io::Result<usize> {
        let Some(mut rx) = self.s.borrow_mut().rx.take() else {
            return Err(io::Error::other("TLS receive already in progress"));
        };
        rx.set_len(0);
        let (r, rx) = op::recv_into(fd, rx, RX_BUF).await;
        let mut s = self.s.borrow_mut();
        s.rx = Some(rx);
        s.rx_pos = 0;
        r
    }

    /// Encrypts and sends all of `list` (and any records rustls made on
    /// its own before), like [`op::send_all`] on a plain socket.
    pub(crate) async fn send_all(
        &self,
        fd: &SharedFd,
        list: GatherList,
    ) -> BufResult<(), GatherList> {
        let mut tx = self.tx.borrow_mut().take().unwrap_or_default();
        tx.clear();
        let mut result = Ok(());
        {
            let mut plain = list.slices();
            let mut cur: &[u8] = &[];
            let mut done = false;
            while !done {
                // Encrypt up to TX_CHUNK bytes, TX_SLICES slices per call.
                let mut chunk = 0usize;
                while chunk < TX_CHUNK && !done {
                    let mut io = [IoSlice::new(&[]); TX_SLICES];
                    let mut n = 0;
                    while n < TX_SLICES && chunk < TX_CHUNK {
                        if cur.is_empty() {
                            match plain.next() {
                                Some(s) => cur = s,
                                None => {
                                    done = true;
                                    break;
                                }
                            }
                            continue;
                        }
                        let take = cur.len().min(TX_CHUNK - chunk);
                        let (now, later) = cur.split_at(take);
                        io[n] = IoSlice::new(now);
                        cur = later;
                        n += 1;
                        chunk += take;
                    }
                    if let Err(e) = self.s.borrow_mut().encrypt(&mut io[..n]) {
                        result = Err(e);
                        break;
                    }
                }
                if result.is_err() {
                    break;
                }
                tx.push_with(|v| self.s.borrow_mut().drain(v));
                if tx.is_empty() {
                    continue;
                }
                let (r, back) = op::send_all(fd, tx).await;
                tx = back;
                tx.clear();
                if let Err(e) = r {
                    result = Err(e);
                    break;
                }
            }
        }
        *self.tx.borrow_mut() = Some(tx);
        (result, list)
    }

    /// Sends what rustls has queued (handshake records, alerts).
    pub(crate) async fn flush(&self, fd: &SharedFd) -> io::Result<()> {
        self.send_all(fd, GatherList::new()).await.0
    }

    /// Ends the TLS session cleanly (`close_notify`), best effort.
    pub(crate) async fn close(&self, fd: &SharedFd) {
        self.s.borrow_mut().tls.send_close_notify();
        let _ = self.flush(fd).await;
    }

    /// Hands rustls buffered ciphertext, or receives more; one step of
    /// the handshake. `Ok(false)`: the client closed the connection.
    async fn handshake_step(&self, fd: &SharedFd) -> io::Result<bool> {
        let fed = self.s.borrow_mut().feed();
        match fed {
            Ok(true) => Ok(true),
            Ok(false) => Ok(self.recv_ciphertext(fd).await? > 0),
            Err(e) => {
                // rustls queued an alert saying why; let the client know.
                let _ = self.flush(fd).await;
                Err(e)
            }
        }
    }
}

/// Why the TLS handshake ended without a session.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsEnd {
    #[error("client closed the connection during the TLS handshake")]
    Closed,
    #[error("TLS handshake failed: {0}")]
    Failed(#[from] io::Error),
}

/// Runs the server side of the TLS handshake on `fd`, after the NBD
/// `NBD_OPT_STARTTLS` ACK went out. `early` are bytes the client sent
/// after that option: they already belong to the TLS stream.
pub(crate) async fn accept(
    fd: &SharedFd,
    config: Arc<ServerConfig>,
    early: &[u8],
) -> Result<TlsConn, TlsEnd> {
    let tls = ServerConnection::new(config).map_err(tls_error)?;
    handshake(fd, TlsConn::new(TlsSession::new(tls, early))).await
}

/// Runs the client side of the TLS handshake on `fd`, after the server
/// acknowledged `NBD_OPT_STARTTLS`; `name` is what the server's
/// certificate is checked against.
pub(crate) async fn connect(
    fd: &SharedFd,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> Result<TlsConn<ClientConnection>, TlsEnd> {
    let tls = ClientConnection::new(config, name).map_err(tls_error)?;
    handshake(fd, TlsConn::new(TlsSession::new(tls, &[]))).await
}

/// Sends and receives handshake records until rustls is done (either side).
async fn handshake<C: TlsSide>(fd: &SharedFd, conn: TlsConn<C>) -> Result<TlsConn<C>, TlsEnd> {
    loop {
        conn.flush(fd).await?;
        if !conn.s.borrow().tls.is_handshaking() {
            return Ok(conn);
        }
        if !conn.handshake_step(fd).await? {
            return Err(TlsEnd::Closed);
        }
    }
}
