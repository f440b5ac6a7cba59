//! `IORING_OP_ACCEPT`: a new connection on a listening socket.

use std::os::fd::{FromRawFd, OwnedFd};

use io_uring::opcode;

use super::{Completable, Op, SharedFd};
use crate::ring::Completion;

struct Accept {
    _fd: SharedFd,
}

impl Completable for Accept {
    type Output = std::io::Result<OwnedFd>;
    fn complete(self, c: Completion) -> Self::Output {
        let fd = c.into_result()?;
        // SAFETY: a successful accept returns a new fd that only we know of.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }
}

/// Accepts one connection (close-on-exec); the new fd is closed, not leaked,
/// if the future is dropped after the kernel accepted.
pub async fn accept(listener: &SharedFd) -> std::io::Result<OwnedFd> {
    let sqe = opcode::Accept::new(
        listener.sqe_fd(),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    )
    .flags(libc::SOCK_CLOEXEC)
    .build();
    // SAFETY: null address pointers: the kernel writes no peer address.
    unsafe {
        Op::submit(
            Accept {
                _fd: listener.clone(),
            },
            sqe,
        )
    }
    .result_is_fd()
    .await
}
