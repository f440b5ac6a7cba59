//! The write path of [`Qcow2Handle`]: in-place writes, and allocating
//! writes with copy-on-write (entry updates are in [`super::table`],
//! discard, write-zeroes and flush in [`super::unmap`]).
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

use std::sync::atomic::Ordering;

use super::data::Qcow2Handle;
use super::entry::{Mapping, COPIED};
use super::meta::Meta;
use super::sync::MetaGuard;
use crate::block::error::BlockResult;
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
    /// The [`super::written`] bits its new entry gets (0: untracked).
    written: u64,
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
                    self.mark_written(guest, n);
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

    /// Records a write in place of `n` bytes at `guest` in the clusters'
    /// [`super::written`] bits, before it is issued.
    fn mark_written(&self, guest: u64, n: u64) {
        let geo = self.img.geo;
        let end = guest + n;
        let mut g = guest;
        while g < end {
            let c = g & !(geo.cluster_size - 1);
            let hi = (c + geo.cluster_size).min(end);
            self.img.written.mark(c, g - c, hi - c);
            g = hi;
        }
    }

    /// Locks the metadata once none of `clusters` (guest offsets) is in flight.
    pub(super) async fn lock_clusters(
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
                    written: 0,
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
        // Which parts of the clusters hold data: a fresh cluster written
        // straight from the request keeps holes that read as zeroes;
        // clusters already ours record the write before it is issued.
        let end = guest + n;
        for s in &mut slots {
            let (lo, hi) = (
                s.guest.max(guest) - s.guest,
                (s.guest + cs).min(end) - s.guest,
            );
            if s.new {
                if s.fresh && self.zero_source(*s) {
                    s.written = self.img.written.bits(lo, hi);
                }
            } else if matches!(s.old, Mapping::Data { .. }) {
                self.img.written.mark(s.guest, lo, hi);
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
        let updates: Vec<(u64, u64, u64)> = slots
            .iter()
            .filter(|s| s.new || !matches!(s.old, Mapping::Data { copied: true, .. }))
            .map(|s| (s.guest, s.host | COPIED, s.written))
            .collect();
        self.set_entries(meta, &updates).await?;
        for s in slots.iter().filter(|s| s.new) {
            if let Some((h, l)) = s.old.host_range(cs) {
                meta.free_later(h, l);
            }
        }
        Ok(())
    }
}
