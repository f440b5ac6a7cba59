//! What a node's format says about bitmaps on it: the default granularity
//! (QEMU's `bdrv_get_default_bitmap_granularity`) and whether `persistent`
//! bitmaps can be stored. Formats that store bitmaps (qcow2) answer here.

use super::error::BitmapError;
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

/// Whether a new `persistent` bitmap `name` of `granularity` can be
/// stored in the node's image, with QEMU's error when not. None of
/// `file`, `raw`, `null`, `rbd` or `nbd` can (QEMU answers `ENOTSUP` for
/// them too);
/// `qcow2` checks its own limits (see `qcow2/bitmaps`).
pub fn can_store_persistent(
    node: &BlockNode,
    name: &str,
    granularity: u64,
) -> Result<(), BitmapError> {
    match &node.kind {
        Kind::File(_) | Kind::Null { .. } | Kind::Raw { .. } | Kind::Rbd(_) | Kind::Remote(_) => {
            Err(BitmapError::CannotStore(node.name().to_string()))
        }
        Kind::Qcow2(img) => img.can_store_bitmap(node.bitmaps(), name, granularity),
    }
}
