//! The transmission phase of one NBD connection, on one iothread.
//!
//! ```text
//!   socket ─recv─► reader task ─parse every pipelined header─► request tasks
//!                     ▲  (backpressure: in-flight cap)              │ block I/O on
//!                     │                                             ▼ this thread's ring
//!   socket ◄─sendmsg─ writer task ◄──── replies batched in a GatherList
//! ```
//!
//! Reads complete into pooled buffers that are sent as they are (the reply
//! header goes into the list's arena, the data buffer is an iovec); write
//! payloads are received straight into the buffer that goes to the file.
//! All replies that completed while a `sendmsg` was in flight go out in the
//! next one. A client that stops reading fills the in-flight cap, the reader
//! stops reading, and the connection is dropped after [`SEND_STALL`].
//!
//! Bytes meet the socket through the connection's [`Transport`]: the ring
//! operations themselves in plaintext; with TLS, the reader decrypts into
//! the same buffers and the writer encrypts each batch before its
//! `sendmsg` (and never splices).

use std::cell::RefCell;
use std::future::poll_fn;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use engine::block::BlockHandle;
use engine::buf::{pool, Buf, BufResult};
use engine::iothread::spawn_local;
use engine::op::{self, GatherList, Pipe, SharedFd};

use super::negotiate::Handshake;
use super::proto::consts::NBD_MAX_PAYLOAD;
use super::proto::{
    check_request, parse_request, reply_error, Command, Disposition, MetaContext, NbdErrno,
    ReplyMode, ReplyTo, RequestHeader, Session,
};
use super::registry::ExportShared;
use super::request;
use super::transport::Transport;
use crate::stats::{peer_name, ErrorKind, Outcome, QueueRecorder, Started};

/// Receive buffer: many pipelined small requests per `recv`.
const RECV_BUF: usize = 256 * 1024;
/// Requests received but not yet answered on the wire.
const MAX_INFLIGHT: usize = 512;
/// Bytes of read data waiting for the wire.
const MAX_INFLIGHT_BYTES: usize = 128 << 20;
/// A batch of replies that makes no progress for this long drops the client.
pub(crate) const SEND_STALL: Duration = Duration::from_secs(30);
/// How often the watchdog looks at a connection.
const WATCHDOG_TICK: Duration = Duration::from_secs(5);

/// One chunk of a multi-chunk reply: header bytes and optional data.
pub(crate) type ReplyPart = (Vec<u8>, Option<(Buf, usize)>);

/// A request whose reply is queued: recorded as finished once it is sent.
pub(crate) type Done = (Started, Outcome);

/// What the reader hands over to execution.
pub(crate) struct Conn {
    pub(crate) fd: SharedFd,
    /// Plaintext or TLS.
    pub(crate) io: Transport,
    pub(crate) handle: BlockHandle,
    pub(crate) session: Session,
    pub(crate) mode: ReplyMode,
    pub(crate) contexts: Vec<(u32, MetaContext)>,
    pub(crate) writethrough: bool,
    export: Arc<ExportShared>,
    conn_id: u64,
    st: RefCell<State>,
    /// Held for the connection's life (the server's connection slot).
    _guard: Box<dyn std::any::Any>,
    /// For spliced read replies; created on first use, `Err` if pipes
    /// cannot be had (then replies are copied).
    pipe: std::cell::OnceCell<Option<Pipe>>,
    /// This connection's statistics.
    pub(crate) rec: QueueRecorder,
}

/// What the writer sends next, in order.
enum OutItem {
    /// Replies gathered into one `sendmsg`.
    List {
        list: GatherList,
        replies: usize,
        data: usize,
        done: Vec<Done>,
    },
    /// The data of a read reply whose header ends the list before it,
    /// spliced from the page cache.
    Splice { offset: u64, len: usize, done: Done },
}

/// What the writer does next.
enum Next {
    Send(OutItem),
    /// Every reply is out: end the stream (TLS `close_notify`) and close.
    Close,
    /// The connection broke.
    Stop,
}

