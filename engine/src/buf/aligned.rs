//! [`Buf`]: a page-aligned heap buffer, usable for `O_DIRECT` and sockets alike.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

use super::{IoBuf, IoBufMut};

/// Alignment of every [`Buf`]: a page, which covers every logical block size
/// `O_DIRECT` can ask for.
pub const BUF_ALIGN: usize = 4096;

/// A page-aligned, fixed-capacity byte buffer with a fill length.
///
/// The bytes past `len` are zeroed at allocation (so a short read never leaks
/// old data of another client when the pool reuses memory: see
/// [`super::pool`]), hence `capacity` bytes are always initialised memory and
/// `set_len` is safe.
pub struct Buf {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
    /// Where the memory comes from: the heap, or a slot of the iothread's
    /// registered arena (see [`super::fixed`]).
    origin: Origin,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Heap,
    Fixed { arena: u32, index: u16 },
}

// SAFETY: Buf owns its allocation exclusively, like Vec<u8>.
unsafe impl Send for Buf {}

impl Buf {
    /// A zeroed buffer with room for `cap` bytes (at least one page) and length 0.
    pub fn with_capacity(cap: usize) -> Buf {
        let cap = cap.max(1).next_multiple_of(BUF_ALIGN);
        let layout = Self::layout(cap);
        // SAFETY: layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        Buf {
            ptr,
            cap,
            len: 0,
            origin: Origin::Heap,
        }
    }

    /// A buffer over slot `index` of registered arena `arena`.
    ///
    /// # Safety
    ///
    /// `ptr` is valid for `cap` initialised bytes, page-aligned, owned by the
    /// arena slot, and nobody else uses the slot until the Buf is dropped.
    pub(crate) unsafe fn from_fixed(ptr: NonNull<u8>, cap: usize, arena: u32, index: u16) -> Buf {
        Buf {
            ptr,
            cap,
            len: 0,
            origin: Origin::Fixed { arena, index },
        }
    }

    /// The registered-buffer index, when the memory is in this iothread's arena.
    pub fn fixed_index(&self) -> Option<u16> {
        match self.origin {
            Origin::Fixed { arena, index } if super::fixed::is_current(arena) => Some(index),
            _ => None,
        }
    }

    /// True when the memory belongs to a registered arena.
    pub(crate) fn is_fixed(&self) -> bool {
        self.origin != Origin::Heap
    }

    /// A zeroed buffer of length `len`.
    pub fn zeroed(len: usize) -> Buf {
        let mut b = Buf::with_capacity(len);
        b.len = len;
        b
    }

    fn layout(cap: usize) -> Layout {
        // cap is a non-zero multiple of BUF_ALIGN, a power of two, so this
        // only fails for sizes no allocator could serve anyway.
        Layout::from_size_align(cap, BUF_ALIGN).unwrap_or_else(|_| Layout::new::<[u8; BUF_ALIGN]>())
    }

    /// Initialised bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no byte is initialised.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room in bytes.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Sets the length; bytes between the old and the new length keep whatever
    /// they held (never uninitialised memory, see the type docs).
    ///
    /// # Panics
    ///
    /// If `len > capacity()`: a caller bug, never driven by peer input because
    /// callers size buffers before filling them.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.cap, "Buf::set_len beyond capacity");
        self.len = len;
    }

    /// Zeroes `range` of the initialised bytes.
    pub fn zero(&mut self, range: std::ops::Range<usize>) {
        self.as_mut_slice()[range].fill(0);
    }

    /// The initialised bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for cap >= len bytes, all initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The initialised bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for cap >= len bytes, all initialised, and
        // &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// All `capacity()` bytes, mutable (for parsing into spare room).
    pub fn spare_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for cap bytes, all initialised (zeroed at
        // allocation), and &mut self gives exclusive access.
        let all = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) };
        &mut all[self.len..]
    }

    /// Copies `src` in at the end.
    ///
    /// # Panics
    ///
    /// If it does not fit (a caller bug).
    pub fn extend_from_slice(&mut self, src: &[u8]) {
        let end = self.len + src.len();
        assert!(end <= self.cap, "Buf::extend_from_slice beyond capacity");
        self.spare_mut()[..src.len()].copy_from_slice(src);
        self.len = end;
    }

    /// Moves bytes `from..len` to the start and shortens the buffer to them.
    pub fn consume_front(&mut self, from: usize) {
        let from = from.min(self.len);
        // SAFETY: ptr is valid for cap bytes; copy within the same allocation.
        let all = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) };
        all.copy_within(from..self.len, 0);
        self.len -= from;
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        match self.origin {
            // SAFETY: allocated in with_capacity with this very layout.
            Origin::Heap => unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.cap)) },
            Origin::Fixed { arena, index } => super::fixed::release(arena, index),
        }
    }
}

impl std::fmt::Debug for Buf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buf")
            .field("len", &self.len)
            .field("cap", &self.cap)
            .finish()
    }
}

// SAFETY: the allocation is on the heap and never moves; len <= cap.
unsafe impl IoBuf for Buf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
    fn bytes_total(&self) -> usize {
        self.cap
    }
}

// SAFETY: the whole capacity is writable memory owned by this Buf.
unsafe impl IoBufMut for Buf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    unsafe fn set_init(&mut self, n: usize) {
        if n > self.len {
            self.len = n.min(self.cap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        let mut b = Buf::with_capacity(100);
        assert_eq!(b.capacity(), BUF_ALIGN);
        assert_eq!(b.stable_ptr() as usize % BUF_ALIGN, 0);
        assert!(b.spare_mut().iter().all(|&x| x == 0));
        b.extend_from_slice(b"hello");
        assert_eq!(b.as_slice(), b"hello");
        b.consume_front(2);
        assert_eq!(b.as_slice(), b"llo");
    }
}
