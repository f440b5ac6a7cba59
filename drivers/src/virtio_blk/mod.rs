//! virtio-blk request handling shared by the virtio exports
//! (`vhost-user-blk` and `vduse-blk`): it knows virtqueues, guest
//! memory and the block layer, and nothing of the transport that set the
//! queue up or delivers its kicks.
//!
//! ```text
//!  spec      feature bits, request types, status codes, config layout
//!    ▼
//!  request   descriptor chain ─► Request | Rejected   (parse, no I/O)
//!    ▼
//!  execute   Request ─► BlockHandle readv/writev/... ─► Outcome
//!    ▼
//!  queue     kick ─► pop ─► spawn ─► used ring ─► call (one iothread)
//! ```
//!
//! Guest memory is reached through vm-memory's [`vm_memory::GuestMemory`]
//! (checked, volatile accesses) and, on the request path, through the
//! [`hostmap::HostMap`] built from it (every range bounds-checked against
//! one region, volatile loads); the queue and request code are generic
//! over it, so a transport brings whatever memory map it has (vhost-user's
//! mmap'd regions, VDUSE's IOVA map). The only pointer handed to the
//! kernel is built in [`iovec`], which keeps the map alive.

pub mod chain;
pub mod execute;
pub mod hostmap;
pub mod iovec;
pub mod queue;
pub mod request;
pub mod spec;

pub use execute::{ExecContext, ExecParams, Outcome};
pub use queue::{spawn_queue, InflightLog, Notify, QueueControl, QueueEnd, QueueSetup};
pub use request::{Rejected, Request, RequestKind, Segment};
pub use spec::DeviceConfig;

#[cfg(test)]
mod tests;
