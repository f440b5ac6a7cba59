//! The vduse-blk export driver: the daemon's virtio-blk device as a
//! kernel vDPA device (`virtio-vdpa` makes it a host block device,
//! `vhost-vdpa` hands it to a VM), served by the same request layer as
//! vhost-user-blk ([`crate::virtio_blk`]).
//!
//! ```text
//!  protocol thread (one per export)          iothreads (the export's list)
//!  poll(device fd, stop eventfd)             queue i on iothread i % n:
//!   ─► message::read_request                 kick eventfd READ on the ring
//!   ─► device::Device::handle                ─► virtio_blk::queue (IOVAs
//!        SET_STATUS(DRIVER_OK): map IOTLB,       through iotlb::IovaMemory)
//!          VQ_GET_INFO, kick eventfds,       ─► readv/writev straight into
//!          start queues                          the mmapped IOTLB regions
//!        UPDATE_IOTLB: remap, republish      ─► used ring ─► Notify:
//!        GET_VQ_STATE: the queue's avail         VDUSE_VQ_INJECT_IRQ
//!   ─► message::write_reply
//! ```
//!
//! # The kernel boundary
//!
//! Everything the driver asks of the kernel goes through two small traits
//! in [`kernel`]: [`VduseHost`] (`/dev/vduse/control`) and
//! [`kernel::VduseDevice`] (the ioctls on `/dev/vduse/$NAME` and the fd the
//! messages travel on). [`host::KernelHost`] implements them with the
//! ioctls of [`sys`]; the unit tests implement them with an in-process
//! stand-in (`standin.rs`) that speaks the same message bytes over a
//! socketpair and hands over memfd-backed IOTLB regions and eventfds.
//!
//! **The real kernel path is not exercised on the machines ringstor is
//! developed and tested on**: their kernels have no `CONFIG_VDPA_USER`,
//! so there is no `/dev/vduse`. There, `block-export-add` fails at its
//! first step (opening `/dev/vduse/control`) with an error naming the
//! missing node, before anything is created; the tests check that, the
//! uapi layout against `linux/vduse.h`, and everything above the traits
//! through the stand-in.

mod device;
mod export;
pub mod host;
mod iotlb;
pub mod kernel;
mod message;
pub mod sys;

#[cfg(test)]
mod standin;
#[cfg(test)]
mod tests;

pub use export::{start, VduseBlkExport, VduseBlkOptions};
pub use host::KernelHost;
pub use kernel::{KernelError, VduseHost};
