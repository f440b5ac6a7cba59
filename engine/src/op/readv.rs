//! `IORING_OP_READV`: a positioned read straight into memory described by
//! iovecs (guest RAM), kept mapped by the [`IoVecBuf`] the op owns.

use io_uring::opcode;

use super::{Completable, Op, SharedFd};
use crate::buf::iovec::sqe_iovecs;
use crate::buf::{Buf, BufResult, IoBufMut, IoVecBuf};
use crate::ring::Completion;

struct Readv<B> {
    _fd: SharedFd,
    bufs: B,
    /// The iovecs after a short transfer's first bytes, when resubmitting.
    _rest: Option<Vec<libc::iovec>>,
}

impl<B: IoVecBuf> Completable for Readv<B> {
    type Output = BufResult<usize, B>;
    fn complete(self, c: Completion) -> Self::Output {
        (c.into_result().map(|n| n as usize), self.bufs)
    }
}

/// Reads into the memory of `bufs`, after its first `skip` bytes, from
/// `offset`; returns how many bytes were read (short at end of file).
pub async fn readv_at<B: IoVecBuf + Unpin>(
    fd: &SharedFd,
    bufs: B,
    skip: usize,
    offset: u64,
) -> BufResult<usize, B> {
    let (rest, ptr, n) = sqe_iovecs(bufs.iovecs(), skip);
    let sqe = super::fd::with_fd!(fd, |f| opcode::Readv::new(f, ptr, n).offset(offset).build());
    // SAFETY: the SQE points at the iovec array, which lives on the heap in
    // `rest` or inside `bufs` (IoVecBuf: it does not move with the value),
    // and the iovecs point into memory `bufs` keeps mapped and writable
    // (IoVecBuf's contract); the op owns both until the terminal completion.
    unsafe {
        Op::submit(
            Readv {
                _fd: fd.clone(),
                bufs,
                _rest: rest,
            },
            sqe,
        )
    }
    .await
}

/// Owned [`Buf`]s as an [`IoVecBuf`]: each buffer's first `len` bytes, in
/// order (a message read from a character device, split where the caller
/// wants it: a FUSE request's headers into the first buffer, so that a
/// WRITE's data lands page-aligned at the start of the next).
struct BufVec {
    bufs: Vec<Buf>,
    iov: Vec<libc::iovec>,
}

// SAFETY: the iovecs cover the first `len` bytes of each buffer, heap memory
// owned by `bufs` (it does not move when the value moves, and `bufs` is not
// touched while the value lives); `iov` is a heap array built once.
unsafe impl IoVecBuf for BufVec {
    fn iovecs(&self) -> &[libc::iovec] {
        &self.iov
    }
}

/// Reads one message into `bufs[0][..len]`, then `bufs[1][..len]`, and so
/// on, at the file's position (devices have none); returns how many bytes
/// were read in all.
pub async fn readv_bufs(fd: &SharedFd, mut bufs: Vec<Buf>) -> BufResult<usize, Vec<Buf>> {
    let iov = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_len: b.len(),
            iov_base: b.stable_mut_ptr().cast(),
        })
        .collect();
    let (r, v) = readv_at(fd, BufVec { bufs, iov }, 0, u64::MAX).await;
    (r, v.bufs)
}