#[derive(Default)]
struct State {
    /// Sealed items waiting for the writer, before `out`.
    items: std::collections::VecDeque<OutItem>,
    out: GatherList,
    spare: GatherList,
    out_replies: usize,
    /// Read data bytes queued in `out`.
    out_data: usize,
    /// The requests answered in `out`.
    out_done: Vec<Done>,
    inflight: usize,
    inflight_bytes: usize,
    writer: Option<Waker>,
    reader: Option<Waker>,
    closing: bool,
    broken: bool,
    /// A `sendmsg` batch is in flight.
    sending: bool,
    /// Batches completed so far (the watchdog's measure of progress).
    batches: u64,
}

impl State {
    fn push_data(&mut self, buf: Buf, len: usize) {
        self.out.push_buf(buf, 0..len);
        self.out_data += len;
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Replies never sent: their I/O was done, so it still counts.
        let st = self.st.get_mut();
        let mut unsent = std::mem::take(&mut st.out_done);
        for item in st.items.drain(..) {
            match item {
                OutItem::List { done, .. } => unsent.extend(done),
                OutItem::Splice { done, .. } => unsent.push(done),
            }
        }
        let now = self.rec.now();
        for (t, o) in unsent {
            self.rec.finish_at(now, t, o);
        }
        self.export.disconnect(self.conn_id);
    }
}

impl Conn {
    /// Runs `add` on the output state to queue one reply, and wakes the
    /// writer. On a broken connection nothing is queued (the closure, and
    /// any buffer it holds, is dropped).
    fn enqueue(&self, done: Done, add: impl FnOnce(&mut State)) {
        let mut st = self.st.borrow_mut();
        if st.broken {
            drop(st);
            self.rec.finish(done.0, done.1);
            return;
        }
        add(&mut st);
        st.out_replies += 1;
        st.out_done.push(done);
        if let Some(w) = st.writer.take() {
            w.wake();
        }
    }

    /// Queues one reply built by `fill`, carrying `data` (sent without a copy).
    pub(crate) fn reply(
        &self,
        done: Done,
        fill: impl FnOnce(&mut Vec<u8>),
        data: Option<(Buf, usize)>,
    ) {
        self.enqueue(done, |st| {
            st.out.push_with(fill);
            if let Some((b, len)) = data {
                st.push_data(b, len);
            }
        });
    }

    /// Queues a reply made of several chunks (they count as one reply).
    pub(crate) fn reply_parts(&self, done: Done, parts: Vec<ReplyPart>) {
        self.enqueue(done, |st| {
            for (hdr, data) in parts {
                st.out.push_bytes(&hdr);
                if let Some((b, len)) = data {
                    st.push_data(b, len);
                }
            }
        });
    }

    /// The connection's pipe, if splicing is possible at all.
    pub(crate) fn pipe(&self) -> Option<&Pipe> {
        self.pipe
            .get_or_init(|| match Pipe::new() {
                Ok(p) => Some(p),
                Err(e) => {
                    log::info!("nbd: no pipe for spliced reads ({e}); copying");
                    None
                }
            })
            .as_ref()
    }

    /// Queues a read reply whose data the writer splices from the node.
    pub(crate) fn reply_splice(
        &self,
        done: Done,
        fill: impl FnOnce(&mut Vec<u8>),
        offset: u64,
        len: usize,
    ) {
        let mut st = self.st.borrow_mut();
        if st.broken {
            drop(st);
            self.rec.finish(done.0, done.1);
            return;
        }
        st.out.push_with(fill);
        st.out_replies += 1;
        let list = std::mem::take(&mut st.out);
        let replies = std::mem::take(&mut st.out_replies);
        let data = std::mem::take(&mut st.out_data);
        let prior = std::mem::take(&mut st.out_done);
        st.items.push_back(OutItem::List {
            list,
            replies,
            data,
            done: prior,
        });
        st.items.push_back(OutItem::Splice { offset, len, done });
        if let Some(w) = st.writer.take() {
            w.wake();
        }
    }

    /// The bits of the dirty bitmap with context id `id`.
    pub(crate) fn bitmap(&self, id: u32) -> Option<&Arc<engine::block::DirtyBitmap>> {
        let i = id.checked_sub(super::proto::META_ID_DIRTY_BITMAP)?;
        self.export.bitmap_bits.get(usize::try_from(i).ok()?)
    }

