//! `IORING_OP_READV` into two owned [`Buf`]s: a message read from a
//! character device in one call, split where the caller wants it (a FUSE
//! request: its headers into the first buffer, so that a WRITE's data lands
//! page-aligned at the start of the second).

use io_uring::opcode;

use super::{Completable, Op, SharedFd};
use crate::buf::{Buf, IoBufMut};
use crate::ring::Completion;

struct Readv {
    _fd: SharedFd,
    head: Buf,
    body: Buf,
    /// Points into `head` and `body`; boxed so its address is stable.
    _iov: Box<[libc::iovec; 2]>,
}

impl Completable for Readv {
    type Output = (std::io::Result<usize>, Buf, Buf);
    fn complete(self, c: Completion) -> Self::Output {
        (c.into_result().map(|n| n as usize), self.head, self.body)
    }
}

/// Reads one message into `head[..head.len()]`, then `body[..body.len()]`,
/// at the file's position; returns how many bytes were read in all.
pub async fn readv2(
    fd: &SharedFd,
    mut head: Buf,
    mut body: Buf,
) -> (std::io::Result<usize>, Buf, Buf) {
    let iov = Box::new([
        libc::iovec {
            iov_base: head.stable_mut_ptr().cast(),
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: body.stable_mut_ptr().cast(),
            iov_len: body.len(),
        },
    ]);
    let sqe = super::fd::with_fd!(fd, |f| opcode::Readv::new(f, iov.as_ptr(), 2)
        .offset(u64::MAX)
        .build());
    // SAFETY: the iovecs are boxed in the op and cover the first len bytes
    // of head and body, heap memory the op owns until completion.
    unsafe {
        Op::submit(
            Readv {
                _fd: fd.clone(),
                head,
                body,
                _iov: iov,
            },
            sqe,
        )
    }
    .await
}
