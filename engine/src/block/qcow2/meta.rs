//! [`Meta`]: refcounts and the cluster allocator, held under the node's
//! metadata lock (see [`super`] for who takes it and when).
//!
//! # Ordering (why a kill -9 or a power cut leaves a consistent image)
//!
//! - A cluster's refcount is raised on disk, and synced, before any L2 or
//!   L1 entry that points to it is written: clusters are *reserved* in
//!   batches (one `fdatasync` per batch) and handed out from the batch.
//!   A crash leaks the unused rest of a batch (a leak, which `qemu-img
//!   check` reports and `-r leaks` reclaims), never a reference to a
//!   cluster whose refcount is 0.
//! - A refcount is lowered only after the entry that referenced the cluster
//!   was rewritten and synced: freed ranges wait in `pending` until the next
//!   flush has made the L2 updates durable. A freed cluster is not reused
//!   before then.
//! - A new refcount block is written and synced before the refcount table
//!   entry that points to it.

use std::collections::{HashMap, HashSet};

use super::entry::{refcount_get, refcount_max, refcount_set};
use super::image::{sync_read, Geometry, Image};
use crate::block::error::{BlockError, BlockResult};
use crate::block::BlockHandle;
use crate::buf::{pool, Buf};

/// Bytes reserved per batch (and so per `fdatasync` on the allocating path).
const RESERVE_BYTES: u64 = 32 << 20;
/// Freed ranges kept waiting for a flush at most; more forces one.
pub(crate) const MAX_PENDING: usize = 4096;

fn eio(what: &str) -> BlockError {
    BlockError::Io {
        op: "qcow2 metadata",
        offset: 0,
        source: std::io::Error::other(what.to_string()),
    }
}

/// Refcounts, allocator state, and the guest clusters being allocated.
pub(crate) struct Meta {
    geo: Geometry,
    reftable: Vec<u64>,
    reftable_offset: u64,
    /// Loaded refcount blocks, by refcount table index.
    blocks: HashMap<usize, Box<[u8]>>,
    /// No cluster below this is free.
    hint: u64,
    /// Clusters with refcount 1 on disk and synced, not handed out yet.
    reserved: std::ops::Range<u64>,
    /// Host byte ranges to unreference once the entries that referenced
    /// them are durable, with the flush generation they wait for.
    pending: Vec<(u64, u64, u64)>,
    /// Bumped by every flush; `pending` entries older than a completed
    /// flush may be applied.
    pub(crate) flush_gen: u64,
    /// Everything at or past this host offset was never written.
    written_end: u64,
    /// Guest clusters whose allocation is in flight.
    pub(crate) inflight: HashSet<u64>,
}

impl Meta {
    pub(crate) fn new(
        geo: &Geometry,
        reftable: Vec<u64>,
        reftable_offset: u64,
        file_size: u64,
    ) -> Meta {
        Meta {
            geo: *geo,
            reftable,
            reftable_offset,
            blocks: HashMap::new(),
            hint: 0,
            reserved: 0..0,
            pending: Vec::new(),
            flush_gen: 0,
            written_end: file_size.next_multiple_of(geo.cluster_size),
            inflight: HashSet::new(),
        }
    }

    fn locate(&self, cluster: u64) -> (usize, usize) {
        let per = self.geo.refblock_entries();
        ((cluster / per) as usize, (cluster % per) as usize)
    }

    /// Loads refcount block `r` (absent blocks read as all zero refcounts,
    /// and are created by [`Self::ensure_block`]).
    async fn load(&mut self, io: &BlockHandle, r: usize) -> BlockResult<Option<&mut [u8]>> {
        let Some(&off) = self.reftable.get(r) else {
            return Ok(None);
        };
        if off == 0 {
            return Ok(None);
        }
        if !self.blocks.contains_key(&r) {
            let cs = self.geo.cluster_size as usize;
            let (res, buf) = io.read_into(off, pool::check_out(cs), 0, cs).await;
            let data: Box<[u8]> = buf.as_slice().into();
            pool::check_in(buf);
            res?;
            self.blocks.insert(r, data);
        }
        Ok(self.blocks.get_mut(&r).map(|b| &mut b[..]))
    }

