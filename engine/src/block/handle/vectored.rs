//! Vectored reads and writes on a [`BlockHandle`]: straight into and out of
//! memory the caller describes with iovecs (a guest's buffers), for the
//! virtio-blk exports. The memory is kept mapped by the [`IoVecBuf`] the
//! operation owns, and handed back with the result.

use super::{buffered_write, BlockHandle, Leaf};
use crate::block::error::{BlockError, BlockResult};
use crate::buf::{iovec, pool, IoVecBuf};
use crate::op;

/// True when every iovec base and length is a multiple of `align` (what
/// `O_DIRECT` needs of memory).
fn iovecs_aligned(v: &[libc::iovec], align: u64) -> bool {
    v.iter().all(|v| {
        (v.iov_base as u64).is_multiple_of(align) && (v.iov_len as u64).is_multiple_of(align)
    })
}

impl BlockHandle {
    /// Chooses the descriptor for a vectored request: the `O_DIRECT` one
    /// only when offset, length and every iovec are aligned.
    fn vectored_fd<B: IoVecBuf>(&self, bufs: &B, at: u64, len: u64) -> Option<op::SharedFd> {
        match &self.inner.leaf {
            Leaf::File {
                fd,
                buffered,
                align,
                ..
            } => Some(match buffered {
                Some(b)
                    if !(at.is_multiple_of(*align)
                        && len.is_multiple_of(*align)
                        && iovecs_aligned(bufs.iovecs(), *align)) =>
                {
                    b.clone()
                }
                _ => fd.clone(),
            }),
            Leaf::Null { .. } => None,
            // Format and remote leaves are served through a bounce buffer first.
            Leaf::Qcow2(_) | Leaf::Rbd(_) | Leaf::Remote(_) => None,
        }
    }

    /// Whether a vectored request goes to the leaf as it is (a file read or
    /// written in place, a null node); format leaves map each request to
    /// extents of their own and take a bounce buffer instead.
    fn vectored_in_place(&self) -> bool {
        matches!(self.inner.leaf, Leaf::File { .. } | Leaf::Null { .. })
    }

    /// `readv` through a pooled buffer and [`BlockHandle::read`].
    async fn readv_bounced<B: IoVecBuf + Unpin>(
        &self,
        offset: u64,
        mut bufs: B,
    ) -> (BlockResult<()>, B) {
        let (r, b) = self.read(offset, pool::check_out(bufs.total_len())).await;
        if r.is_ok() {
            iovec::copy_in(&mut bufs, b.as_slice());
        }
        pool::check_in(b);
        (r, bufs)
    }

    /// `writev` through a pooled buffer and [`BlockHandle::write`].
    async fn writev_bounced<B: IoVecBuf + Unpin>(
        &self,
        offset: u64,
        bufs: B,
        fua: bool,
    ) -> (BlockResult<()>, B) {
        let mut b = pool::check_out(bufs.total_len());
        iovec::copy_out(&bufs, b.as_mut_slice());
        let (r, b) = self.write(offset, b, fua).await;
        pool::check_in(b);
        (r, bufs)
    }

    /// Fills all of `bufs` from `offset`.
    pub async fn readv<B: IoVecBuf + Unpin>(
        &self,
        offset: u64,
        mut bufs: B,
    ) -> (BlockResult<()>, B) {
        let len = bufs.total_len() as u64;
        if let Err(e) = self.check(offset, len) {
            return (Err(e), bufs);
        }
        if !self.vectored_in_place() {
            // Boxed, as the bounced write: a format node's read future is
            // bigger than this whole one, and would be part of every
            // request task of a file node too.
            return Box::pin(self.readv_bounced(offset, bufs)).await;
        }
        let at = self.inner.base + offset;
        let Some(fd) = self.vectored_fd(&bufs, at, len) else {
            iovec::zero(&mut bufs);
            return (Ok(()), bufs);
        };
        let mut done = 0usize;
        while (done as u64) < len {
            let (r, b) = op::readv_at(&fd, bufs, done, at + done as u64).await;
            bufs = b;
            match r {
                Ok(0) => {
                    // Past the end of the file: zeroes, as a hole would.
                    let mut rest = TailOf(iovec::tail(bufs.iovecs(), done));
                    iovec::zero(&mut rest);
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return (Err(BlockError::io("read", offset + done as u64, e)), bufs),
            }
        }
        (Ok(()), bufs)
    }

    /// Writes all of `bufs` at `offset`; with `fua` the data is durable when
    /// this returns (`RWF_DSYNC`).
    pub async fn writev<B: IoVecBuf + Unpin>(
        &self,
        offset: u64,
        mut bufs: B,
        fua: bool,
    ) -> (BlockResult<()>, B) {
        let len = bufs.total_len() as u64;
        if self.inner.node.read_only() {
            return (Err(BlockError::ReadOnly), bufs);
        }
        if let Err(e) = self.check(offset, len) {
            return (Err(e), bufs);
        }
        if !self.vectored_in_place() {
            // `write` marks the dirty bitmaps itself. Boxed: see `readv`.
            return Box::pin(self.writev_bounced(offset, bufs, fua)).await;
        }
        // Marks the dirty bitmaps before submission and again before the
        // acknowledgement, as `write` does.
        let _dirty = self.inner.dirty.guard(offset, len);
        let at = self.inner.base + offset;
        let Some(fd) = self.vectored_fd(&bufs, at, len) else {
            return (Ok(()), bufs);
        };
        let no_flush = matches!(self.inner.leaf, Leaf::File { no_flush: true, .. });
        // The page-cache file itself (not the buffered fallback of an
        // O_DIRECT one): its small writes follow RINGSTOR_BUFFERED_WRITES,
        // as the block layer's `write` does for NBD.
        let page_cache = matches!(self.inner.leaf, Leaf::File { buffered: None, .. });
        let flags = if fua && !no_flush { libc::RWF_DSYNC } else { 0 };
        let mut done = 0usize;
        while (done as u64) < len {
            let (r, b) =
                buffered_write::writev_at(&fd, bufs, done, at + done as u64, flags, page_cache)
                    .await;
            bufs = b;
            match r {
                Ok(0) => {
                    let e = std::io::ErrorKind::WriteZero.into();
                    return (Err(BlockError::io("write", offset + done as u64, e)), bufs);
                }
                Ok(n) => done += n,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return (Err(BlockError::io("write", offset + done as u64, e)), bufs),
            }
        }
        (Ok(()), bufs)
    }
}

/// The unread tail of a request's iovecs, to zero after end of file.
struct TailOf(Vec<libc::iovec>);

// SAFETY: the iovecs are a sub-range of those of an IoVecBuf that the
// caller keeps alive (and so mapped) while this value is used, and the Vec
// keeps the array on the heap.
unsafe impl IoVecBuf for TailOf {
    fn iovecs(&self) -> &[libc::iovec] {
        &self.0
    }
}
