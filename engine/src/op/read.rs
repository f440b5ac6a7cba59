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

/// Reads up to `buf.len()` bytes at `offset` into the start of `buf`;
/// returns how many were read (short at end of file).
pub async fn read_at(fd: &SharedFd, mut buf: Buf, offset: u64) -> BufResult<usize, Buf> {
    let len = buf.len().min(u32::MAX as usize) as u32;
    let sqe = opcode::Read::new(fd.sqe_fd(), buf.stable_mut_ptr(), len)
        .offset(offset)
        .build();
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
