//! `IORING_OP_SENDMSG` from a [`GatherList`]: many replies, one system call.
//!
//! A `GatherList` collects small byte runs (reply headers, copied into one
//! arena) and whole [`Buf`]s (read data, sent as they are, without a copy).
//! The iovec array and the `msghdr` are built when the op is submitted and
//! live in the list, which the op owns until the completion.
//!
//! [`send_all_eager`] first tries a plain non-blocking `sendmsg(2)` on the
//! calling thread and goes to the ring only for what the socket would not
//! take: a socket with room in its send buffer (nearly always, for small
//! replies) then costs one system call and no ring round trip.

use std::ops::Range;

use io_uring::opcode;

use super::{Completable, Op, SharedFd};
use crate::buf::{Buf, BufResult, IoBuf};
use crate::ring::Completion;

/// At most this many iovecs per `sendmsg` (Linux `UIO_MAXIOV`).
const MAX_IOV: usize = 1024;

enum Seg {
    Bytes(Range<usize>),
    Buf(usize, Range<usize>),
}

/// An ordered list of byte runs to send. See the module docs.
pub struct GatherList {
    bytes: Vec<u8>,
    bufs: Vec<Buf>,
    segs: Vec<Seg>,
    total: usize,
    iov: Vec<libc::iovec>,
    msg: Box<libc::msghdr>,
}

impl Default for GatherList {
    fn default() -> Self {
        Self::new()
    }
}

impl GatherList {
    /// An empty list.
    pub fn new() -> GatherList {
        // SAFETY: msghdr is a plain C struct for which all-zero is valid.
        let msg: libc::msghdr = unsafe { std::mem::zeroed() };
        GatherList {
            bytes: Vec::with_capacity(4096),
            bufs: Vec::new(),
            segs: Vec::new(),
            total: 0,
            iov: Vec::new(),
            msg: Box::new(msg),
        }
    }

    /// Appends a copy of `b`.
    pub fn push_bytes(&mut self, b: &[u8]) {
        if b.is_empty() {
            return;
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(b);
        let end = self.bytes.len();
        match self.segs.last_mut() {
            Some(Seg::Bytes(r)) if r.end == start => r.end = end,
            _ => self.segs.push(Seg::Bytes(start..end)),
        }
        self.total += b.len();
    }

    /// Appends bytes that `fill` writes into the arena (no staging copy).
    pub fn push_with(&mut self, fill: impl FnOnce(&mut Vec<u8>)) {
        let start = self.bytes.len();
        fill(&mut self.bytes);
        let end = self.bytes.len();
        if end == start {
            return;
        }
        match self.segs.last_mut() {
            Some(Seg::Bytes(r)) if r.end == start => r.end = end,
            _ => self.segs.push(Seg::Bytes(start..end)),
        }
        self.total += end - start;
    }

    /// Appends `buf[range]` without copying; the list owns `buf` until cleared.
    pub fn push_buf(&mut self, buf: Buf, range: Range<usize>) {
        let range = range.start.min(buf.len())..range.end.min(buf.len());
        if range.is_empty() {
            crate::buf::pool::check_in(buf);
            return;
        }
        self.total += range.len();
        self.segs.push(Seg::Buf(self.bufs.len(), range));
        self.bufs.push(buf);
    }

    /// Bytes in the list.
    pub fn len(&self) -> usize {
        self.total
    }

    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Number of segments (a proxy for how many replies are batched).
    pub fn segments(&self) -> usize {
        self.segs.len()
    }

    /// Empties the list and hands its buffers back, in the order they were
    /// pushed (for a sender that keeps its payloads, to send them again).
    pub fn take_bufs(&mut self) -> Vec<Buf> {
        self.bytes.clear();
        self.segs.clear();
        self.iov.clear();
        self.total = 0;
        std::mem::take(&mut self.bufs)
    }

    /// The bytes of the list in order, one slice per segment: for a
    /// transport that must transform them (encrypt) rather than send them.
    pub fn slices(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.segs.iter().map(move |seg| {
            let (base, range) = match seg {
                Seg::Bytes(r) => (self.bytes.as_slice(), r),
                Seg::Buf(i, r) => (self.bufs.get(*i).map_or(&[][..], |b| b.as_slice()), r),
            };
            base.get(range.clone()).unwrap_or(&[])
        })
    }

    /// Empties the list, returning its buffers to the thread's pool.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.segs.clear();
        self.iov.clear();
        self.total = 0;
        for b in self.bufs.drain(..) {
            crate::buf::pool::check_in(b);
        }
    }

