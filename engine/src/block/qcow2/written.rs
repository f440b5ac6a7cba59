//! [`Written`]: which parts of the clusters this node allocated fresh are
//! written, so reads of the rest return zeroes without touching the file.
//!
//! An allocating write of 4 KiB into a fresh cluster writes only its 4 KiB
//! ([`super::alloc`]): the rest of the host cluster stays a hole of the
//! file and reads as zeroes. Reading such a hole through the page cache is
//! costly: every miss allocates and zero-fills pages, and the kernel reads
//! ahead (up to 128 KiB of zero-filled pages per miss once earlier pages
//! are cached), which is most of the CPU of a random read of a sparse
//! image. QEMU avoids it by asking the file's block status (`SEEK_DATA`)
//! of every read; we know the answer without a system call: while a guest
//! cluster keeps the mapping a fresh allocation gave it, the node records
//! which 1/64ths of it were written.
//!
//! One `u64` per guest cluster, in tables made only for L2 tables that
//! had a fresh partial allocation (the same size as the L2 table). The
//! value 0 means "not tracked": read the file. Otherwise bit `i` set means
//! 1/64th `i` may hold data; a clear bit is known to read as zeroes.
//!
//! # Ordering
//!
//! - A cluster's value is set (0, or the bits of the allocating write)
//!   before its new L2 entry is published in memory ([`super::table`]), so
//!   a reader that sees the entry sees that value or a later one.
//! - A write in place into a tracked cluster sets its bits before its I/O
//!   is issued, so once it completes no reader takes its bytes for zeroes.
//! - Bits are only ever added while a mapping lasts; the value is replaced
//!   only with the mapping. Nothing is on disk: after a reopen every
//!   cluster is untracked and reads go to the file, as before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use super::image::Geometry;

/// See the module docs.
pub(crate) struct Written {
    tables: Box<[OnceLock<Box<[AtomicU64]>>]>,
    /// log2 of the bytes one bit stands for.
    unit_bits: u32,
    geo: Geometry,
}

impl Written {
    pub(crate) fn new(geo: &Geometry, l1_len: usize) -> Written {
        Written {
            tables: (0..l1_len).map(|_| OnceLock::new()).collect(),
            unit_bits: geo.cluster_bits.saturating_sub(6),
            geo: *geo,
        }
    }

    fn slot(&self, guest: u64) -> Option<&AtomicU64> {
        self.tables
            .get(self.geo.l1_index(guest))?
            .get()?
            .get(self.geo.l2_index(guest))
    }

    /// The bits of bytes `lo..hi` of a cluster (`lo < hi <= cluster size`).
    pub(crate) fn bits(&self, lo: u64, hi: u64) -> u64 {
        let first = (lo >> self.unit_bits).min(63);
        let last = ((hi.max(lo + 1) - 1) >> self.unit_bits).min(63);
        let n = last - first + 1;
        let ones = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
        ones << first
    }

    /// Sets the value of the cluster holding `guest` for the mapping about
    /// to be published: `bits` of a fresh partial write, or 0 (untracked).
    pub(crate) fn set(&self, guest: u64, bits: u64) {
        if bits == u64::MAX {
            return self.set(guest, 0);
        }
        let Some(slot) = self.tables.get(self.geo.l1_index(guest)) else {
            return;
        };
        let table = if bits == 0 {
            match slot.get() {
                Some(table) => table,
                None => return,
            }
        } else {
            slot.get_or_init(|| {
                (0..1usize << self.geo.l2_bits)
                    .map(|_| AtomicU64::new(0))
                    .collect()
            })
        };
        if let Some(e) = table.get(self.geo.l2_index(guest)) {
            e.store(bits, Ordering::Release);
        }
    }

    /// Records a write of bytes `lo..hi` of the cluster holding `guest`
    /// (a no-op when it is not tracked). Call before issuing the write.
    pub(crate) fn mark(&self, guest: u64, lo: u64, hi: u64) {
        let Some(e) = self.slot(guest) else {
            return;
        };
        let add = self.bits(lo, hi);
        let mut v = e.load(Ordering::Acquire);
        while v != 0 && v & add != add {
            match e.compare_exchange_weak(v, v | add, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(now) => v = now,
            }
        }
    }

    /// True when bytes `lo..hi` of the cluster holding `guest` are known
    /// never written (they read as zeroes).
    pub(crate) fn unwritten(&self, guest: u64, lo: u64, hi: u64) -> bool {
        self.slot(guest).is_some_and(|e| {
            let v = e.load(Ordering::Acquire);
            v != 0 && v & self.bits(lo, hi) == 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo() -> Geometry {
        Geometry {
            cluster_bits: 16,
            cluster_size: 1 << 16,
            l2_bits: 13,
            size: 4 << 30,
            version: 3,
            refcount_order: 4,
        }
    }

    #[test]
    fn bits_cover_the_units_a_range_touches() {
        let w = Written::new(&geo(), 8);
        assert_eq!(w.bits(0, 1024), 1);
        assert_eq!(w.bits(0, 1025), 0b11);
        assert_eq!(w.bits(1023, 1025), 0b11);
        assert_eq!(w.bits(4096, 8192), 0xf0);
        assert_eq!(w.bits(0, 1 << 16), u64::MAX);
        assert_eq!(w.bits(63 << 10, 1 << 16), 1 << 63);
    }

    #[test]
    fn untracked_clusters_are_never_taken_for_zeroes() {
        let w = Written::new(&geo(), 8);
        let g = 5 << 16;
        assert!(!w.unwritten(g, 0, 4096));
        // Marking an untracked cluster does not start tracking it.
        w.mark(g, 0, 4096);
        assert!(!w.unwritten(g, 8192, 12288));
        // A whole-cluster write is no partial allocation.
        w.set(g, w.bits(0, 1 << 16));
        assert!(!w.unwritten(g, 8192, 12288));
    }

    #[test]
    fn tracked_clusters_know_their_written_parts() {
        let w = Written::new(&geo(), 8);
        let g = (1 << 29) + (7 << 16);
        w.set(g, w.bits(4096, 8192));
        assert!(w.unwritten(g, 0, 4096));
        assert!(!w.unwritten(g, 4096, 8192));
        assert!(!w.unwritten(g, 0, 8192));
        w.mark(g, 12288, 12289);
        assert!(!w.unwritten(g, 12288, 16384));
        assert!(w.unwritten(g, 16384, 20480));
        // A neighbour in the same table is untracked.
        assert!(!w.unwritten(g + (1 << 16), 0, 4096));
        // A new mapping replaces the value.
        w.set(g, 0);
        assert!(!w.unwritten(g, 0, 4096));
        // Past the L1 table: ignored.
        w.set(64 << 29, 1);
        assert!(!w.unwritten(64 << 29, 4096, 8192));
    }
}
