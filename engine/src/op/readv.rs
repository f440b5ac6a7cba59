//! `IORING_OP_READV` into owned [`Buf`]s: a message read from a character
//! device in one call, split where the caller wants it (a FUSE request:
//! its headers into the first buffer, so that a WRITE's data lands
//! page-aligned at the start of the next).

use io_uring::opcode;

use super::{Completable, Op, SharedFd};
use crate::buf::{Buf, IoBufMut};
use crate::ring::Completion;

struct Readv {
    _fd: SharedFd,
    bufs: Vec<Buf>,
    /// Points into `bufs`; its heap array does not move with the op.
    _iov: Vec<libc::iovec>,
}

impl Completable for Readv {
    type Output = (std::io::Result<usize>, Vec<Buf>);
    fn complete(self, c: Completion) -> Self::Output {
        (c.into_result().map(|n| n as usize), self.bufs)
    }
}

/// Reads one message into `bufs[0][..len]`, then `bufs[1][..len]`, and so
/// on, at the file's position; returns how many bytes were read in all.
pub async fn readv(fd: &SharedFd, mut bufs: Vec<Buf>) -> (std::io::Result<usize>, Vec<Buf>) {
    let iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_len: b.len(),
            iov_base: b.stable_mut_ptr().cast(),
        })
        .collect();
    let sqe = super::fd::with_fd!(fd, |f| opcode::Readv::new(
        f,
        iov.as_ptr(),
        iov.len() as u32
    )
    .offset(u64::MAX)
    .build());
    // SAFETY: the iovecs live in the op and cover the first len bytes of
    // each buffer, heap memory the op owns until completion.
    unsafe {
        Op::submit(
            Readv {
                _fd: fd.clone(),
                bufs,
                _iov: iov,
            },
            sqe,
        )
    }
    .await
}