    async fn refcount(&mut self, io: &BlockHandle, cluster: u64) -> BlockResult<u64> {
        let (r, i) = self.locate(cluster);
        let order = self.geo.refcount_order;
        Ok(self
            .load(io, r)
            .await?
            .map_or(0, |b| refcount_get(b, order, i)))
    }

    /// Writes the part of block `r` holding entries `lo..hi`, in whole
    /// 4 KiB pages (or clusters, when smaller) so `O_DIRECT` files take it.
    async fn write_block(
        &self,
        io: &BlockHandle,
        r: usize,
        lo: usize,
        hi: usize,
    ) -> BlockResult<()> {
        let (Some(block), Some(&off)) = (self.blocks.get(&r), self.reftable.get(r)) else {
            return Ok(());
        };
        let page = self.geo.cluster_size.min(4096) as usize;
        let bits = 1usize << self.geo.refcount_order;
        let start = (lo * bits / 8) / page * page;
        let end = (hi * bits)
            .div_ceil(8)
            .next_multiple_of(page)
            .min(block.len());
        write_bytes(io, off + start as u64, &block[start..end]).await
    }

    /// Creates refcount block `r` in cluster `at`, which the block itself
    /// covers and counts: written and synced before the table points to it.
    async fn create_block(&mut self, io: &BlockHandle, r: usize, at: u64) -> BlockResult<()> {
        let cs = self.geo.cluster_size;
        if r >= self.reftable.len() {
            return Err(eio(
                "the refcount table is full (growing it is not implemented); convert the image with qemu-img",
            ));
        }
        let mut block = vec![0u8; cs as usize].into_boxed_slice();
        let (_, i) = self.locate(at);
        refcount_set(&mut block, self.geo.refcount_order, i, 1);
        write_bytes(io, at * cs, &block).await?;
        io.flush().await?;
        self.blocks.insert(r, block);
        self.reftable[r] = at * cs;
        let page = cs.min(4096) as usize;
        let start = (r * 8) / page * page;
        let end = ((r + 1) * 8)
            .next_multiple_of(page)
            .min(self.reftable.len() * 8);
        let bytes: Vec<u8> = self.reftable[start / 8..end / 8]
            .iter()
            .flat_map(|e| e.to_be_bytes())
            .collect();
        write_bytes(io, self.reftable_offset + start as u64, &bytes).await?;
        self.written_end = self.written_end.max((at + 1) * cs);
        Ok(())
    }

    /// Finds the first free cluster from the hint and the free clusters
    /// that follow it, `want` at most; returns (first, count ≥ 1). Refcount
    /// blocks missing on the way are created in the first cluster they
    /// cover, which ends a run.
    async fn find_free(&mut self, io: &BlockHandle, want: u64) -> BlockResult<(u64, u64)> {
        let mut c = self.hint.max(1);
        let mut run = 0u64;
        loop {
            let (r, _) = self.locate(c + run);
            if self.reftable.get(r).is_none_or(|&o| o == 0) {
                if run > 0 {
                    return Ok((c, run));
                }
                self.create_block(io, r, c).await?;
                c += 1;
                continue;
            }
            if self.refcount(io, c + run).await? != 0 {
                if run > 0 {
                    return Ok((c, run));
                }
                c += 1;
                continue;
            }
            run += 1;
            if run == want {
                return Ok((c, run));
            }
        }
    }

    /// Adds `delta` to the refcounts of clusters `first..first + n` (in
    /// memory and on disk, block by block).
    async fn update(
        &mut self,
        io: &BlockHandle,
        first: u64,
        n: u64,
        delta: i64,
    ) -> BlockResult<()> {
        let order = self.geo.refcount_order;
        let max = refcount_max(order);
        let mut c = first;
        while c < first + n {
            let (r, i0) = self.locate(c);
            let run = (self.geo.refblock_entries() - i0 as u64).min(first + n - c) as usize;
            let Some(block) = self.load(io, r).await? else {
                return Err(eio("refcount block missing for an allocated cluster"));
            };
            for i in i0..i0 + run {
                let v = refcount_get(block, order, i);
                let nv = match delta {
                    d if d >= 0 => v.checked_add(d as u64).filter(|&x| x <= max),
                    d => v.checked_sub(d.unsigned_abs()),
                };
                let Some(nv) = nv else {
                    return Err(eio("refcount overflow or underflow"));
                };
                refcount_set(block, order, i, nv);
            }
            self.write_block(io, r, i0, i0 + run).await?;
            if delta < 0 {
                self.hint = self.hint.min(c);
            }
            c += run as u64;
        }
        Ok(())
    }

