//! What a node's format says about bitmaps on it: the default granularity
//! (QEMU's `bdrv_get_default_bitmap_granularity`) and whether `persistent`
//! bitmaps can be stored. Formats that store bitmaps (qcow2) answer here.

use crate::block::node::{BlockNode, Kind};

/// Granularity without a cluster size to follow.
const DEFAULT_GRANULARITY: u64 = 64 * 1024;

/// The node's cluster size, where its format has one.
fn cluster_size(node: &BlockNode) -> Option<u64> {
    match &node.kind {
        Kind::File(_) | Kind::Null { .. } | Kind::Raw { .. } | Kind::Remote(_) => None,
        Kind::Qcow2(img) => Some(img.geo.cluster_size),
        // QEMU's rbd reports the object size as its cluster size.
        Kind::Rbd(c) => Some(c.object_size),
    }
}

/// The cluster size clamped to 4 KiB..=64 KiB, else 64 KiB (as QEMU).
pub fn default_granularity(node: &BlockNode) -> u64 {
    cluster_size(node).map_or(DEFAULT_GRANULARITY, |c| c.clamp(4096, DEFAULT_GRANULARITY))
}

/// Whether a `persistent` bitmap can be stored in the node's image. None
/// of `file`, `raw` or `null` can (QEMU answers `ENOTSUP` for them too);
/// nor `qcow2` yet: its bitmaps extension is not written (see
/// `qcow2/mod.rs`).
pub fn can_store_persistent(node: &BlockNode) -> bool {
    match &node.kind {
        Kind::File(_)
        | Kind::Null { .. }
        | Kind::Raw { .. }
        | Kind::Qcow2(_)
        | Kind::Rbd(_)
        | Kind::Remote(_) => false,
    }
}
