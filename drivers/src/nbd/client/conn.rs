//! One iothread's connection to the server: the request queue, the
//! writer, and what happens when the connection is lost.
//!
//! ```text
//!  request ─► queue ─► writer task ─ sendmsg (headers + write payloads) ─►
//!     ▲                                                          server
//!     └──── wake ◄── reader task (reader.rs) ◄── replies by cookie ◄─┘
//! ```
//!
//! Everything is `Rc`/`Cell` on the iothread. A request keeps its write
//! payload (the writer borrows it for the send and gives it back), so a
//! request in flight when the connection drops is sent again on the next
//! connection. The reader and writer tasks of one connection carry its
//! generation number: a loss reported by a task of an older connection is
//! ignored. Both share the connection's [`Io`] (plaintext or TLS); with
//! TLS the writer also sends what rustls wants to send on its own.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use engine::buf::Buf;
use engine::iothread::spawn_local;
use engine::op::{self, GatherList, SharedFd};

use super::dial;
use super::io::Io;
use super::Shared;
use crate::nbd::proto::client::encode_request;
use crate::nbd::proto::{Command, Extent, RequestHeader, ServerInfo};

/// Pause between reconnection attempts, doubling up to the maximum.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How long requests wait for an iothread's first connection.
const FIRST_DIAL_GRACE: Duration = Duration::from_secs(10);

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    /// The server's error (errno) and message, or EIO for a lost connection.
    Err(i32, String),
}

/// A request from submission to its last reply chunk.
pub(crate) struct Pending {
    pub(crate) header: Cell<RequestHeader>,
    /// WRITE: the data (lent to the writer while it sends). READ: the
    /// buffer the reader fills.
    pub(crate) buf: RefCell<Option<Buf>>,
    /// The writer holds `buf` right now.
    lent: Cell<bool>,
    pub(crate) outcome: RefCell<Option<Outcome>>,
    /// First error chunk of a structured reply, reported when it is done.
    pub(crate) error: RefCell<Option<(i32, String)>>,
    /// BLOCK_STATUS chunks: (context id, extents).
    pub(crate) status: RefCell<Vec<(u32, Vec<Extent>)>>,
    waker: Cell<Option<Waker>>,
}

impl Pending {
    pub(crate) fn new(header: RequestHeader, buf: Option<Buf>) -> Rc<Pending> {
        Rc::new(Pending {
            header: Cell::new(header),
            buf: RefCell::new(buf),
            lent: Cell::new(false),
            outcome: RefCell::new(None),
            error: RefCell::new(None),
            status: RefCell::new(Vec::new()),
            waker: Cell::new(None),
        })
    }

    pub(crate) fn finish(&self, outcome: Outcome) {
        *self.outcome.borrow_mut() = Some(outcome);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn done(&self) -> bool {
        self.outcome.borrow().is_some() && !self.lent.get()
    }
}

#[derive(Clone)]
enum Link {
    Up {
        io: Rc<Io>,
        gen: u64,
    },
    /// Lost at `since`; `failing` once `reconnect-delay` has passed.
    Down {
        since: Instant,
        failing: bool,
    },
}

/// One iothread's connection. See the module docs.
pub(crate) struct Conn {
    pub(crate) shared: Arc<Shared>,
    link: RefCell<Link>,
    gen: Cell<u64>,
    next_cookie: Cell<u64>,
    /// Sent, waiting for replies, by cookie.
    pub(crate) in_flight: RefCell<HashMap<u64, Rc<Pending>>>,
    /// Not sent yet (new, or to resend after a reconnection).
    queue: RefCell<VecDeque<Rc<Pending>>>,
    writer_waker: Cell<Option<Waker>>,
    closed: Cell<bool>,
    /// What the current connection negotiated.
    pub(crate) info: RefCell<ServerInfo>,
}

impl Conn {
    /// A connection on this iothread: the probe's socket if still unused,
    /// else a new one, dialled in the background.
    pub(crate) fn open(shared: Arc<Shared>) -> Rc<Conn> {
        let spare = shared.take_spare();
        let conn = Rc::new(Conn {
            info: RefCell::new(shared.info.clone()),
            shared,
            link: RefCell::new(Link::Down {
                since: Instant::now(),
                failing: false,
            }),
            gen: Cell::new(0),
            next_cookie: Cell::new(1),
            in_flight: RefCell::new(HashMap::new()),
            queue: RefCell::new(VecDeque::new()),
            writer_waker: Cell::new(None),
            closed: Cell::new(false),
        });
        match spare {
            Some((fd, session)) => {
                let info = conn.shared.info.clone();
                let tls = session.map(|s| crate::nbd::tls::TlsConn::new(s.0));
                conn.up(Rc::new(Io::new(SharedFd::new(fd), tls)), info);
            }
            None => {
                // Requests wait for the first dial as for a reconnection,
                // but at least FIRST_DIAL_GRACE even with reconnect-delay=0.
                let grace = conn.shared.opts.reconnect_delay.max(FIRST_DIAL_GRACE);
                conn.lost_at(Instant::now(), grace);
            }
        }
        conn
    }