    /// Builds the iovecs for the bytes after the first `skip`; returns how
    /// many bytes they cover.
    pub(crate) fn build_iov(&mut self, skip: usize) -> usize {
        self.iov.clear();
        let mut skip = skip;
        let mut covered = 0;
        for seg in &self.segs {
            let (base, range) = match seg {
                Seg::Bytes(r) => (self.bytes.as_ptr(), r.clone()),
                Seg::Buf(i, r) => (self.bufs[*i].stable_ptr(), r.clone()),
            };
            if skip >= range.len() {
                skip -= range.len();
                continue;
            }
            let start = range.start + skip;
            skip = 0;
            let len = range.end - start;
            // SAFETY: start < range.end <= the segment's initialised length.
            let ptr = unsafe { base.add(start) };
            self.iov.push(libc::iovec {
                iov_base: ptr as *mut libc::c_void,
                iov_len: len,
            });
            covered += len;
            if self.iov.len() == MAX_IOV {
                break;
            }
        }
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = self.iov.len() as _;
        covered
    }
}

impl GatherList {
    /// The iovecs [`Self::build_iov`] built: pointer and count.
    pub(crate) fn iovecs(&self) -> (*const libc::iovec, usize) {
        (self.iov.as_ptr(), self.iov.len())
    }
}

struct SendMsg {
    _fd: SharedFd,
    list: GatherList,
}

impl Completable for SendMsg {
    type Output = BufResult<usize, GatherList>;
    fn complete(self, c: Completion) -> Self::Output {
        (c.into_result().map(|n| n as usize), self.list)
    }
}

/// `IORING_RECVSEND_POLL_FIRST` (in the SQE's `ioprio`): wait for room at
/// once instead of trying the send first.
const RECVSEND_POLL_FIRST: u16 = 1;

/// One `sendmsg` of the bytes after the first `skip`; returns how many were sent.
pub async fn sendmsg(fd: &SharedFd, list: GatherList, skip: usize) -> BufResult<usize, GatherList> {
    sendmsg_op(fd, list, skip, 0).await
}

impl GatherList {
    /// One non-blocking `sendmsg(2)` of the bytes after the first `skip`, on
    /// the calling thread; `ErrorKind::WouldBlock` when the socket has no room.
    pub fn try_send(&mut self, fd: &SharedFd, skip: usize) -> std::io::Result<usize> {
        if self.build_iov(skip) == 0 {
            return Ok(0);
        }
        // SAFETY: build_iov pointed msg at iovecs into the arena and the
        // owned Bufs, all alive and unchanged for the call.
        let n = unsafe {
            libc::sendmsg(
                fd.raw(),
                &*self.msg,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

async fn sendmsg_op(
    fd: &SharedFd,
    mut list: GatherList,
    skip: usize,
    ioprio: u16,
) -> BufResult<usize, GatherList> {
    if list.build_iov(skip) == 0 {
        return (Ok(0), list);
    }
    let msg: *const libc::msghdr = &*list.msg;
    let sqe = opcode::SendMsg::new(fd.sqe_fd(), msg)
        .flags(libc::MSG_NOSIGNAL as u32)
        .ioprio(ioprio)
        .build();
    // SAFETY: msg, the iovecs and everything they point to live in `list`
    // (boxed, arena and owned Bufs), which the op owns until completion and
    // nobody mutates meanwhile.
    unsafe {
        Op::submit(
            SendMsg {
                _fd: fd.clone(),
                list,
            },
            sqe,
        )
    }
    .await
}

/// Sends the whole list, looping over short sends.
pub async fn send_all(fd: &SharedFd, list: GatherList) -> BufResult<(), GatherList> {
    send_loop(fd, list, false).await
}

/// [`send_all`], trying each piece with [`GatherList::try_send`] first and
/// using the ring only while the socket has no room. See the module docs.
pub async fn send_all_eager(fd: &SharedFd, list: GatherList) -> BufResult<(), GatherList> {
    send_loop(fd, list, true).await
}

async fn send_loop(fd: &SharedFd, list: GatherList, eager: bool) -> BufResult<(), GatherList> {
    let mut list = list;
    let mut sent = 0;
    while sent < list.len() {
        let direct = if eager {
            Some(list.try_send(fd, sent))
        } else {
            None
        };
        let r = match direct {
            Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let (r, l) = sendmsg_op(fd, list, sent, RECVSEND_POLL_FIRST).await;
                list = l;
                r
            }
            Some(r) => r,
            None => {
                let (r, l) = sendmsg(fd, list, sent).await;
                list = l;
                r
            }
        };
        match r {
            Ok(0) => {
                return (
                    Err(std::io::Error::from(std::io::ErrorKind::WriteZero)),
                    list,
                )
            }
            Ok(n) => sent += n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return (Err(e), list),
        }
    }
    (Ok(()), list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_follow_push_order() {
        let mut l = GatherList::new();
        l.push_bytes(b"ab");
        l.push_with(|v| v.extend_from_slice(b"cd"));
        let mut b = Buf::with_capacity(16);
        b.extend_from_slice(b"0123456789");
        l.push_buf(b, 2..5);
        l.push_bytes(b"ef");
        let all: Vec<&[u8]> = l.slices().collect();
        assert_eq!(all, vec![&b"abcd"[..], b"234", b"ef"]);
        assert_eq!(all.iter().map(|s| s.len()).sum::<usize>(), l.len());
    }
}
