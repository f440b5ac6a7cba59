//! Storing the persistent bitmaps at close, and removing one from the
//! image (QEMU's `qcow2_store_persistent_dirty_bitmaps` and
//! `qcow2_co_remove_persistent_dirty_bitmap`).
//!
//! # Order (crash safety)
//!
//! 1. New data clusters, bitmap tables and directory are allocated (their
//!    refcounts raised) and written; nothing reachable points to them.
//! 2. `fdatasync`.
//! 3. The header's extension is pointed at the new directory (a single
//!    write of the header's first bytes), `fdatasync`.
//! 4. The old directory and the replaced tables and data clusters are
//!    freed, `fdatasync`.
//!
//! A crash before 3 leaves the old directory, whose bitmaps are `in_use`
//! (inconsistent at the next open), and leaked clusters; after 3, the new
//! one, and at worst leaked old clusters.

use super::directory::{self, BitmapsExt, DirEntry, FLAG_AUTO, MAX_PHYS_SIZE, MAX_TABLE_SIZE};
use super::ext::set_bitmaps_ext;
use super::Stored;
use crate::block::bitmap::BitmapInfo;
use crate::block::error::{BlockError, BlockResult};
use crate::block::qcow2::header::AUTOCLEAR_BITMAPS;
use crate::block::qcow2::image::{sync_read, Image};
use crate::block::qcow2::meta::Meta;

fn invalid(e: impl std::fmt::Display) -> BlockError {
    BlockError::Invalid(e.to_string())
}

impl Image {
    /// At close: stores every persistent, consistent bitmap of the node's
    /// set, drops from the image those no longer in it, keeps the
    /// inconsistent ones as they are.
    pub(crate) fn store_bitmaps(&self, meta: &mut Meta) -> BlockResult<()> {
        let mut st = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        if !st.loaded {
            return Ok(());
        }
        let list = self.bitmaps.list();
        if self.read_only {
            if list
                .iter()
                .any(|b| b.persistent && !b.readonly && !b.inconsistent)
            {
                log::warn!(
                    "Lost persistent bitmaps during inactivation of node '{}': No write access",
                    self.name
                );
            }
            return Ok(());
        }
        let find = |e: &DirEntry| list.iter().find(|b| b.persistent && b.name == e.name_str());
        let mut dropped = Vec::new();
        // (entry, the bitmap to write into it), disk order first, then the
        // new ones (newest first, as QEMU appends them).
        let mut plan: Vec<(DirEntry, Option<&BitmapInfo>)> = Vec::new();
        for e in &st.entries {
            match find(e) {
                Some(b) if b.inconsistent => plan.push((e.clone(), None)),
                Some(b) => {
                    dropped.push(e.clone());
                    plan.push((e.clone(), Some(b)));
                }
                None => dropped.push(e.clone()),
            }
        }
        for b in list.iter().filter(|b| b.persistent && !b.inconsistent) {
            if !st.entries.iter().any(|e| e.name_str() == b.name) {
                let entry = DirEntry {
                    table_offset: 0,
                    table_size: 0,
                    flags: 0,
                    granularity_bits: b.granularity.trailing_zeros() as u8,
                    name: b.name.as_bytes().to_vec(),
                };
                plan.push((entry, Some(b)));
            }
        }
        if plan.iter().all(|(_, b)| b.is_none()) && dropped.is_empty() {
            return Ok(());
        }
        let mut entries = Vec::with_capacity(plan.len());
        for (mut e, b) in plan {
            if let Some(b) = b {
                let (offset, size) = self.write_bitmap(meta, b)?;
                e.table_offset = offset;
                e.table_size = size;
                e.flags = if b.recording { FLAG_AUTO } else { 0 };
                e.granularity_bits = b.granularity.trailing_zeros() as u8;
            }
            entries.push(e);
        }
        self.commit_directory(meta, &mut st, entries, &dropped)
    }

    /// Removes bitmap `name` from the image now (the control thread's
    /// `block-dirty-bitmap-remove` of a persistent bitmap).
    pub(crate) fn remove_stored_bitmap(&self, name: &str) -> BlockResult<()> {
        if self.read_only {
            return Ok(());
        }
        let mut st = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        if !st.loaded || !st.entries.iter().any(|e| e.name_str() == name) {
            return Ok(());
        }
        let (dropped, kept): (Vec<_>, Vec<_>) = st
            .entries
            .iter()
            .cloned()
            .partition(|e| e.name_str() == name);
        let mut meta = self.meta.lock_blocking();
        self.commit_directory(&mut meta, &mut st, kept, &dropped)
    }

