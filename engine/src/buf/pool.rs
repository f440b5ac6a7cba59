//! A per-iothread free list of [`Buf`]s, by power-of-two size class.
//!
//! Requests of the same size recur (4 KiB reads, 1 MiB sequential I/O), so
//! returning buffers here and checking them out again avoids a page-aligned
//! allocation and a zeroing pass per request. The pool is thread-local: no
//! lock, no sharing between iothreads. A buffer checked out of the pool may
//! hold bytes of an earlier request; callers that send a buffer to a peer
//! always fill it first (a read fills all of it, or the driver zeroes the tail).

use std::cell::RefCell;

use super::Buf;

/// Smallest class: one page.
const MIN_SHIFT: u32 = 12;
/// Largest class kept: 32 MiB (the NBD maximum request); larger are not pooled.
const MAX_SHIFT: u32 = 25;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;
/// Bytes kept idle per class at most, so a burst of large requests does not
/// pin memory for ever.
const IDLE_BYTES_PER_CLASS: usize = 16 << 20;

thread_local! {
    static POOL: RefCell<[Vec<Buf>; CLASSES]> = RefCell::new(Default::default());
}

fn class_of(cap: usize) -> Option<usize> {
    let shift = cap
        .max(1)
        .next_power_of_two()
        .trailing_zeros()
        .max(MIN_SHIFT);
    (shift <= MAX_SHIFT).then(|| (shift - MIN_SHIFT) as usize)
}

/// A buffer of length `len` (contents unspecified but initialised).
pub fn check_out(len: usize) -> Buf {
    if let Some(mut b) = super::fixed::take(len) {
        b.set_len(len);
        return b;
    }
    let mut buf = match class_of(len) {
        Some(class) => POOL
            .with(|p| p.borrow_mut()[class].pop())
            .unwrap_or_else(|| Buf::with_capacity(1usize << (class as u32 + MIN_SHIFT))),
        None => Buf::with_capacity(len),
    };
    buf.set_len(len);
    buf
}

/// Gives a buffer back for reuse on this thread.
pub fn check_in(buf: Buf) {
    if buf.is_fixed() {
        // Dropping it returns the slot to the arena.
        return;
    }
    let cap = buf.capacity();
    if !cap.is_power_of_two() {
        return;
    }
    if let Some(class) = class_of(cap) {
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            let list = &mut p[class];
            if (list.len() + 1) * cap <= IDLE_BYTES_PER_CLASS {
                list.push(buf);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_by_class() {
        let b = check_out(5000);
        assert_eq!(b.len(), 5000);
        assert_eq!(b.capacity(), 8192);
        let p = b.as_slice().as_ptr();
        check_in(b);
        let c = check_out(8000);
        assert_eq!(c.as_slice().as_ptr(), p);
        assert_eq!(check_out(64 << 20).len(), 64 << 20);
    }
}