    /// Sends `p` when connected and waits for its reply.
    pub(crate) async fn call(self: &Rc<Self>, p: Rc<Pending>) -> Outcome {
        if self.closed.get() {
            return eio("the node is being closed");
        }
        if let Link::Down { failing: true, .. } = &*self.link.borrow() {
            return eio("Connection to the NBD server lost");
        }
        self.queue.borrow_mut().push_back(p.clone());
        if let Some(w) = self.writer_waker.take() {
            w.wake();
        }
        Wait { p: &p }.await;
        let o = p.outcome.borrow_mut().take();
        o.unwrap_or_else(|| eio("no reply"))
    }

    fn up(self: &Rc<Self>, io: Rc<Io>, info: ServerInfo) {
        let gen = self.gen.get() + 1;
        self.gen.set(gen);
        *self.info.borrow_mut() = info;
        *self.link.borrow_mut() = Link::Up {
            io: io.clone(),
            gen,
        };
        spawn_local(writer(Rc::downgrade(self), io.clone(), gen));
        spawn_local(super::reader::reader(Rc::downgrade(self), io, gen));
    }

    /// Runs the writer: requests are queued, or TLS has records to send.
    pub(crate) fn wake_writer(&self) {
        if let Some(w) = self.writer_waker.take() {
            w.wake();
        }
    }

    /// A task of connection `gen` saw it fail.
    pub(crate) fn lost(self: &Rc<Self>, gen: u64, why: &str) {
        let fd = match &*self.link.borrow() {
            Link::Up { io, gen: g } if *g == gen => io.fd.clone(),
            _ => return,
        };
        if !self.closed.get() {
            log::warn!("nbd client {}: connection lost ({why})", self.shared.label);
        }
        // Wake the other task of this connection.
        let _ = nix::sys::socket::shutdown(fd.raw(), nix::sys::socket::Shutdown::Both);
        // Requests in flight go out again on the next connection.
        let mut resend: Vec<Rc<Pending>> = self
            .in_flight
            .borrow_mut()
            .drain()
            .map(|(_, p)| p)
            .collect();
        resend.sort_by_key(|p| p.header.get().cookie);
        for p in resend {
            p.error.borrow_mut().take();
            p.status.borrow_mut().clear();
            self.queue.borrow_mut().push_front(p);
        }
        self.lost_at(Instant::now(), self.shared.opts.reconnect_delay);
    }

    /// Down since `since`; what is queued fails after `grace`.
    fn lost_at(self: &Rc<Self>, since: Instant, grace: Duration) {
        *self.link.borrow_mut() = Link::Down {
            since,
            failing: false,
        };
        if self.closed.get() {
            self.fail_queued();
            return;
        }
        let delay = grace;
        if delay.is_zero() {
            self.fail_now();
        } else {
            let weak = Rc::downgrade(self);
            spawn_local(async move {
                op::sleep(delay).await;
                if let Some(c) = weak.upgrade() {
                    if matches!(&*c.link.borrow(), Link::Down { since: s, .. } if *s == since) {
                        c.fail_now();
                    }
                }
            });
        }
        spawn_local(reconnect(Rc::downgrade(self), since));
    }

    /// `reconnect-delay` is over: what waits fails, new requests fail at once.
    fn fail_now(&self) {
        if let Link::Down { failing, .. } = &mut *self.link.borrow_mut() {
            *failing = true;
        }
        self.fail_queued();
    }

    fn fail_queued(&self) {
        let queued: Vec<Rc<Pending>> = self.queue.borrow_mut().drain(..).collect();
        for p in queued {
            p.finish(Outcome::Err(
                libc::EIO,
                "Connection to the NBD server lost".into(),
            ));
        }
    }

