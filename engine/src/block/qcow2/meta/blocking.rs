//! Refcount changes without a ring, for the bitmaps' store at close and
//! their removal from the control thread ([`crate::block::qcow2::bitmaps`]):
//! positioned I/O on the file child's descriptor while the caller holds
//! the metadata (so no allocating write runs meanwhile).
//!
//! The same ordering rules as the ring path hold (see [`super`]): a new
//! cluster's refcount is written and synced before anything points to it,
//! and a refcount is lowered only once nothing on disk points to the
//! cluster any more.

use std::collections::hash_map::Entry;

use super::{eio, Meta};
use crate::block::error::BlockResult;
use crate::block::qcow2::entry::{refcount_get, refcount_set};
use crate::block::qcow2::image::{sync_read, Image};

impl Meta {
    /// Refcount block `r`, read from the image on first use; `None` when
    /// the refcount table has no block there.
    fn block_blocking(&mut self, img: &Image, r: usize) -> BlockResult<Option<&mut Box<[u8]>>> {
        let Some(&off) = self.reftable.get(r) else {
            return Ok(None);
        };
        if off == 0 {
            return Ok(None);
        }
        Ok(Some(match self.blocks.entry(r) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let mut b = vec![0u8; self.geo.cluster_size as usize];
                sync_read(&img.file, off, &mut b)?;
                e.insert(b.into_boxed_slice())
            }
        }))
    }

    /// Adds `delta` (±1) to the refcount of every cluster in `clusters`
    /// and writes the blocks that changed (not synced: the caller syncs).
    pub(crate) fn adjust_blocking(
        &mut self,
        img: &Image,
        clusters: impl IntoIterator<Item = u64>,
        delta: i64,
        saturate: bool,
    ) -> BlockResult<()> {
        let order = self.geo.refcount_order;
        let max = crate::block::qcow2::entry::refcount_max(order);
        let mut dirty = std::collections::BTreeSet::new();
        for c in clusters {
            let (r, i) = self.locate(c);
            let Some(b) = self.block_blocking(img, r)? else {
                if saturate {
                    continue;
                }
                return Err(eio("refcount block missing for an allocated cluster"));
            };
            let v = refcount_get(b, order, i);
            let nv = if delta >= 0 {
                v.checked_add(delta as u64).filter(|&x| x <= max)
            } else {
                v.checked_sub(delta.unsigned_abs())
            };
            let nv = match nv {
                Some(nv) => nv,
                None if saturate => v.saturating_sub(delta.unsigned_abs()),
                None => return Err(eio("refcount overflow or underflow")),
            };
            refcount_set(b, order, i, nv);
            dirty.insert(r);
            if delta < 0 {
                self.hint = self.hint.min(c);
            }
        }
        for r in dirty {
            if let (Some(b), Some(&off)) = (self.blocks.get(&r), self.reftable.get(r)) {
                img.sync_write(off, b)?;
            }
        }
        Ok(())
    }

    /// Allocates `n` contiguous clusters (refcount 1, written but not
    /// synced: the caller syncs before anything reachable points to them);
    /// returns the host offset of the first. Refcount blocks missing on
    /// the way are created in the first cluster they cover, as on the ring.
    pub(crate) fn alloc_blocking(&mut self, img: &Image, n: u64) -> BlockResult<u64> {
        let cs = self.geo.cluster_size;
        let order = self.geo.refcount_order;
        let mut c = self.hint.max(1);
        let mut run = 0u64;
        while run < n {
            let (r, i) = self.locate(c + run);
            if self.reftable.get(r).is_none_or(|&o| o == 0) {
                self.create_block_blocking(img, r, c + run)?;
                c += run + 1;
                run = 0;
                continue;
            }
            let free = match self.block_blocking(img, r)? {
                Some(b) => refcount_get(b, order, i) == 0,
                None => false,
            };
            if free {
                run += 1;
            } else {
                c += run + 1;
                run = 0;
            }
        }
        self.adjust_blocking(img, c..c + n, 1, false)?;
        // Data lands here: the ring path must not take it for never written.
        self.written_end = self.written_end.max((c + n) * cs);
        Ok(c * cs)
    }

    fn create_block_blocking(&mut self, img: &Image, r: usize, at: u64) -> BlockResult<()> {
        let cs = self.geo.cluster_size;
        if r >= self.reftable.len() {
            return Err(eio(
                "the refcount table is full (growing it is not implemented); convert the image with qemu-img",
            ));
        }
        let mut block = vec![0u8; cs as usize].into_boxed_slice();
        let (_, i) = self.locate(at);
        refcount_set(&mut block, self.geo.refcount_order, i, 1);
        img.sync_write(at * cs, &block)?;
        img.sync_flush()?;
        self.blocks.insert(r, block);
        self.reftable[r] = at * cs;
        img.sync_write(
            self.reftable_offset + r as u64 * 8,
            &(at * cs).to_be_bytes(),
        )?;
        img.sync_flush()?;
        self.written_end = self.written_end.max((at + 1) * cs);
        Ok(())
    }
}
