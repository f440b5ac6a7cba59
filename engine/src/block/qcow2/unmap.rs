//! Discard, write-zeroes and flush of [`Qcow2Handle`]: whole clusters
//! change their L2 entries (unallocated or zero clusters), the clusters
//! they referenced are freed only after the next flush.

use super::data::Qcow2Handle;
use super::entry::{Mapping, COPIED, OFFSET_MASK, ZERO};
use super::meta::MAX_PENDING;
use crate::block::error::{BlockError, BlockResult};
use crate::buf::pool;

impl Qcow2Handle {
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
                updates.push((g, raw, 0));
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