    /// The node is going away: stop every task of this connection.
    pub(crate) fn close(&self) {
        self.closed.set(true);
        if let Link::Up { io, .. } = &*self.link.borrow() {
            let _ = nix::sys::socket::shutdown(io.fd.raw(), nix::sys::socket::Shutdown::Both);
        }
        self.fail_queued();
        if let Some(w) = self.writer_waker.take() {
            w.wake();
        }
    }

    fn cookie(&self) -> u64 {
        let c = self.next_cookie.get();
        self.next_cookie.set(c.wrapping_add(1).max(1));
        c
    }
}

fn eio(msg: &str) -> Outcome {
    Outcome::Err(libc::EIO, msg.to_string())
}

struct Wait<'a> {
    p: &'a Rc<Pending>,
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.p.done() {
            Poll::Ready(())
        } else {
            self.p.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }
}

/// Waits until requests are queued, TLS has records of its own to send
/// (or the connection is to stop).
struct Queued<'a> {
    conn: &'a Conn,
    io: &'a Io,
    gen: u64,
}

impl Future for Queued<'_> {
    type Output = bool;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let stale = self.conn.closed.get()
            || !matches!(&*self.conn.link.borrow(), Link::Up { gen, .. } if *gen == self.gen);
        if stale {
            return Poll::Ready(false);
        }
        if !self.conn.queue.borrow().is_empty() || self.io.wants_write() {
            return Poll::Ready(true);
        }
        self.conn.writer_waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

/// Sends queued requests in batches: every request queued while the last
/// `sendmsg` was in flight goes out in the next one.
async fn writer(conn: Weak<Conn>, io: Rc<Io>, gen: u64) {
    let mut list = GatherList::new();
    loop {
        let Some(c) = conn.upgrade() else { return };
        if !(Queued {
            conn: &c,
            io: &io,
            gen,
        })
        .await
        {
            return;
        }
        let batch: Vec<Rc<Pending>> = c.queue.borrow_mut().drain(..).collect();
        let mut lent = Vec::new();
        for p in batch {
            let mut h = p.header.get();
            h.cookie = c.cookie();
            p.header.set(h);
            list.push_with(|v| encode_request(v, &h));
            if h.kind == Command::Write {
                if let Some(b) = p.buf.borrow_mut().take() {
                    let n = b.len();
                    if n > 0 {
                        p.lent.set(true);
                        list.push_buf(b, 0..n);
                        lent.push(p.clone());
                    } else {
                        *p.buf.borrow_mut() = Some(b);
                    }
                }
            }
            c.in_flight.borrow_mut().insert(h.cookie, p);
        }
        drop(c);
        let (r, l) = io.send_all(list).await;
        list = l;
        for (p, b) in lent.into_iter().zip(list.take_bufs()) {
            *p.buf.borrow_mut() = Some(b);
            p.lent.set(false);
            if p.done() {
                if let Some(w) = p.waker.take() {
                    w.wake();
                }
            }
        }
        if let Err(e) = r {
            if let Some(c) = conn.upgrade() {
                c.lost(gen, &e.to_string());
            }
            return;
        }
    }
}

/// Dials until connected (or the node is closed), backing off between tries.
async fn reconnect(conn: Weak<Conn>, since: Instant) {
    let mut pause = RETRY_MIN;
    loop {
        let (addrs, opts, label) = {
            let Some(c) = conn.upgrade() else { return };
            if c.closed.get()
                || !matches!(&*c.link.borrow(), Link::Down { since: s, .. } if *s == since)
            {
                return;
            }
            (
                c.shared.addrs.clone(),
                c.shared.opts.clone(),
                c.shared.label.clone(),
            )
        };
        match dial::dial_ring(&addrs, &opts).await {
            Ok((io, info)) => {
                let Some(c) = conn.upgrade() else { return };
                if c.closed.get() {
                    return;
                }
                if info.size != c.shared.info.size {
                    log::error!(
                        "nbd client {label}: the export changed size on reconnection ({} to {}); not using it",
                        c.shared.info.size,
                        info.size
                    );
                } else {
                    match io.describe() {
                        Some(t) => log::info!("nbd client {label}: reconnected ({t})"),
                        None => log::info!("nbd client {label}: reconnected"),
                    }
                    c.up(io, info);
                    if let Some(w) = c.writer_waker.take() {
                        w.wake();
                    }
                    return;
                }
            }
            Err(e) => log::debug!("nbd client {label}: reconnect attempt failed: {e}"),
        }
        op::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
}
