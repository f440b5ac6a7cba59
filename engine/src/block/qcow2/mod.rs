//! The `qcow2` format driver.
//!
//! ```text
//!   BlockNode "d" (qcow2) ── Kind::Qcow2(Arc<Image>) ──────────── shared by every iothread
//!       │                      geometry, header
//!       │                      L1: [AtomicU64]       L2: [OnceLock<[AtomicU64]>]   (lock-free reads)
//!       │                      meta: MetaLock<Meta>  (refcounts, allocator, clusters in flight)
//!       ├── file    (protocol node; held with write+resize while open)
//!       └── backing (any node, read-only; opened from the image's name by control/)
//!
//!   iothread A: BlockHandle ─ Leaf::Qcow2(Qcow2Handle { img, file: BlockHandle, backing: BlockHandle })
//!   iothread B: BlockHandle ─ Leaf::Qcow2(Qcow2Handle { ... its own file and backing handles ... })
//! ```
//!
//! # Who owns the metadata
//!
//! The mapping (L1 and L2 tables) is node-wide and lock-free: entries are
//! atomics, an L2 table is loaded by the first iothread that needs it and
//! kept for the life of the node (1/8192 of the virtual size with 64 KiB
//! clusters: 128 KiB per GiB), so a read, or a write into a cluster the
//! image already owns (`COPIED`), looks up its host offset with two atomic
//! loads and goes straight to the calling iothread's ring ([`data`]).
//!
//! Everything that changes metadata (allocation, copy-on-write, discard,
//! write-zeroes, freeing after a flush) takes the node's [`sync::MetaLock`],
//! an async lock that parks the task and never the thread, and does its
//! metadata I/O on the ring of whichever iothread holds it ([`alloc`],
//! [`table`], [`unmap`]). The lock is held while deciding and allocating,
//! and again while writing L2 entries; data and copy-on-write I/O run
//! outside it, with the guest clusters marked in flight so overlapping
//! allocations wait.
//!
//! Why not an owner iothread the others forward to: forwarding moves every
//! allocating write's buffer and completion through two mailboxes, ties the
//! metadata's life to one iothread that may be deleted, and still needs the
//! same in-flight bookkeeping; with the lock, an allocating write costs an
//! uncontended atomic and stays on the core that received it.
//!
//! Metadata is written through (no dirty metadata cache): a write returns
//! once its L2 and refcount updates are in the file, so `flush` is one
//! `fdatasync` of the file, then the release of clusters freed before it.
//! The order of metadata writes is in [`meta`].
//!
//! Persistent dirty bitmaps (the bitmaps extension) are loaded at open and
//! stored at close, outside the rings, in [`bitmaps`].
//!
//! # What is not done
//!
//! Internal snapshots are kept consistent, not created: a write into a
//! cluster or an L2 table shared with a snapshot (no `COPIED` bit) copies
//! it first and drops the active reference to the shared one, as QEMU does
//! (`table::cow_table`); data refcounts count L1 tables, so copying an L2
//! table changes only the tables' refcounts. Not done: encryption (refused
//! with QEMU's error when no key is given), external data files, extended
//! L2 entries, zstd compression, writing compressed clusters, growing the
//! refcount table, resizing. Lazy refcounts are not used: refcounts are
//! always kept exact, which the lazy-refcounts bit allows; an image left
//! dirty by QEMU's lazy refcounts must be repaired before a read-write open.

mod alloc;
mod bitmaps;
mod compress;
mod data;
mod entry;
mod header;
mod image;
mod meta;
mod sync;
mod table;
mod unmap;
mod written;

pub use header::{Header, HeaderError};
pub use image::Qcow2Info;

pub(crate) use data::Qcow2Handle;
pub(crate) use image::Image;

use std::sync::Arc;

use super::bitmap::BitmapSet;
use super::error::BlockResult;
use super::node::BlockNode;

/// Options of the `qcow2` format driver.
#[derive(Debug, Clone)]
pub struct Qcow2Options {
    /// The protocol node holding the image.
    pub file: Arc<BlockNode>,
    /// The node unallocated clusters come from (`None`: zeroes).
    pub backing: Option<Arc<BlockNode>>,
    /// Open read-only.
    pub read_only: bool,
}

