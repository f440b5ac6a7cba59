//! `IORING_OP_FSYNC`: flush a file to stable storage.

use io_uring::{opcode, types::FsyncFlags};

use super::{Completable, Op, SharedFd};
use crate::ring::Completion;

struct Fsync {
    _fd: SharedFd,
}

impl Completable for Fsync {
    type Output = std::io::Result<()>;
    fn complete(self, c: Completion) -> Self::Output {
        c.into_result().map(|_| ())
    }
}

/// `fsync(2)`.
pub async fn fsync(fd: &SharedFd) -> std::io::Result<()> {
    let sqe = super::fd::with_fd!(fd, |f| opcode::Fsync::new(f).build());
    // SAFETY: the SQE carries no pointer.
    unsafe { Op::submit(Fsync { _fd: fd.clone() }, sqe) }.await
}

/// `fdatasync(2)`.
pub async fn fdatasync(fd: &SharedFd) -> std::io::Result<()> {
    let sqe = super::fd::with_fd!(fd, |f| opcode::Fsync::new(f)
        .flags(FsyncFlags::DATASYNC)
        .build());
    // SAFETY: the SQE carries no pointer.
    unsafe { Op::submit(Fsync { _fd: fd.clone() }, sqe) }.await
}
