//! Persistent dirty bitmaps in the qcow2 bitmaps extension.
//!
//! ```text
//!  header ── bitmaps extension ── directory ── entry "b" ── bitmap table ── data clusters
//!                                          └─ entry "c" ── ...
//! ```
//!
//! The node's [`BitmapSet`] (shared with the [`crate::block::BlockNode`])
//! holds the bitmaps in memory; the image holds them between lives:
//!
//! - `directory`: the extension, directory and table entries as bytes,
//!   with QEMU's checks (the image is untrusted).
//! - `ext`: rewriting the extension in the header.
//! - `load`: at open, every bitmap of the directory becomes a persistent
//!   bitmap of the set (`auto` → recording; `in_use` → inconsistent, its
//!   bits unknown); a read-write open then marks them all `in_use` on
//!   disk, as QEMU does, since from now on the image's copy is stale.
//! - `store`: at close, the persistent consistent bitmaps are written to
//!   new clusters, a new directory points to them, the header points to
//!   the directory with `in_use` clear, and only then are the old
//!   clusters freed; removing a persistent bitmap rewrites the directory
//!   without it at once (QEMU's order, so a kill -9 at any point leaves
//!   either the old directory, whose bitmaps are `in_use`, or the new one,
//!   and at worst leaked clusters).
//!
//! # Who owns what
//!
//! [`Stored`] (the directory as on disk) is behind its own mutex, taken
//! only at open, close and by the control thread's `remove`; clusters are
//! allocated and freed with blocking I/O under the node's metadata lock
//! (`meta/blocking.rs`), so no allocating write runs meanwhile. Bitmaps
//! are not stored at flush, as in QEMU: only at close (`blockdev-del`,
//! `quit`, SIGTERM).

pub(super) mod directory;
mod ext;
mod load;
mod store;

pub(crate) use directory::{BitmapsExt, DirEntry};

use super::image::Image;
use crate::block::bitmap::{BitmapError, BitmapSet};
use directory::{
    entry_size, MAX_BITMAPS, MAX_DIRECTORY_SIZE, MAX_GRANULARITY_BITS, MAX_NAME_SIZE,
    MAX_PHYS_SIZE, MAX_TABLE_SIZE, MIN_GRANULARITY_BITS,
};

/// The bitmaps as the image holds them.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    /// The extension on disk (`None`: none, or one QEMU would ignore).
    pub(crate) ext: Option<BitmapsExt>,
    /// Its directory.
    pub(crate) entries: Vec<DirEntry>,
    /// The autoclear bits on disk.
    pub(crate) autoclear: u64,
    /// Loading finished: closing may store (not after a failed open).
    pub(crate) loaded: bool,
}

impl Image {
    /// Whether a new persistent bitmap `name` could be stored in this image
    /// (QEMU's `qcow2_co_can_store_new_dirty_bitmap`, in its order).
    pub(crate) fn can_store_bitmap(
        &self,
        set: &BitmapSet,
        name: &str,
        granularity: u64,
    ) -> Result<(), BitmapError> {
        if set.get(name).is_some() {
            return Err(BitmapError::Exists(name.to_string()));
        }
        let refuse = |why: String| BitmapError::CannotPersist {
            name: name.to_string(),
            node: self.name.clone(),
            why,
        };
        if self.geo.version < 3 {
            return Err(refuse(
                "Cannot store dirty bitmaps in qcow2 v2 files".into(),
            ));
        }
        let bits = granularity.trailing_zeros();
        if bits > u32::from(MAX_GRANULARITY_BITS) {
            return Err(refuse(format!(
                "Granularity exceeds maximum ({} bytes)",
                1u64 << MAX_GRANULARITY_BITS
            )));
        }
        if bits < u32::from(MIN_GRANULARITY_BITS) {
            return Err(refuse(format!(
                "Granularity is under minimum ({} bytes)",
                1u64 << MIN_GRANULARITY_BITS
            )));
        }
        let len = crate::block::node::round_to_sector(self.geo.size);
        let bytes = len.div_ceil(granularity).div_ceil(8);
        if bytes > MAX_PHYS_SIZE || bytes > u64::from(MAX_TABLE_SIZE) * self.geo.cluster_size {
            return Err(refuse(
                "Too much space will be occupied by the bitmap. Use larger granularity".into(),
            ));
        }
        if name.len() > MAX_NAME_SIZE {
            return Err(refuse(format!(
                "Name length exceeds maximum ({MAX_NAME_SIZE} characters)"
            )));
        }
        let persistent: Vec<_> = set.list().into_iter().filter(|b| b.persistent).collect();
        if persistent.len() + 1 > MAX_BITMAPS as usize {
            return Err(refuse(
                "Maximum number of persistent bitmaps is already reached".into(),
            ));
        }
        let dir: u64 = persistent
            .iter()
            .map(|b| entry_size(b.name.len()))
            .sum::<u64>()
            + entry_size(name.len());
        if dir > MAX_DIRECTORY_SIZE {
            return Err(refuse("Not enough space in the bitmap directory".into()));
        }
        Ok(())
    }
}