    /// Writes the bits of `b` to new data clusters (all-zero clusters get
    /// none) and its table to new clusters; returns the table's offset and
    /// entries.
    fn write_bitmap(&self, meta: &mut Meta, b: &BitmapInfo) -> BlockResult<(u64, u32)> {
        let cs = self.geo.cluster_size;
        let bits = b.granularity.trailing_zeros() as u8;
        let n = directory::table_size(b.bitmap.size(), bits, cs);
        if n == 0 || n > u64::from(MAX_TABLE_SIZE) || n * cs > MAX_PHYS_SIZE {
            return Err(invalid(format!("Bitmap '{}' is too big", b.name)));
        }
        let mut table = vec![0u8; (n * 8).next_multiple_of(cs) as usize];
        let mut buf = vec![0u8; cs as usize];
        for i in 0..n {
            b.bitmap.serialize_into(i * cs, &mut buf);
            if buf.iter().all(|&x| x == 0) {
                continue;
            }
            let off = meta.alloc_blocking(self, 1)?;
            self.sync_write(off, &buf)?;
            let at = i as usize * 8;
            table[at..at + 8].copy_from_slice(&off.to_be_bytes());
        }
        let at = meta.alloc_blocking(self, table.len() as u64 / cs)?;
        self.sync_write(at, &table)?;
        Ok((at, n as u32))
    }

    /// Steps 1 to 4 of the module docs for the directory `entries` (whose
    /// tables are written), freeing the tables of `dropped` and the old
    /// directory.
    fn commit_directory(
        &self,
        meta: &mut Meta,
        st: &mut Stored,
        entries: Vec<DirEntry>,
        dropped: &[DirEntry],
    ) -> BlockResult<()> {
        let cs = self.geo.cluster_size;
        let ext = if entries.is_empty() {
            None
        } else {
            let dir = directory::serialise(&entries, cs, self.bitmap_len()).map_err(invalid)?;
            let mut padded = dir.clone();
            padded.resize((dir.len() as u64).next_multiple_of(cs) as usize, 0);
            let at = meta.alloc_blocking(self, padded.len() as u64 / cs)?;
            self.sync_write(at, &padded)?;
            Some(BitmapsExt {
                nb_bitmaps: entries.len() as u32,
                dir_size: dir.len() as u64,
                dir_offset: at,
            })
        };
        self.sync_flush()?;
        let autoclear = match ext {
            Some(_) => st.autoclear | AUTOCLEAR_BITMAPS,
            None => st.autoclear & !AUTOCLEAR_BITMAPS,
        };
        let mut head = vec![0u8; cs as usize];
        sync_read(&self.file, 0, &mut head)?;
        let Some(len) = set_bitmaps_ext(&mut head, ext, autoclear) else {
            return Err(invalid(
                "Failed to update bitmap extension: header too large",
            ));
        };
        self.sync_write(0, &head[..len])?;
        self.sync_flush()?;
        // Nothing on disk points to the old clusters any more.
        let mut free = Vec::new();
        if let Some(old) = st.ext {
            let end = (old.dir_offset + old.dir_size).div_ceil(cs);
            free.extend(old.dir_offset / cs..end);
        }
        for e in dropped {
            free.extend(self.table_clusters(e));
        }
        st.ext = ext;
        st.entries = entries;
        st.autoclear = autoclear;
        meta.adjust_blocking(self, free, -1, true)?;
        self.sync_flush()
    }

    /// The clusters of `e`'s table and of the data it points to (an
    /// unreadable table frees only itself: its data leaks).
    fn table_clusters(&self, e: &DirEntry) -> Vec<u64> {
        let cs = self.geo.cluster_size;
        let bytes = u64::from(e.table_size) * 8;
        let mut out: Vec<u64> =
            (e.table_offset / cs..(e.table_offset + bytes).div_ceil(cs)).collect();
        let mut raw = vec![0u8; bytes as usize];
        if sync_read(&self.file, e.table_offset, &mut raw).is_ok() {
            if let Ok(t) = directory::parse_table(&raw, cs) {
                out.extend(
                    t.iter()
                        .map(|v| v & directory::TABLE_OFFSET_MASK)
                        .filter(|&o| o != 0)
                        .map(|o| o / cs),
                );
            }
        }
        out
    }
}
