//! `IORING_OP_FALLOCATE`: punch holes, zero ranges, preallocate.

use io_uring::opcode;

use super::{Completable, Op, SharedFd};
use crate::ring::Completion;

struct Fallocate {
    _fd: SharedFd,
}

impl Completable for Fallocate {
    type Output = std::io::Result<()>;
    fn complete(self, c: Completion) -> Self::Output {
        c.into_result().map(|_| ())
    }
}

/// `fallocate(2)` with `mode` (`FALLOC_FL_*`).
pub async fn fallocate(fd: &SharedFd, offset: u64, len: u64, mode: i32) -> std::io::Result<()> {
    let sqe = super::fd::with_fd!(fd, |f| opcode::Fallocate::new(f, len)
        .offset(offset)
        .mode(mode)
        .build());
    // SAFETY: the SQE carries no pointer.
    unsafe { Op::submit(Fallocate { _fd: fd.clone() }, sqe) }.await
}
