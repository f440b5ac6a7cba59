//! [`Words`]: the atomic words of a bitmap, in chunks of 256 KiB that come
//! zeroed from the allocator (untouched pages cost no memory), with a
//! bound on the total so no request can make the daemon allocate without
//! limit.

use std::sync::atomic::AtomicU64;

use super::error::BitmapError;
use crate::buf::zeroed_words;

/// Words per chunk (256 KiB: above glibc's mmap threshold, so a chunk is
/// fresh zero pages).
const CHUNK_SHIFT: u32 = 15;
const CHUNK: usize = 1 << CHUNK_SHIFT;
/// Most bits a bitmap may have: 2^38 (32 GiB of words, 2 EiB of node at
/// 64 KiB granules, 128 TiB at 512 B).
pub(crate) const MAX_BITS: u64 = 1 << 38;

/// The words. See the module docs.
#[derive(Debug)]
pub(crate) struct Words {
    chunks: Box<[Box<[AtomicU64]>]>,
}

impl Words {
    /// Zeroed words for `bits` bits.
    pub(crate) fn new(bits: u64) -> Result<Words, BitmapError> {
        if bits > MAX_BITS {
            return Err(BitmapError::TooLarge);
        }
        let mut left = usize::try_from(bits.div_ceil(64)).map_err(|_| BitmapError::TooLarge)?;
        let mut chunks = Vec::with_capacity(left.div_ceil(CHUNK));
        while left > 0 {
            let n = left.min(CHUNK);
            chunks.push(zeroed_words(n).ok_or(BitmapError::TooLarge)?);
            left -= n;
        }
        Ok(Words {
            chunks: chunks.into_boxed_slice(),
        })
    }

    /// Word `i`.
    #[inline]
    pub(crate) fn get(&self, i: u64) -> Option<&AtomicU64> {
        let i = usize::try_from(i).ok()?;
        self.chunks.get(i >> CHUNK_SHIFT)?.get(i & (CHUNK - 1))
    }

    /// Every word, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &AtomicU64> {
        self.chunks.iter().flat_map(|c| c.iter())
    }
}
