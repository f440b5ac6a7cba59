//! L1 and L2 entry updates, under the metadata lock: a window of the
//! table written from memory plus the new entries, then the entries
//! published in memory; a new table written and synced before the L1
//! entry that points to it; a table shared with an internal snapshot
//! copied before its first change.

use std::sync::atomic::{AtomicU64, Ordering};

use super::data::{eio, Qcow2Handle};
use super::entry::COPIED;
use super::meta::{write_bytes, Meta};
use crate::block::error::BlockResult;

impl Qcow2Handle {
    /// Sets L2 entries `(guest, raw, written)`, table by table, on disk
    /// then in memory, each after its cluster's [`super::written`] value
    /// (`written`: the bits of a fresh partial allocation, else 0).
    pub(crate) async fn set_entries(
        &self,
        meta: &mut Meta,
        updates: &[(u64, u64, u64)],
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
        updates: &[(u64, u64, u64)],
    ) -> BlockResult<()> {
        let geo = self.img.geo;
        let cs = geo.cluster_size;
        let entries = 1usize << geo.l2_bits;
        let Some(&(first_guest, _, _)) = updates.first() else {
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
                    self.img.written.set(u.0, u.2);
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
                for u in updates {
                    self.img.written.set(u.0, u.2);
                }
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
}
