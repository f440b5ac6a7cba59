//! The `rbd` protocol driver: a Ceph RBD image through librbd.
//!
//! ```text
//!  control thread (blockdev-add)          iothread
//!  Cluster: rados_t + ioctx  ──Arc──►  LocalImage: own rbd_image_t + eventfd
//!  first Image (probe, size) ──moved─►    aio submit ─► librbd threads
//!                                          ◄── eventfd in the ring ◄── done
//! ```
//!
//! - `sys`: the C API, loaded with `dlopen` (no build-time dependency).
//! - `cluster`: connecting (QEMU's option handling and error texts) and
//!   opening images.
//! - `image`: the per-iothread data path and the completion bridge.
//!
//! Each iothread opens its own image handle (the first one reuses the
//! handle `blockdev-add` opened to check the image), because librbd's
//! completion notification is per image: one eventfd per iothread, read
//! by that iothread's ring, so completions reach the submitting thread
//! with no lock or cross-thread hand-off of ours.

mod cluster;
mod image;
mod sys;

pub use cluster::RbdOptions;
pub(crate) use cluster::{open, Cluster};
pub(crate) use image::LocalImage;
