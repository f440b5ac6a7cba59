//! `IORING_OP_CONNECT`: connect a socket (the NBD client's reconnections
//! happen in the ring, never blocking the iothread).

use io_uring::opcode;
use nix::sys::socket::SockaddrLike;

use super::{Completable, Op, SharedFd};
use crate::ring::Completion;

struct Connect<A> {
    _fd: SharedFd,
    _addr: Box<A>,
}

impl<A> Completable for Connect<A> {
    type Output = std::io::Result<()>;
    fn complete(self, c: Completion) -> Self::Output {
        c.into_result().map(drop)
    }
}

/// Connects `fd` to `addr`.
pub async fn connect<A: SockaddrLike + Unpin + 'static>(
    fd: &SharedFd,
    addr: A,
) -> std::io::Result<()> {
    let addr = Box::new(addr);
    let sqe = opcode::Connect::new(fd.sqe_fd(), addr.as_ptr(), addr.len()).build();
    // SAFETY: the SQE points at the boxed address, which the op owns.
    unsafe {
        Op::submit(
            Connect {
                _fd: fd.clone(),
                _addr: addr,
            },
            sqe,
        )
    }
    .await
}