    pub(crate) fn reply_to(&self, h: &RequestHeader) -> ReplyTo {
        ReplyTo {
            mode: self.mode,
            cookie: h.cookie,
            offset: h.offset,
        }
    }

    fn start_request(&self, read_bytes: usize) {
        let mut st = self.st.borrow_mut();
        st.inflight += 1;
        st.inflight_bytes += read_bytes;
    }

    fn shutdown_socket(&self) {
        let _ = nix::sys::socket::shutdown(self.fd.raw(), nix::sys::socket::Shutdown::Both);
    }

    /// Receives at most `want` bytes of the stream after `buf.len()`. When
    /// receiving left the transport with bytes of its own to send (TLS),
    /// the writer is woken to send them.
    async fn recv_into(&self, buf: Buf, want: usize) -> BufResult<usize, Buf> {
        let r = self.io.recv_into(&self.fd, buf, want).await;
        if self.io.wants_write() {
            if let Some(w) = self.st.borrow_mut().writer.take() {
                w.wake();
            }
        }
        r
    }
}

/// Starts a negotiated connection on the current iothread.
pub(crate) fn start(
    fd: OwnedFd,
    hs: Handshake,
    export: Arc<ExportShared>,
    conn_id: u64,
    guard: Box<dyn std::any::Any>,
) {
    let Handshake {
        negotiated: neg,
        leftover,
        tls,
    } = hs;
    let handle = BlockHandle::open(&export.common.node);
    let rec = export.common.stats.queue(
        conn_id.to_string(),
        peer_name(std::os::fd::AsFd::as_fd(&fd)),
    );
    let session = Session {
        structured: neg.structured,
        extended: neg.extended,
        export_size: handle.size(),
        transmission_flags: neg.info.transmission_flags,
        max_payload: neg.info.max_block.min(NBD_MAX_PAYLOAD),
        meta_contexts: neg.meta_contexts.len() as u32,
    };
    let conn = Rc::new(Conn {
        fd: SharedFd::new(fd),
        io: Transport::new(tls),
        handle,
        session,
        mode: ReplyMode::new(neg.structured, neg.extended),
        contexts: neg.meta_contexts,
        writethrough: export.common.writethrough,
        export,
        conn_id,
        st: RefCell::new(State::default()),
        _guard: guard,
        pipe: std::cell::OnceCell::new(),
        rec,
    });
    spawn_local(writer(conn.clone()));
    spawn_local(watchdog(Rc::downgrade(&conn)));
    spawn_local(async move {
        if let Err(e) = reader(&conn, leftover).await {
            // No more requests are read; replies already owed still go out
            // (the writer ends the connection after them), so a client
            // never sees a reply cut in half. A client that does not read
            // them is the watchdog's.
            match &e {
                ReadEnd::Proto(_) => conn.rec.protocol_error(&e),
                ReadEnd::Io(_) => log::debug!("nbd: connection to '{}': {e}", conn.export.name),
            }
            let _ = nix::sys::socket::shutdown(conn.fd.raw(), nix::sys::socket::Shutdown::Read);
        }
        let mut st = conn.st.borrow_mut();
        st.closing = true;
        if let Some(w) = st.writer.take() {
            w.wake();
        }
    });
}

#[derive(Debug, thiserror::Error)]
enum ReadEnd {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Proto(String),
}

async fn recv_more(conn: &Conn, rbuf: Buf) -> (Result<usize, ReadEnd>, Buf) {
    let room = rbuf.capacity() - rbuf.len();
    let (r, b) = conn.recv_into(rbuf, room).await;
    (r.map_err(ReadEnd::from), b)
}

impl Conn {
    /// True when no more requests may start until replies go out.
    fn over_limits(&self) -> bool {
        let st = self.st.borrow();
        st.inflight >= MAX_INFLIGHT || st.inflight_bytes >= MAX_INFLIGHT_BYTES
    }
}

