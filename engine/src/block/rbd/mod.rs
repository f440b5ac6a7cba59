//! The `rbd` protocol driver: a Ceph RBD image through librbd.
//!
//! ```text
//!  control thread (blockdev-add)          iothreads A, B, ...
//!  Cluster: rados_t + ioctx + image ─Arc─► LocalImage ─ rbd_aio_* ─► librbd
//!                                            ◄── task woken via the ring ◄─┘
//! ```
//!
//! - `sys`: the C API, loaded with `dlopen` (no build-time dependency).
//! - `cluster`: connecting (QEMU's option handling and error texts) and
//!   opening images.
//! - `image`: the per-iothread data path and the completion bridge.
//!
//! Every iothread submits to the one image handle `blockdev-add` opened;
//! completions wake the submitting task on its own iothread (see
//! `image.rs` for the bridge, and for why the handle is shared).

mod cluster;
mod image;
mod sys;

pub use cluster::RbdOptions;
pub(crate) use cluster::{open, Cluster};
pub(crate) use image::LocalImage;
