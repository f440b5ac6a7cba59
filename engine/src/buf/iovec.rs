//! [`IoVecBuf`]: memory the engine does not own (guest RAM mapped from a
//! vhost-user frontend's fds), described as iovecs, that a vectored
//! operation reads into or writes from without a copy.
//!
//! The value that implements the trait is the *keep-alive*: it holds the
//! iovecs and whatever keeps their memory mapped (an `Arc` of the guest
//! memory map). Operations take it by value and hand it back on completion,
//! like a [`super::Buf`], so a memory-table change while a request is in the
//! kernel drops the old map only after the last operation on it completed.

/// Iovecs plus the owner of the memory they point to.
///
/// # Safety
///
/// Implementors promise that every iovec returned by [`IoVecBuf::iovecs`]
/// points to memory that stays mapped, readable and writable, for as long
/// as the value lives (even when the value is moved), that the slice
/// returned is the same on every call and does not move when the value
/// moves (it lives on the heap, e.g. in a `Vec`), and that no Rust reference to that
/// memory exists while the value lives (the memory is only ever touched
/// through raw pointers: the kernel, or volatile accesses). The memory may
/// be written concurrently by another party (a guest): the engine never
/// reads it as Rust data.
pub unsafe trait IoVecBuf: 'static {
    /// The iovecs, in order.
    fn iovecs(&self) -> &[libc::iovec];

    /// Total bytes described.
    fn total_len(&self) -> usize {
        self.iovecs().iter().map(|v| v.iov_len).sum()
    }
}

/// Fills every byte `iovecs` describes with zeroes (a read of a node that
/// reads as zeroes).
pub(crate) fn zero<B: IoVecBuf>(bufs: &mut B) {
    for v in bufs.iovecs() {
        // SAFETY: the IoVecBuf contract: the memory is mapped and writable
        // for as long as `bufs` lives, and no Rust reference aliases it;
        // write_bytes through the raw pointer is a plain store.
        unsafe { std::ptr::write_bytes(v.iov_base.cast::<u8>(), 0, v.iov_len) };
    }
}

/// Copies `src` into the memory `bufs` describes, from its start (a read
/// served through a bounce buffer). Copies at most `bufs.total_len()` bytes.
pub(crate) fn copy_in<B: IoVecBuf>(bufs: &mut B, src: &[u8]) {
    let mut at = 0usize;
    for v in bufs.iovecs() {
        let n = v.iov_len.min(src.len() - at);
        // SAFETY: the IoVecBuf contract: the iovec's memory is mapped and
        // writable while `bufs` lives and no Rust reference aliases it; `src`
        // is our own buffer, so the ranges cannot overlap, and `n` is within
        // both the iovec and what is left of `src`.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr().add(at), v.iov_base.cast::<u8>(), n) };
        at += n;
        if at == src.len() {
            break;
        }
    }
}

/// Copies the memory `bufs` describes into `dst`, from its start (a write
/// served through a bounce buffer). Copies at most `dst.len()` bytes.
pub(crate) fn copy_out<B: IoVecBuf>(bufs: &B, dst: &mut [u8]) {
    let mut at = 0usize;
    for v in bufs.iovecs() {
        let n = v.iov_len.min(dst.len() - at);
        // SAFETY: the IoVecBuf contract: the iovec's memory is mapped and
        // readable while `bufs` lives and no Rust reference aliases it; a
        // guest writing it meanwhile makes the bytes unspecified, never the
        // copy unsound from our side. `dst` is our own buffer (no overlap)
        // and `n` is within both.
        unsafe {
            std::ptr::copy_nonoverlapping(v.iov_base.cast::<u8>(), dst.as_mut_ptr().add(at), n)
        };
        at += n;
        if at == dst.len() {
            break;
        }
    }
}

/// The iovecs of `bufs` that come after its first `skip` bytes (for
/// resubmitting the rest of a short transfer).
pub(crate) fn tail(iovecs: &[libc::iovec], mut skip: usize) -> Vec<libc::iovec> {
    let mut out = Vec::with_capacity(iovecs.len());
    for v in iovecs {
        if skip >= v.iov_len {
            skip -= v.iov_len;
            continue;
        }
        out.push(libc::iovec {
            // wrapping_add: pointer arithmetic only, the result stays inside
            // the same iovec (skip < iov_len).
            iov_base: v.iov_base.cast::<u8>().wrapping_add(skip).cast(),
            iov_len: v.iov_len - skip,
        });
        skip = 0;
    }
    out
}

/// The iovec array an SQE should point at for `iovecs` after their first
/// `skip` bytes: `rest` holds a shortened copy when `skip > 0` (keep it
/// alive with the op), and the count is capped at `UIO_MAXIOV`.
pub(crate) fn sqe_iovecs(
    iovecs: &[libc::iovec],
    skip: usize,
) -> (Option<Vec<libc::iovec>>, *const libc::iovec, u32) {
    let rest = (skip > 0).then(|| tail(iovecs, skip));
    let (ptr, n) = match &rest {
        Some(r) => (r.as_ptr(), r.len()),
        None => (iovecs.as_ptr(), iovecs.len()),
    };
    (rest, ptr, n.min(libc::UIO_MAXIOV as usize) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_skips_whole_and_partial_iovecs() {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        let v = [
            libc::iovec {
                iov_base: a.as_mut_ptr().cast(),
                iov_len: 8,
            },
            libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: 8,
            },
        ];
        let t = tail(&v, 10);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].iov_len, 6);
        assert_eq!(t[0].iov_base as usize, b.as_ptr() as usize + 2);
        assert_eq!(tail(&v, 0).len(), 2);
        assert!(tail(&v, 16).is_empty());
    }
}