/// Waits until the in-flight limits leave room for more requests.
async fn backpressure(conn: &Conn) {
    poll_fn(|cx| {
        let mut st = conn.st.borrow_mut();
        if st.broken || (st.inflight < MAX_INFLIGHT && st.inflight_bytes < MAX_INFLIGHT_BYTES) {
            Poll::Ready(())
        } else {
            st.reader = Some(cx.waker().clone());
            Poll::Pending
        }
    })
    .await
}

/// Receives exactly `len` more bytes into `buf` (a write payload).
async fn recv_exact(conn: &Conn, mut buf: Buf, len: usize) -> Result<Buf, ReadEnd> {
    while buf.len() < len {
        let want = len - buf.len();
        let (r, b) = conn.recv_into(buf, want).await;
        buf = b;
        if r? == 0 {
            return Err(ReadEnd::Proto(
                "client closed in the middle of a payload".into(),
            ));
        }
    }
    Ok(buf)
}

/// Skips `len` payload bytes without keeping them.
async fn skip(conn: &Conn, mut scratch: Buf, mut len: u64) -> Result<Buf, ReadEnd> {
    while len > 0 {
        scratch.set_len(0);
        let want = (scratch.capacity() as u64).min(len) as usize;
        let (r, b) = conn.recv_into(scratch, want).await;
        scratch = b;
        let n = r?;
        if n == 0 {
            return Err(ReadEnd::Proto(
                "client closed in the middle of a payload".into(),
            ));
        }
        len -= n as u64;
    }
    scratch.set_len(0);
    Ok(scratch)
}

async fn reader(conn: &Rc<Conn>, leftover: Vec<u8>) -> Result<(), ReadEnd> {
    let mut rbuf = Buf::with_capacity(RECV_BUF.max(leftover.len()));
    rbuf.extend_from_slice(&leftover);
    let ext = conn.session.extended;
    // A node that answers at once (null-co) runs its requests right here:
    // no task per request, and every reply of one receive is queued before
    // the writer runs, so they leave in one `sendmsg`.
    let inline = conn.handle.completes_inline();
    let waker = poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
    // Every header of one receive arrived at the same moment.
    let mut received = conn.rec.now();
    loop {
        let mut pos = 0usize;
        // Stopped parsing because the in-flight limits are reached: wait,
        // then parse what is already received before receiving more.
        let mut throttled = false;
        loop {
            if conn.over_limits() {
                throttled = true;
                break;
            }
            let avail = &rbuf.as_slice()[pos..];
            let (hdr, used) = match parse_request(avail, ext) {
                Ok(Some(v)) => v,
                Ok(None) => break,
                Err(e) => return Err(ReadEnd::Proto(e.to_string())),
            };
            let disp =
                check_request(&hdr, &conn.session).map_err(|e| ReadEnd::Proto(e.to_string()))?;
            match disp {
                Disposition::Disconnect => return Ok(()),
                Disposition::Reject { discard_len, error } => {
                    pos += used;
                    conn.start_request(0);
                    let to = conn.reply_to(&hdr);
                    let t = request::start(conn, received, &hdr);
                    let done = (t, Outcome::Invalid(error_kind(error)));
                    conn.reply(
                        done,
                        |v| reply_error(v, &to, error, error_message(error)),
                        None,
                    );
                    if discard_len > u64::from(conn.session.max_payload) {
                        // A payload over the limit is not worth receiving:
                        // answer, then close once the answer is out, as
                        // QEMU does.
                        return Ok(());
                    }
                    let in_buf = (rbuf.len() - pos) as u64;
                    if discard_len <= in_buf {
                        pos += discard_len as usize;
                    } else {
                        rbuf.set_len(0);
                        pos = 0;
                        rbuf = skip(conn, rbuf, discard_len - in_buf).await?;
                    }
                }
                Disposition::Execute { payload_len } => {
                    let plen = payload_len as usize;
                    let after = pos + used;
                    let in_buf = rbuf.len() - after;
                    let payload = if plen == 0 {
                        pos = after;
                        None
                    } else if plen <= in_buf {
                        let mut p = pool::check_out(plen);
                        p.as_mut_slice()
                            .copy_from_slice(&rbuf.as_slice()[after..after + plen]);
                        pos = after + plen;
                        Some(p)
                    } else if hdr.kind == Command::Write {
                        // Receive the rest straight into the buffer that goes to the file.
                        let mut p = pool::check_out(plen);
                        p.set_len(0);
                        p.extend_from_slice(&rbuf.as_slice()[after..]);
                        rbuf.set_len(0);
                        pos = 0;
                        Some(recv_exact(conn, p, plen).await?)
                    } else {
                        // A small non-write payload not all here yet: wait for it.
                        break;
                    };
                    let read_bytes = if hdr.kind == Command::Read {
                        hdr.length as usize
                    } else {
                        0
                    };
                    conn.start_request(read_bytes);
                    let t = request::start(conn, received, &hdr);
                    let c = conn.clone();
                    match hdr.kind {
                        Command::Read => run(request::read(c, hdr, t), inline, &waker),
                        Command::Write => run(request::write(c, hdr, payload, t), inline, &waker),
                        _ => run(request::execute(c, hdr, payload, t), inline, &waker),
                    }
                }
            }
        }
        rbuf.consume_front(pos);
        backpressure(conn).await;
        if conn.st.borrow().broken {
            return Ok(());
        }
        if throttled {
            continue;
        }
        if rbuf.len() == rbuf.capacity() {
            return Err(ReadEnd::Proto(
                "request does not fit the receive buffer".into(),
            ));
        }
        let (r, b) = recv_more(conn, rbuf).await;
        rbuf = b;
        received = conn.rec.reaped();
        if r? == 0 {
            return Ok(());
        }
    }
}

