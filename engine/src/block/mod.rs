//! The block layer: nodes, permissions, and the per-iothread data path.
//!
//! ```text
//!   control thread                 iothread A            iothread B
//!   BlockNode (Arc, Send+Sync) ──► BlockHandle (Rc) ──►  BlockHandle (Rc)
//!     name, driver, size (atomic)    leaf fd + base        leaf fd + base
//!     permissions, OFD locks         own ring              own ring
//! ```
//!
//! Drivers: `file` and `host_device` (io_uring reads and writes, `O_DIRECT`
//! with `cache.direct`, QEMU-compatible OFD locking), `raw` (a window of its
//! child), `null-co` / `null-aio`, `qcow2` (see [`qcow2`]: the one format
//! whose requests fan out to several operations), `rbd` (librbd, loaded at
//! run time), and protocol drivers outside the engine through [`remote`]
//! (the NBD client). Every node has a set of
//! dirty bitmaps ([`bitmap`]) that handles mark on every write,
//! write-zeroes and discard, without a lock. The block layer does not parse wire
//! input; callers pass offsets and lengths, which it bounds-checks again.

pub mod bitmap;
mod error;
mod handle;
mod lock;
mod node;
mod perm;
pub mod qcow2;
mod range_io;
mod rbd;
pub mod remote;
mod status;

pub use bitmap::{BitmapError, BitmapInfo, BitmapSet, BusyGuard, DirtyBitmap, DirtyExtent};
pub use error::{BlockError, BlockResult};
pub use handle::BlockHandle;
pub use node::{
    round_to_sector, BlockNode, FileOptions, NodeFlags, NodeOptions, NullOptions, PermGuard,
    RawOptions, RemoteOptions, SECTOR_SIZE,
};
pub use perm::Perm;
pub use qcow2::Qcow2Options;
pub use rbd::RbdOptions;
pub use status::BlockStatus;

#[cfg(test)]
mod tests;
