//! The write side of [`Qcow2Handle`]: in-place writes, allocating writes
//! with copy-on-write, discard, write-zeroes and flush.
//!
//! # Allocating writes
//!
//! ```text
//!  lock meta ─ wait out clusters in flight ─ allocate host clusters ─ mark in flight ─ unlock
//!      data and COW writes (no lock: other writers go on)
//!  lock meta ─ write L2 (new table: write, sync, then L1) ─ publish entries ─ unmark ─ unlock
//! ```
//!
//! Entries are published in memory only once their table is on disk, so a
//! writer on another iothread that then writes in place (and acknowledges,
//! with FUA) never depends on an L2 update still in flight.

use std::sync::atomic::{AtomicU64, Ordering};

use super::data::{eio, Qcow2Handle};
use super::entry::{Mapping, COPIED, OFFSET_MASK, ZERO};
use super::meta::{write_bytes, Meta, MAX_PENDING};
use super::sync::MetaGuard;
use crate::block::error::{BlockError, BlockResult};
use crate::buf::{pool, Buf};

/// One guest cluster of an allocating write.
#[derive(Clone, Copy)]
struct Slot {
    /// Guest offset of the cluster.
    guest: u64,
    old: Mapping,
    /// Where the data goes.
    host: u64,
    /// The host cluster is new (the old entry's reference goes).
    new: bool,
    /// Never written: parts the request does not cover read as zeroes.
    fresh: bool,
}

impl Qcow2Handle {
    /// The host cluster a write to `guest` (mapped as `m`) may go to in
    /// place: data only this image's active table references.
    fn writable_in_place(&self, guest: u64, m: Mapping) -> Option<u64> {
        let own_table = self
            .img
            .l1
            .get(self.img.geo.l1_index(guest))
            .is_some_and(|e| e.load(Ordering::Acquire) & COPIED != 0);
        match m {
            // Cluster 0 holds the header: an entry pointing there is corrupt.
            Mapping::Data { host, copied: true }
                if own_table && host >= self.img.geo.cluster_size =>
            {
                Some(host)
            }
            _ => None,
        }
    }

    /// Writes `buf[from..from + len]` at guest `offset`.
    pub(crate) async fn write_from(
        &self,
        offset: u64,
        mut buf: Buf,
        from: usize,
        len: usize,
        fua: bool,
    ) -> (BlockResult<()>, Buf) {
        let len = len as u64;
        let mut pos = 0u64;
        let mut allocated = false;
        while pos < len {
            let guest = offset + pos;
            let m = match self.mapping(guest).await {
                Ok(m) => m,
                Err(e) => return (Err(e), buf),
            };
            let first = (self.img.geo.cluster_size - self.img.geo.in_cluster(guest)).min(len - pos);
            let at = from + pos as usize;
            let (r, b, n) = match self.writable_in_place(guest, m) {
                Some(host) => {
                    let start = host + self.img.geo.in_cluster(guest);
                    let cs = self.img.geo.cluster_size;
                    let mut n = first;
                    while n < len - pos {
                        match self
                            .mapping_now(guest + n)
                            .and_then(|m| self.writable_in_place(guest + n, m))
                        {
                            Some(h) if h == start + n => n += cs.min(len - pos - n),
                            _ => break,
                        }
                    }
                    let (r, b) = self.file.write_from(start, buf, at, n as usize, fua).await;
                    (r, b, n)
                }
                None => {
                    let cs = self.img.geo.cluster_size;
                    let mut n = first;
                    while n < len - pos {
                        match self.mapping_now(guest + n) {
                            Some(m) if self.writable_in_place(guest + n, m).is_none() => {
                                n += cs.min(len - pos - n)
                            }
                            _ => break,
                        }
                    }
                    allocated = true;
                    let (r, b) = self.allocating_write(guest, buf, at, n).await;
                    (r, b, n)
                }
            };
            buf = b;
            if let Err(e) = r {
                return (Err(e), buf);
            }
            pos += n;
        }
        if fua && allocated {
            // Data, refcounts and L2 entries are all written: one sync makes
            // the whole write durable.
            if let Err(e) = self.file.flush().await {
                return (Err(e), buf);
            }
        }
        (Ok(()), buf)
    }