/// Reads and checks the header of the image in `file` (to learn its
/// backing file before opening the node).
pub fn probe(file: &BlockNode) -> BlockResult<Header> {
    image::read_header(file)
}

/// True when `file` starts with the qcow2 magic (format probing of backing
/// files named without a format).
pub fn is_qcow2(file: &BlockNode) -> bool {
    let mut magic = [0u8; 4];
    image::sync_read(file, 0, &mut magic).is_ok() && u32::from_be_bytes(magic) == header::MAGIC
}

pub(crate) fn open(
    name: &str,
    o: Qcow2Options,
    bitmaps: Arc<BitmapSet>,
) -> BlockResult<(Arc<Image>, u64, bool)> {
    let img = Image::open(name, o.file, o.backing, o.read_only, bitmaps)?;
    let (size, ro) = (img.geo.size, img.read_only);
    Ok((Arc::new(img), size, ro))
}

/// Removes persistent bitmap `name` from the image of a qcow2 node (no-op
/// for other nodes, and for bitmaps the image does not hold).
pub fn remove_stored_bitmap(node: &BlockNode, name: &str) -> BlockResult<()> {
    match &node.kind {
        super::node::Kind::Qcow2(img) => img.remove_stored_bitmap(name),
        _ => Ok(()),
    }
}

/// Entry decoders for the `qcow2_header` fuzz target (not an API).
#[doc(hidden)]
pub mod fuzzing {
    use super::bitmaps::directory;
    use super::entry::{refcount_get, refcount_max, refcount_set, Mapping};

    /// Parses `dir` as a bitmap directory of `nb` entries of an image with
    /// `cluster_bits` and `image_len` bytes; when accepted, checks that its
    /// serialised form parses back to the same entries. Returns whether it
    /// was accepted; panics if the round trip differs.
    pub fn bitmap_directory_roundtrip(
        dir: &[u8],
        nb: u32,
        cluster_bits: u32,
        image_len: u64,
    ) -> bool {
        let cs = 1u64 << cluster_bits.clamp(9, 21);
        let Ok(entries) = directory::parse(dir, nb, cs, image_len) else {
            return false;
        };
        for e in &entries {
            assert!(e.table_offset.is_multiple_of(cs) && e.table_offset != 0);
            assert!(e.name.len() <= 1023);
        }
        let bytes =
            directory::serialise(&entries, cs, image_len).expect("accepted entries serialise");
        assert_eq!(
            directory::parse(&bytes, nb, cs, image_len).ok(),
            Some(entries)
        );
        true
    }

    /// Checks the bitmaps extension data as an open does; true if accepted.
    pub fn bitmaps_ext(data: &[u8], cluster_bits: u32) -> bool {
        directory::BitmapsExt::parse(data, 1u64 << cluster_bits.clamp(9, 21)).is_ok()
    }

    /// Decodes L2 entry `raw` of an image with `cluster_bits`; returns the
    /// host bytes it references, `(0, 0)` for none, `None` when refused.
    pub fn l2_host_range(raw: u64, cluster_bits: u32) -> Option<(u64, u64)> {
        let m = Mapping::decode(raw, cluster_bits).ok()?;
        Some(m.host_range(1 << cluster_bits).unwrap_or((0, 0)))
    }

    /// Sets refcount `index` of `block` to `value` (masked to the width)
    /// and reads it back; true when it reads back and no other entry moved.
    pub fn refcount_roundtrip(block: &mut [u8], order: u32, index: usize, value: u64) -> bool {
        let order = order % 7;
        let entries = (block.len() * 8) >> order;
        if entries == 0 {
            return true;
        }
        let index = index % entries;
        let value = value & refcount_max(order);
        let before: Vec<u64> = (0..entries)
            .map(|i| refcount_get(block, order, i))
            .collect();
        refcount_set(block, order, index, value);
        (0..entries).all(|i| {
            let v = refcount_get(block, order, i);
            if i == index {
                v == value
            } else {
                v == before[i]
            }
        })
    }
}

#[cfg(test)]
mod tests;
