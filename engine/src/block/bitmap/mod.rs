//! Dirty bitmaps: which granules of a node were written since a point in
//! time (QEMU's `BdrvDirtyBitmap`), for incremental backup.
//!
//! ```text
//!   control thread                       iothreads (any number)
//!   BitmapSet (per node, mutex)          BlockHandle ── DirtyTracker
//!     names, enabled, busy, persistent     cached enabled set per node of
//!     publish() ──► enabled set ─────────► the chain; write/zero/discard
//!                   + global epoch           mark it before and after
//!   DirtyBitmap (Arc, AtomicU64 words) ◄── lock-free fetch_or
//!     read by exports (NBD block status), query, merge, clear
//! ```
//!
//! - `bits`: [`DirtyBitmap`], the bit array itself: granularity, set /
//!   reset / query ranges, dirty and clean extents, merge, and the
//!   little-endian serialized form of QEMU's qcow2 bitmap extension.
//! - `set`: [`BitmapSet`], a node's named bitmaps and what is published to
//!   the data path; [`BusyGuard`] for exports.
//! - `track`: the handle side, lock-free two-phase marking.
//! - `format`: what the node's format decides (default granularity, whether
//!   `persistent` bitmaps can be stored).
//!
//! Bitmaps here live in memory; storing `persistent` ones is the job of a
//! format that can (qcow2), which will read and write them through the
//! serialized form.

mod bits;
mod error;
mod format;
mod set;
mod track;
mod words;

pub use bits::{DirtyBitmap, DirtyExtent, Extents};
pub use error::BitmapError;
pub use format::{can_store_persistent, default_granularity};
pub use set::{BitmapInfo, BitmapSet, BusyGuard, MAX_BITMAP_NAME};
pub(crate) use track::DirtyTracker;

#[cfg(test)]
mod tests;
