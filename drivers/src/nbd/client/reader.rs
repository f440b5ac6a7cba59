//! The reader task of a client connection: reply headers and chunks in,
//! each routed by cookie to its [`Pending`] request. READ data that is not
//! already in the receive buffer is received straight into the request's
//! buffer. Anything the server gets wrong (bad magic, unknown cookie, a
//! chunk outside the request) ends the connection, which the connection
//! treats as a loss (requests are resent after a reconnection); so does
//! an `ESHUTDOWN` reply, as the server is about to go.

use std::rc::{Rc, Weak};

use engine::buf::{pool, Buf};

use super::conn::{Conn, Outcome, Pending};
use super::io::Io;
use crate::nbd::proto::client::{
    errno_from_wire, parse_block_status_chunk, parse_error_chunk, parse_offset_hole,
    parse_reply_header, ReplyHeader,
};
use crate::nbd::proto::consts::*;
use crate::nbd::proto::Command;

/// An `ESHUTDOWN` reply: the server is going away, so the request is
/// not failed but sent again once reconnected.
const SHUTTING_DOWN: &str = "the server is shutting down";

/// Receive buffer size (also the largest non-data chunk accepted).
const RECV_BUF: usize = 256 * 1024;

struct Rx {
    io: Rc<Io>,
    /// Wakes the writer when TLS has records to send after a receive.
    conn: Weak<Conn>,
    buf: Buf,
    start: usize,
}

impl Rx {
    fn data(&self) -> &[u8] {
        self.buf.as_slice().get(self.start..).unwrap_or(&[])
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
    }

    /// Receiving made rustls want to send (a key update, an alert): only
    /// the writer sends, so wake it.
    fn tls_send(&self) {
        if self.io.wants_write() {
            if let Some(c) = self.conn.upgrade() {
                c.wake_writer();
            }
        }
    }

