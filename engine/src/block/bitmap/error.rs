//! [`BitmapError`]: why a bitmap operation was refused, in QEMU's words
//! (the QMP layer passes `Display` through as the `desc`).

/// Why a dirty-bitmap operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BitmapError {
    /// Not a power of two in 512..=2 GiB.
    #[error("Granularity must be power of 2 and at least 512")]
    BadGranularity,
    /// The bit array would not fit in memory.
    #[error("Cannot allocate a dirty bitmap that large")]
    TooLarge,
    /// A bitmap of this name exists on the node.
    #[error("Bitmap already exists: {0}")]
    Exists(String),
    /// Longer than QEMU's `BDRV_BITMAP_MAX_NAME_SIZE`.
    #[error("Bitmap name too long: {0}")]
    NameTooLong(String),
    /// No bitmap of this name on the node.
    #[error("Dirty bitmap '{0}' not found")]
    NotFound(String),
    /// In use by an export (or by an earlier action of a transaction).
    #[error("Bitmap '{0}' is currently in use by another operation and cannot be used")]
    Busy(String),
    /// `persistent` on a node whose format cannot store bitmaps.
    #[error("Can't store persistent bitmaps to {0}: Operation not supported")]
    CannotStore(String),
    /// Merge of bitmaps covering different sizes.
    #[error(
        "Bitmaps are of different sizes (destination size is {dst}, source size is {src}) and can't be merged"
    )]
    SizeMismatch {
        /// Bytes the destination covers.
        dst: u64,
        /// Bytes the source covers.
        src: u64,
    },
}
