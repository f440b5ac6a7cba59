//! [`DirtyBitmap`]: one bit per granule of a node, set by any iothread
//! without a lock.
//!
//! Bit `i` covers bytes `[i * granularity, (i + 1) * granularity)` of the
//! node; the last granule may be partial. Bits live in `AtomicU64` words
//! (`words.rs`: zeroed chunks, memory only where written, at most 2^38
//! bits): marking is a load and, only when a bit is still clear, one `fetch_or`,
//! so iothreads writing to the same region share the cache line instead of
//! bouncing it. Clearing, merging and reading are for the control thread
//! and the exports, and may run while writes mark.
//!
//! # Serialized form
//!
//! [`DirtyBitmap::to_le_bytes`] and [`DirtyBitmap::serialize_into`] give
//! the little-endian bit array of QEMU's qcow2 bitmap extension: bit `i` is
//! bit `i % 8` (least significant first) of byte `i / 8`; bytes past the
//! last granule are zero. A qcow2 bitmap table entry covers one cluster of
//! that array, i.e. `cluster_size * 8` granules from byte
//! `entry * cluster_size`.
//!
//! # Ordering
//!
//! Marks and the reads that must see them use `SeqCst`, which costs
//! nothing more than `Relaxed` for `lock or` and plain loads on x86; it is
//! what the two-phase marking in `track.rs` relies on.

use std::sync::atomic::{AtomicU64, Ordering};

use super::error::BitmapError;
use super::words::Words;

const SC: Ordering = Ordering::SeqCst;

/// The dirty bits of one bitmap. See the module docs.
#[derive(Debug)]
pub struct DirtyBitmap {
    shift: u32,
    size: u64,
    nbits: u64,
    words: Words,
}

/// A run of granules that are all dirty or all clean, in bytes, clipped to
/// the range asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirtyExtent {
    /// First byte.
    pub offset: u64,
    /// Length in bytes (≥ 1).
    pub len: u64,
    /// The granules were written to.
    pub dirty: bool,
}

/// Mask of bits `lo..hi` (0 ≤ lo < hi ≤ 64) of a word.
fn mask(lo: u64, hi: u64) -> u64 {
    let high = if hi >= 64 { u64::MAX } else { (1u64 << hi) - 1 };
    high & !((1u64 << lo) - 1)
}

impl DirtyBitmap {
    /// Smallest granularity (QEMU's `BDRV_SECTOR_SIZE`).
    pub const MIN_GRANULARITY: u64 = 512;
    /// Largest granularity (QMP's `granularity` is a `uint32`).
    pub const MAX_GRANULARITY: u64 = 1 << 31;

    /// A clean bitmap of a node of `size` bytes; `granularity` must be a
    /// power of two in [`Self::MIN_GRANULARITY`]..=[`Self::MAX_GRANULARITY`].
    pub fn new(size: u64, granularity: u64) -> Result<DirtyBitmap, BitmapError> {
        if !granularity.is_power_of_two()
            || !(Self::MIN_GRANULARITY..=Self::MAX_GRANULARITY).contains(&granularity)
        {
            return Err(BitmapError::BadGranularity);
        }
        let shift = granularity.trailing_zeros();
        let nbits = size.div_ceil(granularity);
        let words = Words::new(nbits)?;
        Ok(DirtyBitmap {
            shift,
            size,
            nbits,
            words,
        })
    }

    /// Bytes per bit.
    pub fn granularity(&self) -> u64 {
        1 << self.shift
    }

    /// Bytes covered (the node's size when the bitmap was made or resized).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of granules (bits).
    pub fn bits(&self) -> u64 {
        self.nbits
    }

    /// Granule range `[first, end)` touched by the byte range, clipped to
    /// the bitmap; `None` when empty.
    fn granules(&self, offset: u64, len: u64) -> Option<(u64, u64)> {
        if len == 0 || offset >= self.size {
            return None;
        }
        let last = offset.saturating_add(len - 1).min(self.size - 1);
        Some((offset >> self.shift, (last >> self.shift) + 1))
    }

    /// Calls `f(word, mask)` for every word overlapping bits `[first, end)`.
    fn for_words(&self, first: u64, end: u64, mut f: impl FnMut(&AtomicU64, u64)) {
        let mut bit = first;
        while bit < end {
            let w = bit / 64;
            let lo = bit % 64;
            let hi = (end - w * 64).min(64);
            if let Some(word) = self.words.get(w) {
                f(word, mask(lo, hi));
            }
            bit = (w + 1) * 64;
        }
    }

    /// Marks every granule that `[offset, offset + len)` touches. Lock-free;
    /// safe from any thread.
    pub fn set(&self, offset: u64, len: u64) {
        if let Some((first, end)) = self.granules(offset, len) {
            self.set_bits(first, end);
        }
    }

    fn set_bits(&self, first: u64, end: u64) {
        self.for_words(first, end, |word, m| {
            // Already dirty: leave the cache line shared.
            if word.load(SC) & m != m {
                word.fetch_or(m, SC);
            }
        });
    }

    /// Clears every granule that `[offset, offset + len)` touches.
    pub fn reset(&self, offset: u64, len: u64) {
        if let Some((first, end)) = self.granules(offset, len) {
            self.for_words(first, end, |word, m| {
                word.fetch_and(!m, SC);
            });
        }
    }

    /// Clears every bit.
    pub fn clear(&self) {
        for w in self.words.iter() {
            w.store(0, SC);
        }
    }

    /// Whether the granule holding byte `offset` is dirty.
    pub fn is_dirty(&self, offset: u64) -> bool {
        if offset >= self.size {
            return false;
        }
        self.bit(offset >> self.shift)
    }

