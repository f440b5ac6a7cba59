//! Loading the image's bitmaps at open, and marking them `in_use` on a
//! read-write open (QEMU's `qcow2_load_dirty_bitmaps`).

use super::directory::{
    self, BitmapsExt, DirEntry, FLAG_IN_USE, TABLE_ALL_ONES, TABLE_OFFSET_MASK,
};
use super::Stored;
use crate::block::bitmap::DirtyBitmap;
use crate::block::error::{BlockError, BlockResult};
use crate::block::node::round_to_sector;
use crate::block::qcow2::header::AUTOCLEAR_BITMAPS;
use crate::block::qcow2::image::{sync_read, Image};

fn invalid(e: impl std::fmt::Display) -> BlockError {
    BlockError::Invalid(e.to_string())
}

impl Image {
    /// Bytes a bitmap of this image covers (the node's size).
    pub(crate) fn bitmap_len(&self) -> u64 {
        round_to_sector(self.geo.size)
    }

    /// Loads the bitmaps into the node's set; see the module docs of
    /// [`super`].
    pub(crate) fn load_bitmaps(&self) -> BlockResult<()> {
        let mut st = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        st.autoclear = self.header.autoclear;
        let ext = match &self.header.bitmaps_data {
            Some(_) if self.header.autoclear & AUTOCLEAR_BITMAPS == 0 => {
                log::warn!(
                    "qcow2 node {}: a program lacking bitmap support modified this file, so all bitmaps are now considered inconsistent",
                    self.name
                );
                None
            }
            Some(data) => Some(BitmapsExt::parse(data, self.geo.cluster_size).map_err(invalid)?),
            None => None,
        };
        if let Some(ext) = ext {
            let mut dir = vec![0u8; ext.dir_size as usize];
            sync_read(&self.file, ext.dir_offset, &mut dir)?;
            let entries = directory::parse(
                &dir,
                ext.nb_bitmaps,
                self.geo.cluster_size,
                self.bitmap_len(),
            )
            .map_err(invalid)?;
            for e in &entries {
                self.load_one(e)?;
            }
            st.ext = Some(ext);
            st.entries = entries;
        }
        if !self.read_only {
            if st.entries.iter().any(|e| !e.in_use()) {
                self.mark_in_use(&mut st)?;
            } else if st.ext.is_none() && st.autoclear & AUTOCLEAR_BITMAPS != 0 {
                // A writer must clear the bit of bitmaps it does not keep
                // (the spec's autoclear rule).
                let bits = st.autoclear & !AUTOCLEAR_BITMAPS;
                self.write_autoclear(&mut st, bits)?;
            }
        }
        st.loaded = true;
        drop(st);
        self.bitmaps.publish();
        Ok(())
    }

    fn load_one(&self, e: &DirEntry) -> BlockResult<()> {
        let name = e.name_str();
        let g = 1u64 << e.granularity_bits;
        let bitmap = DirtyBitmap::new(self.bitmap_len(), g).map_err(invalid)?;
        if !e.in_use() {
            self.read_data(e, &bitmap, &name)?;
        }
        self.bitmaps
            .add_stored(
                &name,
                bitmap,
                e.auto() && !e.in_use(),
                e.in_use(),
                self.read_only,
            )
            .map_err(invalid)
    }

    /// The bits of a cleanly stored bitmap into `bitmap`.
    fn read_data(&self, e: &DirEntry, bitmap: &DirtyBitmap, name: &str) -> BlockResult<()> {
        let cs = self.geo.cluster_size;
        let mut raw = vec![0u8; e.table_size as usize * 8];
        sync_read(&self.file, e.table_offset, &mut raw)?;
        let table = directory::parse_table(&raw, cs).map_err(|_| {
            invalid(format!(
                "Could not read bitmap_table table from image for bitmap '{name}': Invalid argument"
            ))
        })?;
        let want = directory::table_size(self.bitmap_len(), e.granularity_bits, cs);
        if want != u64::from(e.table_size) {
            return Err(invalid(format!(
                "Could not read bitmap '{name}' from image: Invalid argument"
            )));
        }
        // Bytes of the node one data cluster covers.
        let span = (cs * 8).saturating_mul(bitmap.granularity());
        let mut buf = vec![0u8; cs as usize];
        for (i, &t) in table.iter().enumerate() {
            let i = i as u64;
            let off = t & TABLE_OFFSET_MASK;
            if off != 0 {
                sync_read(&self.file, off, &mut buf)?;
                bitmap.deserialize_from(i * cs, &buf);
            } else if t & TABLE_ALL_ONES != 0 {
                bitmap.set(i.saturating_mul(span), span);
            }
        }
        Ok(())
    }

    /// Sets `in_use` on every bitmap of the directory in place, with the
    /// autoclear bit off meanwhile, so that a torn directory write reads as
    /// "bitmaps stale" (QEMU's `update_ext_header_and_dir_in_place`).
    fn mark_in_use(&self, st: &mut Stored) -> BlockResult<()> {
        let Some(ext) = st.ext else {
            return Ok(());
        };
        for e in st.entries.iter_mut() {
            e.flags |= FLAG_IN_USE;
        }
        let dir = directory::serialise(&st.entries, self.geo.cluster_size, self.bitmap_len())
            .map_err(invalid)?;
        if dir.len() as u64 != ext.dir_size {
            return Err(invalid("Can't update bitmap directory: Invalid argument"));
        }
        let on = st.autoclear | AUTOCLEAR_BITMAPS;
        self.write_autoclear(st, on & !AUTOCLEAR_BITMAPS)?;
        self.sync_write(ext.dir_offset, &dir)?;
        self.sync_flush()?;
        self.write_autoclear(st, on)
    }

    /// Writes the autoclear bits and syncs.
    pub(crate) fn write_autoclear(&self, st: &mut Stored, bits: u64) -> BlockResult<()> {
        self.sync_write(88, &bits.to_be_bytes())?;
        self.sync_flush()?;
        st.autoclear = bits;
        Ok(())
    }
}
