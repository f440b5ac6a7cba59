//! ringstor's export drivers.
//!
//! Each driver has a folder: `nbd/` now; `vhost_user_blk/`, `fuse/` and
//! `vduse_blk/` plug in the same way. A driver serves its protocol on the
//! iothreads it is given, doing I/O through [`engine::block::BlockHandle`];
//! it never sees a ring, an fd of the image or a format. What exports have
//! in common lives in the control plane, behind [`export::Export`].
//! [`socket`] gives every server that listens its socket, from any QAPI
//! socket address (including inherited and passed descriptors).

pub mod export;
pub mod fuse;
pub mod nbd;
pub mod socket;
pub mod stats;
pub mod vduse_blk;
pub mod vhost_user_blk;
pub mod virtio_blk;
