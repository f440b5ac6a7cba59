//! Zero-filled arrays of atomic words from the allocator's zeroing path
//! (`calloc`): large ones are fresh zero pages the kernel maps on first
//! touch, so a big dirty bitmap costs memory only where it is written.

use std::alloc::{alloc_zeroed, Layout};
use std::sync::atomic::AtomicU64;

/// `n` atomic words, all zero; `None` when the allocation fails.
pub fn zeroed_words(n: usize) -> Option<Box<[AtomicU64]>> {
    if n == 0 {
        return Some(Box::new([]));
    }
    let layout = Layout::array::<AtomicU64>(n).ok()?;
    // SAFETY: `layout` has a non-zero size (n > 0, and Layout::array checked
    // that n * 8 does not overflow isize).
    let p = unsafe { alloc_zeroed(layout) }.cast::<AtomicU64>();
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` comes from the global allocator with the layout of
    // `[AtomicU64; n]`, which is the layout `Box<[AtomicU64]>` frees with;
    // every byte is zero, and `AtomicU64` has the same in-memory
    // representation as `u64`, so each element is a valid `AtomicU64(0)`;
    // nothing else holds the pointer.
    Some(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, n)) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn words_are_zero_and_usable() {
        for n in [0, 1, 7, 1 << 16] {
            let w = zeroed_words(n).expect("alloc");
            assert_eq!(w.len(), n);
            assert!(w.iter().all(|x| x.load(Ordering::Relaxed) == 0));
            if let Some(last) = w.last() {
                last.fetch_or(5, Ordering::Relaxed);
                assert_eq!(last.load(Ordering::Relaxed), 5);
            }
        }
    }
}
