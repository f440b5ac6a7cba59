//! The vhost-user-blk export driver.
//!
//! A VM's frontend (QEMU, cloud-hypervisor, libblkio) connects to a unix
//! socket, shares guest memory and hands over one kick and one call
//! eventfd per virtqueue; we serve the virtio-blk queues.
//!
//! ```text
//!  protocol thread (one per export)         iothreads (the export's list)
//!  accept ─► vhost BackendReqHandler        queue i on iothread i % n:
//!            ─► Backend (this module)  ──►  kick READ ─► virtio_blk::queue
//!               memory table, vrings        ─► readv/writev into guest RAM
//!               start/stop queues           ─► used ring ─► call eventfd
//! ```
//!
//! # Why not `vhost-user-backend`'s `VhostUserDaemon`
//!
//! `VhostUserDaemon` runs an epoll worker thread per queue (or per group
//! of queues) and calls the backend's `handle_event` there: every kick
//! would land on a framework thread and then hop to the iothread whose
//! ring does the I/O, a cross-thread wake-up per batch that thread-per-core
//! exists to avoid. So we keep the part of rust-vmm that is protocol:
//! `vhost`'s `BackendReqHandler` parses and answers the messages and calls
//! our [`backend::Backend`] through `VhostUserBackendReqHandlerMut` (the
//! shape of `vhost-user-backend/src/handler.rs`, without its threads);
//! `virtio-queue` walks the rings and `vm-memory` maps guest memory. The
//! kick eventfd of each queue is read by an `IORING_OP_READ` on the ring
//! of the iothread that owns the queue, so a kick, the I/O it causes and
//! the call that ends it all happen on one ring, with no thread hop.
//!
//! What we add beside the handler: `SET_STATUS`/`GET_STATUS`, which
//! `vhost` 0.18's handler does not know ([`status`]), and the inflight
//! log's layout ([`inflight`]).

mod backend;
mod export;
mod inflight;
mod memory;
mod server;
mod status;
mod vring;

pub use export::{start, VhostUserBlkExport, VhostUserBlkOptions};
pub use server::VhostUserAddr;
