//! The kernel boundary, as two small traits: [`VduseHost`]
//! (`/dev/vduse/control`: create and destroy devices) and [`VduseDevice`]
//! (the ioctls on `/dev/vduse/$NAME`, and the fd its messages travel on).
//!
//! ```text
//!  device logic (device.rs, iotlb.rs, export.rs)
//!        │ VduseHost / VduseDevice           messages: read/write of the
//!        ▼                                   uapi structs on fd()
//!  host.rs ── sys.rs ── ioctl(2) ──► kernel            (production)
//!  standin.rs ── in-process kernel side ──► the tests (socketpair, memfds)
//! ```
//!
//! Everything above the traits is the same whichever side answers: the
//! messages are read from and written to [`VduseDevice::fd`] in the
//! uapi's byte layout ([`super::message`]), IOTLB regions arrive as fds
//! to mmap, kicks as eventfds. Only `host.rs` and `sys.rs` talk to the
//! real kernel.

use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::Arc;

use super::sys::{IotlbEntry, VqInfo};

/// What `VDUSE_CREATE_DEV` is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Device name (`/dev/vduse/$NAME`, the vDPA device to add).
    pub name: String,
    /// virtio device id (`VIRTIO_ID_BLOCK`).
    pub device_id: u32,
    /// Device features offered.
    pub features: u64,
    /// Virtqueues.
    pub vq_num: u32,
    /// Alignment of the rings' metadata (a page).
    pub vq_align: u32,
    /// The configuration space (read-only for the driver).
    pub config: Vec<u8>,
}

/// Why the kernel side refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// The control node is not there: no VDUSE in this kernel.
    #[error(
        "{} does not exist: this kernel has no VDUSE support (CONFIG_VDPA_USER; where it is a module, `modprobe vduse` loads it)",
        node.display()
    )]
    Missing {
        /// The device node looked for.
        node: PathBuf,
    },
    /// A node exists but cannot be opened.
    #[error("cannot open {}: {source}", node.display())]
    Open {
        /// The device node.
        node: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `VDUSE_CREATE_DEV` said the name is taken.
    #[error("a VDUSE device named '{0}' already exists")]
    Exists(String),
    /// `VDUSE_DESTROY_DEV` said the device is still in use: attached to the
    /// vDPA bus (`vdpa dev del NAME` detaches it) or open.
    #[error("VDUSE device '{0}' is still attached to the vDPA bus or open")]
    Busy(String),
    /// Any other failed ioctl.
    #[error("{op}: {source}")]
    Ioctl {
        /// The ioctl (`VDUSE_CREATE_DEV`, ...).
        op: &'static str,
        /// errno.
        #[source]
        source: io::Error,
    },
}

/// `/dev/vduse/control`, or a stand-in for it.
pub trait VduseHost: Send + Sync {
    /// Negotiates the API version, creates the device and opens its node.
    /// On failure nothing is left behind.
    fn create(&self, spec: &DeviceSpec) -> Result<Arc<dyn VduseDevice>, KernelError>;

    /// `VDUSE_DESTROY_DEV`; every handle on the device must be closed.
    fn destroy(&self, name: &str) -> Result<(), KernelError>;
}

/// One open VDUSE device: the ioctls the device logic needs, and the fd
/// its messages arrive on. `Sync`: queues inject interrupts from their
/// iothreads while the protocol thread reads messages.
pub trait VduseDevice: Send + Sync {
    /// The device name.
    fn name(&self) -> &str;

    /// The message fd: poll for `POLLIN`, read one `vduse_dev_request`
    /// per read, write one `vduse_dev_response` per write. Non-blocking.
    fn fd(&self) -> BorrowedFd<'_>;

    /// `VDUSE_VQ_SETUP`: queue `index` takes rings of up to `max_size`.
    fn vq_setup(&self, index: u32, max_size: u16) -> io::Result<()>;

    /// `VDUSE_VQ_GET_INFO`: where the driver put queue `index`.
    fn vq_info(&self, index: u32) -> io::Result<VqInfo>;

    /// `VDUSE_VQ_SETUP_KICKFD` (`None` de-assigns).
    fn set_kick(&self, index: u32, kick: Option<BorrowedFd<'_>>) -> io::Result<()>;

    /// `VDUSE_VQ_INJECT_IRQ`.
    fn inject_vq_irq(&self, index: u32) -> io::Result<()>;

    /// `VDUSE_DEV_INJECT_CONFIG_IRQ` (for a configuration change; ringstor
    /// has none to announce yet: no `block_resize`).
    fn inject_config_irq(&self) -> io::Result<()>;

    /// `VDUSE_IOTLB_GET_FD`: the first region overlapping `start..=last`
    /// and an fd to map it from; `Ok(None)` when there is none (`EINVAL`).
    fn iotlb_fd(&self, start: u64, last: u64) -> io::Result<Option<(File, IotlbEntry)>>;

    /// `VDUSE_DEV_GET_FEATURES`: what the driver accepted.
    fn driver_features(&self) -> io::Result<u64>;
}