    /// Makes at least `min` bytes available (`min` ≤ the buffer size).
    async fn fill(&mut self, min: usize) -> Result<(), String> {
        while self.data().len() < min {
            if self.buf.capacity() - self.start < min || self.start == self.buf.len() {
                self.buf.consume_front(self.start);
                self.start = 0;
            }
            let buf = std::mem::replace(&mut self.buf, Buf::with_capacity(0));
            let room = buf.capacity() - buf.len();
            let (r, b) = self.io.recv_into(buf, room).await;
            self.buf = b;
            self.tls_send();
            match r {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    /// Moves `n` bytes of the stream into `dst[at..at + n]`: what is
    /// buffered is copied, the rest received in place.
    async fn read_into(&mut self, dst: &mut Buf, at: usize, n: usize) -> Result<(), String> {
        let full = dst.len();
        let have = self.data().len().min(n);
        dst.as_mut_slice()[at..at + have].copy_from_slice(&self.data()[..have]);
        self.consume(have);
        let mut done = have;
        while done < n {
            let mut b = std::mem::replace(dst, Buf::with_capacity(0));
            b.set_len(at + done);
            let (r, mut b) = self.io.recv_into(b, n - done).await;
            b.set_len(full);
            *dst = b;
            self.tls_send();
            match r {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(k) => done += k,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }
}

/// Reads replies until the connection fails, then reports the loss.
pub(crate) async fn reader(conn: Weak<Conn>, io: Rc<Io>, gen: u64) {
    let mut rx = Rx {
        io,
        conn: conn.clone(),
        buf: pool::check_out(RECV_BUF),
        start: 0,
    };
    rx.buf.set_len(0);
    let r = run(&conn, &mut rx).await;
    pool::check_in(std::mem::replace(&mut rx.buf, Buf::with_capacity(0)));
    if let (Err(why), Some(c)) = (r, conn.upgrade()) {
        c.lost(gen, &why);
    }
}

fn lookup(conn: &Weak<Conn>, cookie: u64) -> Result<(Rc<Pending>, bool), String> {
    let c = conn.upgrade().ok_or("closed")?;
    let p = c
        .in_flight
        .borrow()
        .get(&cookie)
        .cloned()
        .ok_or_else(|| format!("reply to unknown cookie {cookie}"))?;
    let structured = c.info.borrow().structured;
    Ok((p, structured))
}

fn complete(conn: &Weak<Conn>, cookie: u64, p: &Pending, outcome: Outcome) {
    if let Some(c) = conn.upgrade() {
        c.in_flight.borrow_mut().remove(&cookie);
    }
    p.finish(outcome);
}

async fn run(conn: &Weak<Conn>, rx: &mut Rx) -> Result<(), String> {
    loop {
        rx.fill(4).await?;
        let structured = conn
            .upgrade()
            .map(|c| c.info.borrow().structured)
            .ok_or("closed")?;
        let (header, used) = loop {
            match parse_reply_header(rx.data(), structured) {
                Ok(Some(v)) => break v,
                Ok(None) => {
                    let need = rx.data().len() + 1;
                    rx.fill(need).await?
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        rx.consume(used);
        let cookie = header.cookie();
        let (p, _) = lookup(conn, cookie)?;
        let req = p.header.get();
        match header {
            ReplyHeader::Simple { error, .. } => {
                if error == NBD_ESHUTDOWN {
                    return Err(SHUTTING_DOWN.into());
                }
                if error != 0 {
                    complete(
                        conn,
                        cookie,
                        &p,
                        Outcome::Err(errno_from_wire(error), String::new()),
                    );
                    continue;
                }
                if req.kind == Command::Read {
                    let mut b = p.buf.borrow_mut().take().ok_or("read without a buffer")?;
                    let n = b.len();
                    let r = rx.read_into(&mut b, 0, n).await;
                    *p.buf.borrow_mut() = Some(b);
                    r?;
                }
                complete(conn, cookie, &p, Outcome::Ok);
            }
            ReplyHeader::Chunk {
                flags,
                kind,
                length,
                ..
            } => {
                let length = length as usize;
                if kind == NBD_REPLY_TYPE_OFFSET_DATA {
                    if req.kind != Command::Read || length < 8 {
                        return Err("unexpected data chunk".into());
                    }
                    rx.fill(8).await?;
                    let off =
                        u64::from_be_bytes(rx.data()[..8].try_into().map_err(|_| "short chunk")?);
                    rx.consume(8);
                    let n = length - 8;
                    let at = off
                        .checked_sub(req.offset)
                        .filter(|a| a + n as u64 <= req.length)
                        .ok_or("data chunk outside the request")?
                        as usize;
                    let mut b = p.buf.borrow_mut().take().ok_or("read without a buffer")?;
                    let r = rx.read_into(&mut b, at, n).await;
                    *p.buf.borrow_mut() = Some(b);
                    r?;
                } else {
                    if length > RECV_BUF {
                        return Err(format!("reply chunk of {length} bytes"));
                    }
                    rx.fill(length).await?;
                    let payload = rx.data()[..length].to_vec();
                    rx.consume(length);
                    chunk(&p, kind, &payload)?;
                }
                if flags & NBD_REPLY_FLAG_DONE != 0 {
                    let outcome = match p.error.borrow_mut().take() {
                        Some((libc::ESHUTDOWN, _)) => return Err(SHUTTING_DOWN.into()),
                        Some((e, m)) => Outcome::Err(e, m),
                        None => Outcome::Ok,
                    };
                    complete(conn, cookie, &p, outcome);
                }
            }
        }
    }
}

/// A chunk other than data.
fn chunk(p: &Pending, kind: u16, payload: &[u8]) -> Result<(), String> {
    let req = p.header.get();
    match kind {
        NBD_REPLY_TYPE_NONE => {}
        NBD_REPLY_TYPE_OFFSET_HOLE => {
            let (off, len) = parse_offset_hole(payload).map_err(|e| e.to_string())?;
            let at = off
                .checked_sub(req.offset)
                .filter(|a| a + u64::from(len) <= req.length && req.kind == Command::Read)
                .ok_or("hole chunk outside the request")? as usize;
            if let Some(b) = p.buf.borrow_mut().as_mut() {
                b.zero(at..at + len as usize);
            }
        }
        NBD_REPLY_TYPE_BLOCK_STATUS => {
            let v = parse_block_status_chunk(payload).map_err(|e| e.to_string())?;
            p.status.borrow_mut().push(v);
        }
        k if k & (1 << 15) != 0 => {
            let (e, msg) = parse_error_chunk(payload).map_err(|e| e.to_string())?;
            p.error
                .borrow_mut()
                .get_or_insert((errno_from_wire(e), msg));
        }
        k => return Err(format!("unknown reply chunk type {k}")),
    }
    Ok(())
}
