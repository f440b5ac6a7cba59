//! `IORING_OP_WRITEV`: a positioned write straight from memory described by
//! iovecs (guest RAM), kept mapped by the [`IoVecBuf`] the op owns.

use io_uring::{opcode, squeue};

use super::{Completable, GatherList, Op, SharedFd};
use crate::buf::iovec::sqe_iovecs;
use crate::buf::{BufResult, IoVecBuf};
use crate::ring::Completion;

struct Writev<B> {
    _fd: SharedFd,
    bufs: B,
    /// The iovecs after a short transfer's first bytes, when resubmitting.
    _rest: Option<Vec<libc::iovec>>,
}

impl<B: IoVecBuf> Completable for Writev<B> {
    type Output = BufResult<usize, B>;
    fn complete(self, c: Completion) -> Self::Output {
        (c.into_result().map(|n| n as usize), self.bufs)
    }
}

/// Writes the memory of `bufs`, after its first `skip` bytes, at `offset`
/// with `rw_flags` (`RWF_DSYNC` for FUA); returns how many bytes were
/// written.
pub async fn writev_at<B: IoVecBuf + Unpin>(
    fd: &SharedFd,
    bufs: B,
    skip: usize,
    offset: u64,
    rw_flags: i32,
) -> BufResult<usize, B> {
    writev_at_flags(fd, bufs, skip, offset, rw_flags, squeue::Flags::empty()).await
}

/// [`writev_at`] with SQE flags (`IOSQE_ASYNC`: straight to an io-wq
/// worker, skipping the inline attempt a buffered write cannot win).
pub async fn writev_at_flags<B: IoVecBuf + Unpin>(
    fd: &SharedFd,
    bufs: B,
    skip: usize,
    offset: u64,
    rw_flags: i32,
    sqe_flags: squeue::Flags,
) -> BufResult<usize, B> {
    let (rest, ptr, n) = sqe_iovecs(bufs.iovecs(), skip);
    let sqe = super::fd::with_fd!(fd, |f| opcode::Writev::new(f, ptr, n)
        .offset(offset)
        .rw_flags(rw_flags)
        .build())
    .flags(sqe_flags);
    // SAFETY: the SQE points at the iovec array, which lives on the heap in
    // `rest` or inside `bufs` (IoVecBuf: it does not move with the value),
    // and the iovecs point into memory `bufs` keeps mapped (IoVecBuf's
    // contract); the op owns both until the terminal completion.
    unsafe {
        Op::submit(
            Writev {
                _fd: fd.clone(),
                bufs,
                _rest: rest,
            },
            sqe,
        )
    }
    .await
}

// SAFETY: after `build_iov`, `iov` (a heap array) points into the list's own
// byte arena and owned Bufs, which nobody mutates while an op owns the list.
unsafe impl IoVecBuf for GatherList {
    fn iovecs(&self) -> &[libc::iovec] {
        let (p, n) = GatherList::iovecs(self);
        // SAFETY: `p` and `n` are the pointer and length of the list's `iov` Vec.
        unsafe { std::slice::from_raw_parts(p, n) }
    }
}

/// Writes the whole list in one `writev` at the file's position (devices
/// and pipes have none; a FUSE reply: header bytes, then the read data as
/// it is); returns how many bytes were written.
pub async fn writev_list(fd: &SharedFd, mut list: GatherList) -> BufResult<usize, GatherList> {
    if list.build_iov(0) == 0 {
        return (Ok(0), list);
    }
    writev_at(fd, list, 0, u64::MAX, 0).await
}
