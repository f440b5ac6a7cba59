//! [`VduseBlkExport`]: one vduse-blk export: the device created in the
//! kernel (or its stand-in), the protocol thread answering its messages,
//! and removal.
//!
//! # Creation
//!
//! `VDUSE_CREATE_DEV` with the virtio-blk features and configuration
//! space, then `VDUSE_VQ_SETUP` for each queue; if any step fails the
//! device is destroyed again and the error names the step, so a failed
//! add leaves nothing behind (the registry drops the node permissions).
//!
//! # Removal
//!
//! Safe removal fails while a driver has the device running
//! (`DRIVER_OK`): its block device would lose its disk under it. Hard
//! removal (and a safe one with no driver) wakes the protocol thread,
//! which stops the queues (their requests in flight finish), closes the
//! device fd, issues `VDUSE_DESTROY_DEV` and reports `on_drained` once.
//! A device still attached to the vDPA bus cannot be destroyed by the
//! kernel; that is logged with the command that detaches it.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::device::{exec_params, Device, DeviceParams};
use super::host::KernelHost;
use super::kernel::{DeviceSpec, KernelError, VduseDevice, VduseHost};
use super::message::{read_request, write_reply};
use super::sys::VIRTIO_ID_BLOCK;
use crate::export::{Export, ExportCommon, ExportError, RemoveMode};
use crate::virtio_blk::spec::{self, DeviceConfig, F_ACCESS_PLATFORM, F_CONFIG_WCE, SECTOR_SHIFT};

/// The vduse-blk part of `block-export-add`, checked by the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VduseBlkOptions {
    /// The device name (`/dev/vduse/$NAME`, `vdpa dev add ... name`).
    pub name: String,
    /// Request queues.
    pub num_queues: u16,
    /// Largest ring per queue (a power of two, 4 to 1024).
    pub queue_size: u16,
    /// Logical block size (a power of two, 512 to 2 MiB).
    pub logical_block_size: u32,
    /// The GET_ID string.
    pub serial: String,
}

/// The alignment of ring metadata the kernel is told (a page).
const VQ_ALIGN: u32 = 4096;

/// How often `VDUSE_DESTROY_DEV` is retried while a queue task on an
/// iothread still drops its last handle on the device.
const DESTROY_RETRIES: u32 = 50;

/// What the protocol thread and the control side share.
struct Shared {
    id: String,
    name: String,
    on_drained: crate::export::DrainedFn,
    removing: AtomicBool,
    drained_sent: AtomicBool,
    driver_ok: AtomicBool,
    stop: EventFd,
}

impl Shared {
    fn wake(&self) {
        let _ = self.stop.write(1);
    }

    fn finished(&self) {
        if self.removing.load(Ordering::Acquire) && !self.drained_sent.swap(true, Ordering::AcqRel)
        {
            (self.on_drained)(&self.id);
        }
    }
}

/// A vduse-blk export held by the control plane's registry.
pub struct VduseBlkExport {
    shared: Arc<Shared>,
}

/// Creates the device in the kernel and starts serving it.
pub fn start(common: ExportCommon, opts: VduseBlkOptions) -> Result<Box<dyn Export>, ExportError> {
    start_with(common, opts, Arc::new(KernelHost::default()))
}

/// The features a vduse-blk device offers: the virtio-blk set, less
/// `CONFIG_WCE` (VDUSE's configuration space is read-only to the driver),
/// plus `ACCESS_PLATFORM` (the kernel requires it: addresses are IOVAs).
pub fn device_features(read_only: bool, num_queues: u16) -> u64 {
    (spec::device_features(read_only, num_queues) & !(1 << F_CONFIG_WCE)) | 1 << F_ACCESS_PLATFORM
}

/// The `VDUSE_CREATE_DEV` request for an export.
pub fn device_spec(common: &ExportCommon, opts: &VduseBlkOptions) -> DeviceSpec {
    let config = DeviceConfig {
        capacity: common.node.size() >> SECTOR_SHIFT,
        blk_size: opts.logical_block_size,
        num_queues: opts.num_queues,
        writeback: !common.writethrough,
    };
    DeviceSpec {
        name: opts.name.clone(),
        device_id: VIRTIO_ID_BLOCK,
        features: device_features(!common.writable, opts.num_queues),
        vq_num: u32::from(opts.num_queues),
        vq_align: VQ_ALIGN,
        config: config.to_bytes().to_vec(),
    }
}

fn failed(e: KernelError) -> ExportError {
    let text = format!("failed to create vduse device: {e}");
    match e {
        KernelError::Missing { .. } => ExportError::Unavailable(text),
        _ => ExportError::Failed(text),
    }
}