/// Starts a request: a task of its own, or with `inline` (a node that
/// completes inline, see `reader`) polled once right here, with the
/// reader's waker; should it wait after all, it becomes a task of its own,
/// which polls it again so that what it waits on wakes that task (such a
/// node waits, if ever, only on ring operations, which take the waker of
/// every poll; a future that kept the first waker would not do).
fn run(fut: impl std::future::Future<Output = ()> + 'static, inline: bool, waker: &Waker) {
    if !inline {
        return spawn_local(fut);
    }
    let mut fut = Box::pin(fut);
    let mut cx = std::task::Context::from_waker(waker);
    if fut.as_mut().poll(&mut cx).is_pending() {
        spawn_local(fut);
    }
}

/// How a refused request counts in the statistics.
pub(crate) fn error_kind(e: NbdErrno) -> ErrorKind {
    match e {
        NbdErrno::Perm => ErrorKind::Permission,
        NbdErrno::Inval | NbdErrno::NoSpc | NbdErrno::Overflow => ErrorKind::Invalid,
        NbdErrno::NotSup => ErrorKind::NotSupported,
        NbdErrno::Io => ErrorKind::Io,
        _ => ErrorKind::Other,
    }
}

fn error_message(e: NbdErrno) -> &'static str {
    match e {
        NbdErrno::Perm => "export is read-only",
        NbdErrno::Inval => "invalid request",
        NbdErrno::NoSpc => "request beyond the end of the export",
        NbdErrno::Overflow => "request too large",
        NbdErrno::NotSup => "operation not supported",
        _ => "request failed",
    }
}

impl Conn {
    /// Releases the read-byte budget of a read whose reply carries less
    /// data than asked (an error or holes).
    pub(crate) fn release_read_budget(&self, bytes: usize) {
        let mut st = self.st.borrow_mut();
        st.inflight_bytes = st.inflight_bytes.saturating_sub(bytes);
    }
}

/// Drops a client whose replies make no progress for [`SEND_STALL`]: it
/// stopped reading and the socket buffer is full. One timer per
/// connection every few seconds, instead of a timer per `sendmsg`.
async fn watchdog(conn: std::rc::Weak<Conn>) {
    let ticks = (SEND_STALL.as_secs() / WATCHDOG_TICK.as_secs()).max(1);
    let mut last = (0u64, 0u64);
    loop {
        op::sleep(WATCHDOG_TICK).await;
        let Some(conn) = conn.upgrade() else { return };
        let (sending, batches) = {
            let st = conn.st.borrow();
            if st.broken {
                return;
            }
            (st.sending, st.batches)
        };
        if !sending || batches != last.0 {
            last = (batches, 0);
            continue;
        }
        last.1 += 1;
        if last.1 >= ticks {
            log::info!(
                "nbd: client of '{}' stopped reading replies; dropping it",
                conn.export.name
            );
            conn.st.borrow_mut().broken = true;
            conn.shutdown_socket();
            return;
        }
    }
}