    /// Hands out up to `n` contiguous clusters (at least one); returns the
    /// host offset of the first, how many, and from which host offset on
    /// they were never written.
    pub(crate) async fn alloc(&mut self, io: &BlockHandle, n: u64) -> BlockResult<(u64, u64, u64)> {
        let cs = self.geo.cluster_size;
        if self.reserved.is_empty() {
            let batch = n.max(RESERVE_BYTES / cs);
            let (first, count) = self.find_free(io, batch).await?;
            self.update(io, first, count, 1).await?;
            io.flush().await?;
            self.reserved = first..first + count;
            self.hint = first + count;
        }
        let first = self.reserved.start;
        let count = n.min(self.reserved.end - first);
        self.reserved.start += count;
        let fresh_from = self.written_end;
        self.written_end = self.written_end.max((first + count) * cs);
        Ok((first * cs, count, fresh_from))
    }

    /// Queues the unreference of a range some entry pointed to.
    pub(crate) fn free_later(&mut self, host: u64, len: u64) {
        self.pending.push((host, len, self.flush_gen));
    }

    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Applies the frees queued before flush generation `synced` (whose
    /// sync has completed); returns the host ranges now free, to discard.
    pub(crate) async fn apply_pending(
        &mut self,
        io: &BlockHandle,
        synced: u64,
    ) -> BlockResult<Vec<(u64, u64)>> {
        let cs = self.geo.cluster_size;
        let (ready, rest): (Vec<_>, Vec<_>) =
            self.pending.drain(..).partition(|&(_, _, g)| g < synced);
        self.pending = rest;
        let mut freed = Vec::new();
        for (host, len, _) in ready {
            let first = host / cs;
            let last = (host + len).div_ceil(cs);
            self.update(io, first, last - first, -1).await?;
            for c in first..last {
                if self.refcount(io, c).await? == 0 {
                    freed.push((c * cs, cs));
                }
            }
        }
        Ok(freed)
    }

    /// At close, without a ring: gives back the reserved clusters and
    /// applies every pending free, after syncing what referenced them.
    pub(crate) fn close_blocking(&mut self, img: &Image) -> BlockResult<()> {
        let cs = self.geo.cluster_size;
        img.sync_flush()?;
        let mut drops: Vec<(u64, u64)> = self
            .pending
            .drain(..)
            .map(|(h, l, _)| (h / cs, (h + l).div_ceil(cs)))
            .collect();
        if !self.reserved.is_empty() {
            drops.push((self.reserved.start, self.reserved.end));
            self.reserved = 0..0;
        }
        let order = self.geo.refcount_order;
        let mut dirty: HashSet<usize> = HashSet::new();
        for (first, end) in drops {
            for c in first..end {
                let (r, i) = self.locate(c);
                let Some(&off) = self.reftable.get(r) else {
                    continue;
                };
                if off == 0 {
                    continue;
                }
                let b = match self.blocks.entry(r) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let mut b = vec![0u8; cs as usize];
                        sync_read(&img.file, off, &mut b)?;
                        e.insert(b.into_boxed_slice())
                    }
                };
                let v = refcount_get(b, order, i);
                refcount_set(b, order, i, v.saturating_sub(1));
                dirty.insert(r);
            }
        }
        for r in dirty {
            if let (Some(b), Some(&off)) = (self.blocks.get(&r), self.reftable.get(r)) {
                img.sync_write(off, b)?;
            }
        }
        img.sync_flush()
    }
}

/// Writes `bytes` at `offset` through the file child's handle.
pub(crate) async fn write_bytes(io: &BlockHandle, offset: u64, bytes: &[u8]) -> BlockResult<()> {
    let mut buf: Buf = pool::check_out(bytes.len());
    buf.as_mut_slice().copy_from_slice(bytes);
    let len = bytes.len();
    let (r, buf) = io.write_from(offset, buf, 0, len, false).await;
    pool::check_in(buf);
    r
}