/// [`start`] with the kernel side given (the stand-in, in tests).
pub fn start_with(
    common: ExportCommon,
    opts: VduseBlkOptions,
    host: Arc<dyn VduseHost>,
) -> Result<Box<dyn Export>, ExportError> {
    if common.iothreads.is_empty() {
        return Err(ExportError::Failed("export has no iothread".into()));
    }
    let stop = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
        .map_err(|e| ExportError::Failed(format!("cannot create eventfd: {e}")))?;
    let dev = host.create(&device_spec(&common, &opts)).map_err(failed)?;
    let undo = |dev: Arc<dyn VduseDevice>, why: ExportError| {
        drop(dev);
        destroy(&*host, &opts.name);
        why
    };
    for i in 0..u32::from(opts.num_queues) {
        if let Err(e) = dev.vq_setup(i, opts.queue_size) {
            let why = failed(KernelError::Ioctl {
                op: "VDUSE_VQ_SETUP",
                source: e,
            });
            return Err(undo(dev, why));
        }
    }
    let params = DeviceParams {
        exec: exec_params(
            &common,
            opts.logical_block_size,
            &opts.serial,
            common.stats.clone(),
        ),
        iothreads: common.iothreads.clone(),
        num_queues: opts.num_queues,
        queue_size: opts.queue_size,
    };
    let shared = Arc::new(Shared {
        id: common.id.clone(),
        name: opts.name.clone(),
        on_drained: common.on_drained.clone(),
        removing: AtomicBool::new(false),
        drained_sent: AtomicBool::new(false),
        driver_ok: AtomicBool::new(false),
        stop,
    });
    let thread_name: String = format!("vduse-{}", common.id).chars().take(15).collect();
    let sh = shared.clone();
    let device = Device::new(dev.clone(), params);
    let spawned = std::thread::Builder::new().name(thread_name).spawn({
        let host = host.clone();
        move || serve(device, host, sh)
    });
    match spawned {
        Ok(_) => Ok(Box::new(VduseBlkExport { shared })),
        Err(e) => Err(undo(
            dev,
            ExportError::Failed(format!("cannot start the vduse-blk thread: {e}")),
        )),
    }
}

/// `VDUSE_DESTROY_DEV`, retried briefly while a handle is still closing.
fn destroy(host: &dyn VduseHost, name: &str) {
    for attempt in 0..=DESTROY_RETRIES {
        match host.destroy(name) {
            Ok(()) => return,
            Err(KernelError::Busy(_)) if attempt < DESTROY_RETRIES => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e @ KernelError::Busy(_)) => {
                log::warn!("vduse: {e}; `vdpa dev del {name}` detaches it, then it can go");
                return;
            }
            Err(e) => {
                log::warn!("vduse: cannot destroy '{name}': {e}");
                return;
            }
        }
    }
}

/// What woke the protocol thread.
enum Ready {
    Message,
    Stop,
}

fn wait(dev: &dyn VduseDevice, shared: &Shared) -> Ready {
    loop {
        let mut fds = [
            PollFd::new(dev.fd(), PollFlags::POLLIN),
            PollFd::new(shared.stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::error!("vduse {}: poll: {e}", shared.name);
                return Ready::Stop;
            }
        }
        if shared.removing.load(Ordering::Acquire)
            || fds[1].revents().is_some_and(|r| !r.is_empty())
        {
            return Ready::Stop;
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            return Ready::Message;
        }
    }
}

/// The protocol thread: answer messages until removed, then tear down.
fn serve(mut device: Device, host: Arc<dyn VduseHost>, shared: Arc<Shared>) {
    let dev = device.kernel();
    let mut broken = false;
    while let Ready::Message = wait(&*dev, &shared) {
        if broken {
            // The fd failed: nothing more to read; wait for removal.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        loop {
            match read_request(dev.fd()) {
                Ok(Some(m)) => {
                    let reply = device.handle(m.request);
                    shared
                        .driver_ok
                        .store(device.driver_ok(), Ordering::Release);
                    if let Err(e) = write_reply(dev.fd(), m.id, reply) {
                        log::error!("vduse {}: cannot answer request {}: {e}", shared.name, m.id);
                        broken = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    log::error!(
                        "vduse {}: device fd: {e}; the device stops serving",
                        shared.name
                    );
                    device.reset();
                    broken = true;
                    break;
                }
            }
        }
    }
    device.reset();
    drop(device);
    drop(dev);
    destroy(&*host, &shared.name);
    shared.finished();
}

impl Export for VduseBlkExport {
    fn id(&self) -> &str {
        &self.shared.id
    }

    fn kind(&self) -> &'static str {
        "vduse-blk"
    }

    fn remove(&mut self, mode: RemoveMode) -> Result<(), ExportError> {
        let sh = &self.shared;
        if mode == RemoveMode::Safe && sh.driver_ok.load(Ordering::Acquire) {
            return Err(ExportError::InUse(sh.id.clone()));
        }
        sh.removing.store(true, Ordering::Release);
        sh.wake();
        Ok(())
    }

    fn clients(&self) -> usize {
        usize::from(self.shared.driver_ok.load(Ordering::Acquire))
    }
}

impl Drop for VduseBlkExport {
    fn drop(&mut self) {
        // Dropped without removal (exit): stop serving and destroy the device.
        if !self.shared.removing.swap(true, Ordering::AcqRel) {
            self.shared.wake();
        }
    }
}
