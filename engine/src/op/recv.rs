//! `IORING_OP_RECV`: receive into the spare room at the end of a [`Buf`].

use io_uring::opcode;

use super::{Completable, Op, SharedFd};
use crate::buf::{Buf, BufResult, IoBuf, IoBufMut};
use crate::ring::Completion;

struct Recv {
    _fd: SharedFd,
    buf: Buf,
}

impl Completable for Recv {
    type Output = BufResult<usize, Buf>;
    fn complete(mut self, c: Completion) -> Self::Output {
        let r = c.into_result().map(|n| n as usize);
        if let Ok(n) = r {
            let len = self.buf.len() + n;
            // SAFETY: the kernel wrote n bytes right after the old length.
            unsafe { self.buf.set_init(len) };
        }
        (r, self.buf)
    }
}

/// Receives at most `max` bytes after `buf.len()` (bounded by the capacity);
/// returns the count, 0 meaning the peer closed.
pub async fn recv_into(fd: &SharedFd, mut buf: Buf, max: usize) -> BufResult<usize, Buf> {
    let room = (buf.bytes_total() - buf.len())
        .min(max)
        .min(u32::MAX as usize) as u32;
    let start = buf.len();
    // SAFETY: start <= capacity, so the pointer stays inside the allocation.
    let ptr = unsafe { buf.stable_mut_ptr().add(start) };
    let sqe = opcode::Recv::new(fd.sqe_fd(), ptr, room).build();
    // SAFETY: the SQE points into buf's heap memory, which the op owns.
    unsafe {
        Op::submit(
            Recv {
                _fd: fd.clone(),
                buf,
            },
            sqe,
        )
    }
    .await
}
