//! Buffers that io_uring operations own while the kernel uses them.
//!
//! An operation takes its buffer by value and hands it back with the result
//! ([`BufResult`]), on success and on error, so memory the kernel may still
//! write is never reachable from safe code while the operation is in flight.
//!
//! [`Buf`] is the one buffer type of the data path: page-aligned (so the same
//! buffer works with `O_DIRECT`), with a length (`len`, the initialised bytes)
//! and a capacity. Buffers come from a per-iothread [`pool`] so the hot path
//! does not hit the global allocator for every request. Small buffers come
//! first from the iothread's registered arena ([`fixed`]), which the ring
//! reads and writes with `READ_FIXED`/`WRITE_FIXED` (no page pinning per
//! operation). [`zeroed_words`] gives lazily zeroed atomic words (dirty
//! bitmaps).

mod aligned;
pub(crate) mod fixed;
pub(crate) mod iovec;
pub mod pool;
mod zeroed;

pub use aligned::Buf;
pub use iovec::IoVecBuf;
pub use zeroed::zeroed_words;

/// The result of an operation that owned a buffer, with the buffer handed back.
pub type BufResult<T, B> = (std::io::Result<T>, B);

/// Memory an operation can hand to the kernel.
///
/// # Safety
///
/// Implementors promise that `stable_ptr` stays valid and unmoved for as long
/// as the value lives, even when the value itself is moved (the bytes live on
/// the heap), and that `bytes_init <= bytes_total`.
pub unsafe trait IoBuf: 'static {
    /// Start of the memory.
    fn stable_ptr(&self) -> *const u8;
    /// Bytes that hold data (what a write sends).
    fn bytes_init(&self) -> usize;
    /// Bytes the memory has room for (what a read may fill).
    fn bytes_total(&self) -> usize;
}

/// Memory an operation can let the kernel write into.
///
/// # Safety
///
/// As [`IoBuf`]; and `stable_mut_ptr` is valid for writes of `bytes_total`
/// bytes, and `set_init(n)` is only called after the kernel wrote `n` bytes.
pub unsafe trait IoBufMut: IoBuf {
    /// Start of the memory, for writing.
    fn stable_mut_ptr(&mut self) -> *mut u8;
    /// Records that the first `n` bytes now hold data.
    ///
    /// # Safety
    ///
    /// The first `n` bytes must have been written.
    unsafe fn set_init(&mut self, n: usize);
}

// SAFETY: a Vec's heap allocation does not move when the Vec is moved, and
// len <= capacity always holds.
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: as for IoBuf; the spare capacity is writable, and set_init only
// grows len over bytes the caller promises were written.
unsafe impl IoBufMut for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, n: usize) {
        if n > self.len() {
            // SAFETY: the caller promises the first n bytes were written, and
            // n <= capacity because the kernel was given bytes_total().
            unsafe { self.set_len(n) };
        }
    }
}