    fn bit(&self, i: u64) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w.load(SC) & (1 << (i % 64)) != 0)
    }

    /// Number of dirty granules.
    pub fn dirty_bits(&self) -> u64 {
        self.words
            .iter()
            .map(|w| u64::from(w.load(SC).count_ones()))
            .sum()
    }

    /// Dirty bytes as QEMU counts them: dirty granules times the
    /// granularity (a dirty partial last granule counts whole).
    pub fn count(&self) -> u64 {
        self.dirty_bits() << self.shift
    }

    /// First bit in `[from, end)` whose value is `dirty`.
    fn find(&self, from: u64, end: u64, dirty: bool) -> Option<u64> {
        let mut bit = from;
        while bit < end {
            let w = bit / 64;
            let mut v = self.words.get(w)?.load(SC);
            if !dirty {
                v = !v;
            }
            v &= !((1u64 << (bit % 64)) - 1);
            if v != 0 {
                let found = w * 64 + u64::from(v.trailing_zeros());
                return (found < end).then_some(found);
            }
            bit = (w + 1) * 64;
        }
        None
    }

    /// Dirty and clean runs covering `[offset, end)` (clipped to the
    /// bitmap), in order.
    pub fn extents(&self, offset: u64, end: u64) -> Extents<'_> {
        Extents {
            bitmap: self,
            pos: offset,
            end: end.min(self.size),
        }
    }

    /// ORs `src` into `self`. Sizes must match; granularities may differ
    /// (a coarser source dirties every finer granule it covers).
    pub fn merge(&self, src: &DirtyBitmap) -> Result<(), BitmapError> {
        if src.size != self.size {
            return Err(BitmapError::SizeMismatch {
                dst: self.size,
                src: src.size,
            });
        }
        if src.shift == self.shift {
            for (d, s) in self.words.iter().zip(src.words.iter()) {
                let v = s.load(SC);
                if v != 0 {
                    d.fetch_or(v, SC);
                }
            }
        } else {
            for e in src.extents(0, src.size).filter(|e| e.dirty) {
                self.set(e.offset, e.len);
            }
        }
        Ok(())
    }

    /// A copy covering `size` bytes (for a resized node): granules past the
    /// old end are clean, granules past the new end are dropped.
    pub fn resized(&self, size: u64) -> Result<DirtyBitmap, BitmapError> {
        let new = DirtyBitmap::new(size, self.granularity())?;
        new.copy_from(self);
        Ok(new)
    }

    /// ORs the bits of `src` (same granularity, any size) into `self`, as
    /// far as both reach.
    pub(crate) fn copy_from(&self, src: &DirtyBitmap) {
        if src.shift != self.shift {
            return;
        }
        let common = self.nbits.min(src.nbits);
        for (i, (d, s)) in self.words.iter().zip(src.words.iter()).enumerate() {
            let base = i as u64 * 64;
            if base >= common {
                break;
            }
            let v = s.load(SC) & mask(0, (common - base).min(64));
            if v != 0 {
                d.fetch_or(v, SC);
            }
        }
    }

    /// Length of the serialized bit array in bytes.
    pub fn serialized_len(&self) -> u64 {
        self.nbits.div_ceil(8)
    }

    /// Copies bytes `[start, start + out.len())` of the serialized bit array
    /// into `out` (bytes past its end are zero).
    pub fn serialize_into(&self, start: u64, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            let pos = start + i as u64;
            *b = if pos >= self.serialized_len() {
                0
            } else {
                let word = self.words.get(pos / 8).map_or(0, |w| w.load(SC));
                word.to_le_bytes()[(pos % 8) as usize]
            };
        }
    }

    /// Sets the granules whose bits are set in `data`, read as bytes
    /// `[start, start + data.len())` of the serialized bit array (bits past
    /// the last granule are ignored; clear bits leave granules as they are).
    pub fn deserialize_from(&self, start: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let pos = start + i as u64;
            if b == 0 || pos >= self.serialized_len() {
                continue;
            }
            let first_bit = pos * 8;
            let m = u64::from(b) << ((pos % 8) * 8);
            let valid = mask(0, (self.nbits - (first_bit - first_bit % 64)).min(64));
            if let Some(w) = self.words.get(pos / 8) {
                w.fetch_or(m & valid, SC);
            }
        }
    }

    /// The whole serialized bit array.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = vec![0; self.serialized_len() as usize];
        self.serialize_into(0, &mut out);
        out
    }

    /// A bitmap from a serialized bit array (shorter data leaves the rest
    /// clean).
    pub fn from_le_bytes(
        size: u64,
        granularity: u64,
        data: &[u8],
    ) -> Result<DirtyBitmap, BitmapError> {
        let b = DirtyBitmap::new(size, granularity)?;
        b.deserialize_from(0, data);
        Ok(b)
    }
}

/// Iterator over the runs of a range; see [`DirtyBitmap::extents`].
#[derive(Debug)]
pub struct Extents<'a> {
    bitmap: &'a DirtyBitmap,
    pos: u64,
    end: u64,
}

impl Iterator for Extents<'_> {
    type Item = DirtyExtent;

    fn next(&mut self) -> Option<DirtyExtent> {
        if self.pos >= self.end {
            return None;
        }
        let b = self.bitmap;
        let bit = self.pos >> b.shift;
        let dirty = b.bit(bit);
        let end_bit = ((self.end - 1) >> b.shift) + 1;
        let run_end = match b.find(bit + 1, end_bit, !dirty) {
            Some(next) => (next << b.shift).min(self.end),
            None => self.end,
        };
        let e = DirtyExtent {
            offset: self.pos,
            len: run_end - self.pos,
            dirty,
        };
        self.pos = run_end;
        Some(e)
    }
}
