//! `IORING_OP_POLL_ADD`: wait until an fd is readable (kick eventfds, /dev/fuse, listeners).

use io_uring::opcode;

use super::{Completable, Op, SharedFd};
use crate::ring::Completion;

struct PollAdd {
    _fd: SharedFd,
}

impl Completable for PollAdd {
    type Output = std::io::Result<u32>;
    fn complete(self, c: Completion) -> Self::Output {
        c.into_result()
    }
}

/// Waits for `POLLIN` (or an error/hang-up) on `fd`; returns the revents.
pub async fn poll_readable(fd: &SharedFd) -> std::io::Result<u32> {
    let sqe = opcode::PollAdd::new(fd.sqe_fd(), libc::POLLIN as u32).build();
    // SAFETY: the SQE carries no pointer.
    unsafe { Op::submit(PollAdd { _fd: fd.clone() }, sqe) }.await
}