    /// Locks the metadata once none of `clusters` (guest offsets) is in flight.
    async fn lock_clusters(
        &self,
        clusters: impl Iterator<Item = u64> + Clone,
    ) -> MetaGuard<'_, Meta> {
        let cs = self.img.geo.cluster_size;
        loop {
            let seen = self.img.settled.generation();
            let meta = self.img.meta.lock().await;
            if !clusters.clone().any(|g| meta.inflight.contains(&(g / cs))) {
                return meta;
            }
            drop(meta);
            self.img.settled.changed(seen).await;
        }
    }

    /// Writes `n` bytes from `buf[at..]` to guest `guest`, allocating.
    async fn allocating_write(
        &self,
        guest: u64,
        buf: Buf,
        at: usize,
        n: u64,
    ) -> (BlockResult<()>, Buf) {
        let geo = self.img.geo;
        let cs = geo.cluster_size;
        let first_cluster = guest & !(cs - 1);
        let end = guest + n;
        let clusters = (first_cluster..end).step_by(cs as usize);
        // Phase 1: decide and allocate.
        let mut slots = Vec::new();
        {
            let mut meta = self.lock_clusters(clusters.clone()).await;
            let mut needed = 0u64;
            for g in clusters.clone() {
                let old = match self.mapping(g).await {
                    Ok(m) => m,
                    Err(e) => return (Err(e), buf),
                };
                let reuse = match old {
                    Mapping::Data { host, copied: true } => Some(host),
                    Mapping::Zero {
                        host: Some(h),
                        copied: true,
                    } => Some(h),
                    _ => None,
                };
                let (host, new) = match reuse {
                    Some(h) if h >= cs => (h, false),
                    _ => {
                        needed += 1;
                        (0, true)
                    }
                };
                slots.push(Slot {
                    guest: g,
                    old,
                    host,
                    new,
                    fresh: false,
                });
            }
            let mut chunk = (0u64, 0u64, 0u64);
            for k in 0..slots.len() {
                if !slots[k].new {
                    continue;
                }
                if chunk.1 == 0 {
                    chunk = match meta.alloc(&self.file, needed).await {
                        Ok(v) => v,
                        Err(e) => {
                            // Clusters already handed out go back after a flush.
                            for s in slots[..k].iter().filter(|s| s.new) {
                                meta.free_later(s.host, cs);
                            }
                            return (Err(e), buf);
                        }
                    };
                }
                let (host, _, fresh_from) = chunk;
                slots[k].host = host;
                slots[k].fresh = host >= fresh_from;
                chunk.0 += cs;
                chunk.1 -= 1;
                needed -= 1;
            }
            for s in &slots {
                meta.inflight.insert(s.guest / cs);
            }
        }
        // Phase 2: the data, with copy-on-write of what the request leaves.
        let (r, buf) = self.write_slots(&slots, guest, buf, at, n).await;
        // Phase 3: the entries.
        let mut meta = self.img.meta.lock().await;
        let res = match r {
            Ok(()) => self.publish(&mut meta, &slots).await,
            Err(e) => {
                // Nothing references the new clusters yet. (A failed publish
                // may have written some entries: those clusters leak instead.)
                for s in slots.iter().filter(|s| s.new) {
                    meta.free_later(s.host, cs);
                }
                Err(e)
            }
        };
        for s in &slots {
            meta.inflight.remove(&(s.guest / cs));
        }
        drop(meta);
        self.img.settled.notify();
        (res, buf)
    }

    /// The old contents of `s` outside the request read as zeroes.
    fn zero_source(&self, s: Slot) -> bool {
        match s.old {
            Mapping::Zero { .. } => true,
            Mapping::Unallocated => self.backing.as_ref().is_none_or(|b| b.size() <= s.guest),
            _ => false,
        }
    }

    async fn write_slots(
        &self,
        slots: &[Slot],
        guest: u64,
        mut buf: Buf,
        at: usize,
        n: u64,
    ) -> (BlockResult<()>, Buf) {
        let cs = self.img.geo.cluster_size;
        let end = guest + n;
        let bounds = |s: Slot| (s.guest.max(guest), (s.guest + cs).min(end));
        // Written straight from the caller's buffer: whole clusters, fresh
        // ones whose surroundings read as zeroes, clusters already ours.
        let direct = |s: Slot, lo: u64, hi: u64| {
            (lo == s.guest && hi == s.guest + cs)
                || (s.fresh && self.zero_source(s))
                || (!s.new && matches!(s.old, Mapping::Data { .. }))
        };
        let mut i = 0;
        while i < slots.len() {
            let s = slots[i];
            let (lo, hi) = bounds(s);
            let src = at + (lo - guest) as usize;
            if !direct(s, lo, hi) {
                if let Err(e) = self.cow_cluster(s, &buf, src, lo, hi).await {
                    return (Err(e), buf);
                }
                i += 1;
                continue;
            }
            // Merge the following clusters that continue on the host.
            let (mut prev, mut prev_hi, mut len, mut j) = (s, hi, hi - lo, i + 1);
            while let Some(&t) = slots.get(j) {
                let (tlo, thi) = bounds(t);
                if prev_hi != prev.guest + cs || t.host != prev.host + cs || !direct(t, tlo, thi) {
                    break;
                }
                len += thi - tlo;
                (prev, prev_hi) = (t, thi);
                j += 1;
            }
            let host = s.host + (lo - s.guest);
            let (r, b) = self
                .file
                .write_from(host, buf, src, len as usize, false)
                .await;
            buf = b;
            if let Err(e) = r {
                return (Err(e), buf);
            }
            i = j;
        }
        (Ok(()), buf)
    }

    /// Builds the whole new cluster of `s` (old contents around the new
    /// bytes `lo..hi`) and writes it.
    async fn cow_cluster(
        &self,
        s: Slot,
        data: &Buf,
        src: usize,
        lo: u64,
        hi: u64,
    ) -> BlockResult<()> {
        let cs = self.img.geo.cluster_size as usize;
        let c = pool::check_out(cs);
        let head = (lo - s.guest) as usize;
        let tail = (hi - s.guest) as usize;
        let r = self.old_contents(s, c, head, tail).await;
        let (r, mut c) = r;
        if let Err(e) = r {
            pool::check_in(c);
            return Err(e);
        }
        c.as_mut_slice()[head..tail].copy_from_slice(&data.as_slice()[src..src + tail - head]);
        let (r, c) = self.file.write_from(s.host, c, 0, cs, false).await;
        pool::check_in(c);
        r
    }

    /// Fills `c` outside `head..tail` with the cluster's current contents.
    async fn old_contents(
        &self,
        s: Slot,
        mut c: Buf,
        head: usize,
        tail: usize,
    ) -> (BlockResult<()>, Buf) {
        let cs = c.len();
        match s.old {
            Mapping::Unallocated => {
                let (r, c) = self.read_backing(s.guest, c, 0, head as u64).await;
                if r.is_err() {
                    return (r, c);
                }
                self.read_backing(s.guest + tail as u64, c, tail, (cs - tail) as u64)
                    .await
            }
            Mapping::Zero { .. } => {
                c.zero(0..cs);
                (Ok(()), c)
            }
            Mapping::Data { host, .. } => {
                let (r, c) = self.file.read_into(host, c, 0, head).await;
                if r.is_err() {
                    return (r, c);
                }
                self.file
                    .read_into(host + tail as u64, c, tail, cs - tail)
                    .await
            }
            Mapping::Compressed { offset, len } => match self.inflate(offset, len, s.guest).await {
                Ok(d) => {
                    c.as_mut_slice().copy_from_slice(&d);
                    (Ok(()), c)
                }
                Err(e) => (Err(e), c),
            },
        }
    }

    /// Writes the entries of `slots` that changed: L2 tables first (a new
    /// table is written and synced before the L1 entry), then memory.
    async fn publish(&self, meta: &mut Meta, slots: &[Slot]) -> BlockResult<()> {
        let cs = self.img.geo.cluster_size;
        let updates: Vec<(u64, u64)> = slots
            .iter()
            .filter(|s| s.new || !matches!(s.old, Mapping::Data { copied: true, .. }))
            .map(|s| (s.guest, s.host | COPIED))
            .collect();
        self.set_entries(meta, &updates).await?;
        for s in slots.iter().filter(|s| s.new) {
            if let Some((h, l)) = s.old.host_range(cs) {
                meta.free_later(h, l);
            }
        }
        Ok(())
    }

    /// Sets L2 entries `(guest, raw)`, table by table, on disk then in memory.
    pub(crate) async fn set_entries(
        &self,
        meta: &mut Meta,
        updates: &[(u64, u64)],
    ) -> BlockResult<()> {
        let geo = self.img.geo;
        let mut i = 0;
        while i < updates.len() {
            let l1 = geo.l1_index(updates[i].0);
            let mut j = i;
            while j < updates.len() && geo.l1_index(updates[j].0) == l1 {
                j += 1;
            }
            self.set_in_table(meta, l1, &updates[i..j]).await?;
            i = j;
        }
        Ok(())
    }

    async fn set_in_table(
        &self,
        meta: &mut Meta,
        l1: usize,
        updates: &[(u64, u64)],
    ) -> BlockResult<()> {
        let geo = self.img.geo;
        let cs = geo.cluster_size;
        let entries = 1usize << geo.l2_bits;
        let Some(&(first_guest, _)) = updates.first() else {
            return Ok(());
        };
        match self.table(l1).await? {
            Some(table) => {
                if self.img.l1[l1].load(Ordering::Acquire) & COPIED == 0 {
                    self.cow_table(meta, l1, table).await?;
                }
                let page = (cs.min(4096) / 8) as usize;
                let lo = updates.iter().map(|u| geo.l2_index(u.0)).min().unwrap_or(0) / page * page;
                let hi = (updates.iter().map(|u| geo.l2_index(u.0)).max().unwrap_or(0) + 1)
                    .next_multiple_of(page)
                    .min(entries);
                let mut new: Vec<Option<u64>> = vec![None; hi - lo];
                for u in updates {
                    new[geo.l2_index(u.0) - lo] = Some(u.1);
                }
                let mut bytes = Vec::with_capacity((hi - lo) * 8);
                for (k, v) in new.iter().enumerate() {
                    let v = v.unwrap_or_else(|| table[lo + k].load(Ordering::Acquire));
                    bytes.extend_from_slice(&v.to_be_bytes());
                }
                let off = self.img.l1_table(l1);
                write_bytes(&self.file, off + lo as u64 * 8, &bytes).await?;
                for u in updates {
                    table[geo.l2_index(u.0)].store(u.1, Ordering::Release);
                }
                Ok(())
            }
            None => {
                // A new L2 table.
                let (host, _, _) = meta.alloc(&self.file, 1).await?;
                let mut raw = vec![0u64; entries];
                for u in updates {
                    raw[geo.l2_index(u.0)] = u.1;
                }
                let bytes: Vec<u8> = raw.iter().flat_map(|e| e.to_be_bytes()).collect();
                write_bytes(&self.file, host, &bytes).await?;
                self.file.flush().await?;
                let l1_entry = host | COPIED;
                self.write_l1(l1, l1_entry).await?;
                let table = self.img.install_table(l1, &bytes);
                if table.is_none() {
                    return Err(eio("qcow2 allocate", first_guest, "L1 index out of range"));
                }
                self.img.l1[l1].store(l1_entry, Ordering::Release);
                Ok(())
            }
        }
    }

    /// Gives L1 entry `l1` a table of its own when it shares one with an
    /// internal snapshot (the entry lacks `COPIED`), as QEMU does: the copy
    /// is written and synced, the L1 entry points to it, and the shared
    /// table loses the active reference after the next flush. Data
    /// refcounts do not change: they count L1 tables, not L2 tables, and
    /// the copy keeps the entries' `COPIED` bits (clear where shared).
    async fn cow_table(&self, meta: &mut Meta, l1: usize, table: &[AtomicU64]) -> BlockResult<()> {
        let cs = self.img.geo.cluster_size;
        let old = self.img.l1_table(l1);
        let (host, _, _) = meta.alloc(&self.file, 1).await?;
        let bytes: Vec<u8> = table
            .iter()
            .flat_map(|e| e.load(Ordering::Acquire).to_be_bytes())
            .collect();
        write_bytes(&self.file, host, &bytes).await?;
        self.file.flush().await?;
        self.write_l1(l1, host | COPIED).await?;
        self.img.l1[l1].store(host | COPIED, Ordering::Release);
        meta.free_later(old, cs);
        Ok(())
    }

    /// Writes L1 entry `l1` as `value` (the page around it, from memory).
    async fn write_l1(&self, l1: usize, value: u64) -> BlockResult<()> {
        let page = (self.img.geo.cluster_size.min(4096) / 8) as usize;
        let lo = l1 / page * page;
        let hi = (l1 + 1).next_multiple_of(page).min(self.img.l1.len());
        let mut bytes = Vec::with_capacity((hi - lo) * 8);
        for k in lo..hi {
            let v = if k == l1 {
                value
            } else {
                self.img.l1[k].load(Ordering::Acquire)
            };
            bytes.extend_from_slice(&v.to_be_bytes());
        }
        write_bytes(&self.file, self.img.l1_offset + lo as u64 * 8, &bytes).await
    }

    /// Unmaps the whole clusters in `offset..offset + len` (the backing
    /// file shows through only where there is none: version 3 images with
    /// a backing file get zero clusters, as in QEMU).
    pub(crate) async fn discard(&self, offset: u64, len: u64) -> BlockResult<()> {
        let cs = self.img.geo.cluster_size;
        let lo = offset.next_multiple_of(cs);
        let hi = ((offset + len) / cs * cs).max(lo);
        if self.img.read_only {
            return Err(BlockError::ReadOnly);
        }
        let new = if self.backing.is_some() && self.img.geo.version >= 3 {
            ZERO
        } else {
            0
        };
        self.rewrite_clusters(lo, hi, |_| new).await
    }

    /// Zero clusters for the whole clusters of the range; the partial ends
    /// are written as zeroes unless they already read as zeroes.
    pub(crate) async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_unmap: bool,
        fast: bool,
    ) -> BlockResult<()> {
        let cs = self.img.geo.cluster_size;
        let end = offset + len;
        let lo = offset.next_multiple_of(cs).min(end);
        let hi = (end / cs * cs).max(lo);
        let v3 = self.img.geo.version >= 3;
        if !v3 && self.backing.is_some() {
            if fast {
                return Err(BlockError::NotSupported);
            }
            return self.write_zero_data(offset, len).await;
        }
        for (a, b) in [(offset, lo), (hi.max(offset), end)] {
            if a < b && !self.reads_zero(a).await? {
                if fast {
                    return Err(BlockError::NotSupported);
                }
                self.write_zero_data(a, b - a).await?;
            }
        }
        if lo < hi {
            self.rewrite_clusters(lo, hi, |old| match old {
                _ if !v3 => 0,
                Mapping::Data { host, copied: true }
                | Mapping::Zero {
                    host: Some(host),
                    copied: true,
                } if !may_unmap => host | COPIED | ZERO,
                _ => ZERO,
            })
            .await?;
        }
        Ok(())
    }

    async fn reads_zero(&self, guest: u64) -> BlockResult<bool> {
        Ok(match self.mapping(guest).await? {
            Mapping::Zero { .. } => true,
            Mapping::Unallocated => self.backing.is_none(),
            _ => false,
        })
    }

    async fn write_zero_data(&self, mut offset: u64, len: u64) -> BlockResult<()> {
        let end = offset + len;
        while offset < end {
            let n = (end - offset).min(1 << 20) as usize;
            let mut b = pool::check_out(n);
            b.as_mut_slice().fill(0);
            let (r, b) = self.write_from(offset, b, 0, n, false).await;
            pool::check_in(b);
            r?;
            offset += n as u64;
        }
        Ok(())
    }

    /// Rewrites the entries of the clusters in `lo..hi` (cluster aligned)
    /// with `new(old)`, freeing what they no longer reference.
    async fn rewrite_clusters(
        &self,
        lo: u64,
        hi: u64,
        new: impl Fn(Mapping) -> u64,
    ) -> BlockResult<()> {
        let cs = self.img.geo.cluster_size;
        // One L2 table's worth at a time, to bound the metadata lock's hold.
        let span = cs << self.img.geo.l2_bits;
        let mut at = lo;
        while at < hi {
            let stop = ((at / span + 1) * span).min(hi);
            let clusters = (at..stop).step_by(cs as usize);
            let mut meta = self.lock_clusters(clusters.clone()).await;
            let mut updates = Vec::new();
            let mut frees = Vec::new();
            for g in clusters {
                let old = self.mapping(g).await?;
                let raw = new(old);
                let unchanged = match old {
                    Mapping::Unallocated => raw == 0,
                    Mapping::Zero { host: None, .. } => raw == ZERO,
                    _ => false,
                };
                if unchanged {
                    continue;
                }
                if let Some((h, l)) = old.host_range(cs) {
                    if raw & OFFSET_MASK != h {
                        frees.push((h, l));
                    }
                }
                updates.push((g, raw));
            }
            self.set_entries(&mut meta, &updates).await?;
            for (h, l) in frees {
                meta.free_later(h, l);
            }
            let too_many = meta.pending_len() > MAX_PENDING;
            drop(meta);
            if too_many {
                self.flush().await?;
            }
            at = stop;
        }
        Ok(())
    }

    /// Makes every completed write durable (data and metadata: metadata is
    /// written before a write completes), then returns the clusters freed
    /// before the sync to the allocator.
    pub(crate) async fn flush(&self) -> BlockResult<()> {
        let generation = {
            let mut meta = self.img.meta.lock().await;
            meta.flush_gen += 1;
            meta.flush_gen
        };
        self.file.flush().await?;
        if self.img.read_only {
            return Ok(());
        }
        let mut meta = self.img.meta.lock().await;
        if meta.pending_len() == 0 {
            return Ok(());
        }
        let freed = meta.apply_pending(&self.file, generation).await?;
        for (h, l) in freed {
            // Give the space back to the file system (advisory), still under
            // the lock: once it is released, the cluster may be handed out
            // and written, and a late punch would lose that data.
            let _ = self.file.discard(h, l).await;
        }
        drop(meta);
        Ok(())
    }
}