async fn writer(conn: Rc<Conn>) {
    // See `Transport`: a direct `sendmsg` pays only where nothing else
    // would enter the kernel with it.
    let eager = conn.handle.completes_inline();
    loop {
        let item = poll_fn(|cx| {
            let mut st = conn.st.borrow_mut();
            if let Some(item) = st.items.pop_front() {
                return Poll::Ready(Next::Send(item));
            }
            // A transport with bytes of its own (TLS) sends them in an
            // otherwise empty batch.
            if st.out_replies > 0 || conn.io.wants_write() {
                let spare = std::mem::take(&mut st.spare);
                let list = std::mem::replace(&mut st.out, spare);
                let replies = std::mem::take(&mut st.out_replies);
                let data = std::mem::take(&mut st.out_data);
                let done = std::mem::take(&mut st.out_done);
                return Poll::Ready(Next::Send(OutItem::List {
                    list,
                    replies,
                    data,
                    done,
                }));
            }
            if st.broken {
                return Poll::Ready(Next::Stop);
            }
            if st.closing && st.inflight == 0 {
                return Poll::Ready(Next::Close);
            }
            st.writer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let item = match item {
            Next::Send(item) => item,
            Next::Close => {
                conn.io.close(&conn.fd).await;
                break;
            }
            Next::Stop => break,
        };
        conn.st.borrow_mut().sending = true;
        let (ok, replies, data) = match item {
            OutItem::List {
                list,
                replies,
                data,
                done,
            } => {
                let (r, mut list) = conn.io.send_all(&conn.fd, list, eager).await;
                list.clear();
                conn.st.borrow_mut().spare = list;
                finish_all(&conn, done, eager);
                (r.is_ok(), replies, data)
            }
            OutItem::Splice { offset, len, done } => {
                let ok = splice_out(&conn, offset, len).await;
                finish_all(&conn, [done], false);
                (ok, 0, len)
            }
        };
        let mut st = conn.st.borrow_mut();
        st.sending = false;
        st.batches += 1;
        st.inflight = st.inflight.saturating_sub(replies);
        st.inflight_bytes = st.inflight_bytes.saturating_sub(data);
        if !ok {
            st.broken = true;
        }
        if let Some(w) = st.reader.take() {
            w.wake();
        }
        if !ok {
            drop(st);
            log::info!(
                "nbd: client of '{}' stopped reading or went away; dropping it",
                conn.export.name
            );
            conn.shutdown_socket();
            break;
        }
    }
}

/// Records the requests of a batch as finished when its send completed.
fn finish_all(conn: &Conn, done: impl IntoIterator<Item = Done>, direct: bool) {
    // A direct send did not reap: read the clock.
    let now = if direct {
        conn.rec.now()
    } else {
        conn.rec.reaped()
    };
    for (t, o) in done {
        conn.rec.finish_at(now, t, o);
    }
}

/// Sends `len` bytes of the node at `offset` through the connection's pipe.
/// The header already went out, so a failure here can only end the
/// connection.
async fn splice_out(conn: &Conn, offset: u64, len: usize) -> bool {
    let Some(pipe) = conn.pipe() else {
        return false;
    };
    let mut done = 0usize;
    while done < len {
        let n = match conn
            .handle
            .read_to_pipe(offset + done as u64, len - done, pipe)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                log::warn!("nbd: spliced read at {offset} failed after its header: {e}");
                return false;
            }
        };
        if let Err(e) = pipe.drain_to(&conn.fd, n).await {
            log::debug!("nbd: splice to the client failed: {e}");
            return false;
        }
        done += n;
    }
    true
}
