//! `IORING_OP_READ`: a positioned read into an owned [`Buf`].

use io_uring::opcode;

use super::{Completable, Op, SharedFd};
use crate::buf::{Buf, BufResult, IoBufMut};
use crate::ring::Completion;

struct Read {
    _fd: SharedFd,
    buf: Buf,
}

impl Completable for Read {
    type Output = BufResult<usize, Buf>;
    fn complete(self, c: Completion) -> Self::Output {
        (c.into_result().map(|n| n as usize), self.buf)
    }
}

/// Reads up to `buf.len() - from` bytes at `offset` into `buf[from..]`;
/// returns how many were read (short at end of file).
pub async fn read_at(fd: &SharedFd, buf: Buf, from: usize, offset: u64) -> BufResult<usize, Buf> {
    let len = buf.len().saturating_sub(from);
    read_at_len(fd, buf, from, len, offset).await
}

/// Reads up to `len` bytes at `offset` into `buf[from..from + len]` (clamped
/// to the buffer): format drivers fill one client buffer from several places.
pub async fn read_at_len(
    fd: &SharedFd,
    mut buf: Buf,
    from: usize,
    len: usize,
    offset: u64,
) -> BufResult<usize, Buf> {
    let from = from.min(buf.len());
    let len = (buf.len() - from).min(len).min(u32::MAX as usize) as u32;
    // SAFETY: from <= len of the allocation, so the pointer stays inside it.
    let ptr = unsafe { buf.stable_mut_ptr().add(from) };
    let sqe = match buf.fixed_index() {
        Some(index) => super::fd::with_fd!(fd, |f| opcode::ReadFixed::new(f, ptr, len, index)
            .offset(offset)
            .build()),
        None => super::fd::with_fd!(fd, |f| opcode::Read::new(f, ptr, len)
            .offset(offset)
            .build()),
    };
    // SAFETY: the SQE points into buf's heap memory, which the op owns.
    unsafe {
        Op::submit(
            Read {
                _fd: fd.clone(),
                buf,
            },
            sqe,
        )
    }
    .await
}
