//! `IORING_OP_WRITE`: a positioned write from an owned [`Buf`].

use io_uring::{opcode, squeue};

use super::{Completable, Op, SharedFd};
use crate::buf::{Buf, BufResult, IoBuf};
use crate::ring::Completion;

struct Write {
    _fd: SharedFd,
    buf: Buf,
}

impl Completable for Write {
    type Output = BufResult<usize, Buf>;
    fn complete(self, c: Completion) -> Self::Output {
        (c.into_result().map(|n| n as usize), self.buf)
    }
}

/// Writes `buf[from..]` at `offset` with `rw_flags` (`RWF_DSYNC` for FUA);
/// returns how many bytes were written.
pub async fn write_at(
    fd: &SharedFd,
    buf: Buf,
    from: usize,
    offset: u64,
    rw_flags: i32,
) -> BufResult<usize, Buf> {
    let len = buf.len().saturating_sub(from);
    write_at_len(fd, buf, from, len, offset, rw_flags).await
}

/// Writes `buf[from..from + len]` (clamped to the buffer) at `offset`: format
/// drivers send one client buffer to several places.
pub async fn write_at_len(
    fd: &SharedFd,
    buf: Buf,
    from: usize,
    len: usize,
    offset: u64,
    rw_flags: i32,
) -> BufResult<usize, Buf> {
    write_at_flags(fd, buf, from, len, offset, rw_flags, squeue::Flags::empty()).await
}

/// [`write_at_len`] with SQE flags (`IOSQE_ASYNC`: straight to an io-wq
/// worker, skipping the inline attempt a buffered write cannot win).
pub async fn write_at_flags(
    fd: &SharedFd,
    buf: Buf,
    from: usize,
    len: usize,
    offset: u64,
    rw_flags: i32,
    sqe_flags: squeue::Flags,
) -> BufResult<usize, Buf> {
    let from = from.min(buf.len());
    let len = (buf.len() - from).min(len).min(u32::MAX as usize) as u32;
    // SAFETY: from <= len of the allocation, so the pointer stays inside it.
    let ptr = unsafe { buf.stable_ptr().add(from) };
    let sqe = match buf.fixed_index() {
        Some(index) => super::fd::with_fd!(fd, |f| {
            opcode::WriteFixed::new(f, ptr, len, index)
                .offset(offset)
                .rw_flags(rw_flags)
                .build()
        }),
        None => super::fd::with_fd!(fd, |f| opcode::Write::new(f, ptr, len)
            .offset(offset)
            .rw_flags(rw_flags)
            .build()),
    }
    .flags(sqe_flags);
    // SAFETY: the SQE points into buf's heap memory, which the op owns.
    unsafe {
        Op::submit(
            Write {
                _fd: fd.clone(),
                buf,
            },
            sqe,
        )
    }
    .await
}
