//! [`Device`]: the state of one VDUSE device and its answers to the
//! kernel's messages (one at a time, on the export's protocol thread).
//!
//! ```text
//!  SET_STATUS with DRIVER_OK  ─► map every IOTLB region, then per queue:
//!                                VQ_GET_INFO; if ready, a kick eventfd
//!                                (VQ_SETUP_KICKFD) and the queue task on
//!                                its iothread
//!  SET_STATUS without it      ─► stop the queues (their requests finish)
//!  SET_STATUS 0 (reset)       ─► stop, forget the IOTLB and queue states
//!  UPDATE_IOTLB a..=b         ─► remap a..=b; queues load the new map on
//!                                their next batch
//!  GET_VQ_STATE i             ─► the first avail entry queue i has not taken
//! ```
//!
//! Everything the kernel says is checked before use: a queue index beyond
//! ours, a ring size of 0, above what `VQ_SETUP` allowed or not a power of
//! two, rings outside the mapped IOVA space (caught by the queue, which
//! then stops as "needs reset"). A refused `SET_STATUS` is answered
//! `FAILED`, so the kernel keeps the old status.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use engine::iothread::IoThreadHandle;
use nix::sys::eventfd::{EfdFlags, EventFd};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace};

use super::iotlb::IotlbMap;
use super::kernel::VduseDevice;
use super::message::{Reply, Request};
use crate::stats::ExportStats;
use crate::virtio_blk::spec::F_EVENT_IDX;
use crate::virtio_blk::{spawn_queue, ExecParams, Notify, QueueControl, QueueEnd, QueueSetup};

/// virtio status `DRIVER_OK`.
pub const STATUS_DRIVER_OK: u8 = 4;

/// How long stopping a queue waits for its requests in flight.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// What the device serves with, decided when the export is added.
#[derive(Clone)]
pub struct DeviceParams {
    /// Request execution (node, writability, block size, GET_ID serial, stats).
    pub exec: ExecParams,
    /// Where queue `i` runs: `iothreads[i % len]`.
    pub iothreads: Vec<IoThreadHandle>,
    /// Queues offered.
    pub num_queues: u16,
    /// Largest ring per queue (`VQ_SETUP`'s `max_size`).
    pub queue_size: u16,
}

/// A queue's interrupt: `VDUSE_VQ_INJECT_IRQ` through the device.
struct Irq {
    dev: Arc<dyn VduseDevice>,
    index: u32,
}

impl Notify for Irq {
    fn notify(&self) {
        if let Err(e) = self.dev.inject_vq_irq(self.index) {
            log::debug!(
                "vduse {}: VDUSE_VQ_INJECT_IRQ {}: {e}",
                self.dev.name(),
                self.index
            );
        }
    }
}

struct Running {
    control: Arc<QueueControl>,
    done: Receiver<QueueEnd>,
}

/// One virtqueue as the device sees it.
#[derive(Default)]
struct Vq {
    running: Option<Running>,
    /// Where it stopped last (answers `GET_VQ_STATE` while stopped).
    last_avail: Option<u16>,
}

/// Why a queue was not started.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("VDUSE_DEV_GET_FEATURES: {0}")]
    Features(#[source] std::io::Error),
    #[error("VDUSE_VQ_GET_INFO {0}: {1}")]
    Info(u32, #[source] std::io::Error),
    #[error("queue {index}: ring size {num} is not a power of two in 1..={max}")]
    Size { index: u32, num: u32, max: u16 },
    #[error("queue {0}: cannot create its kick eventfd: {1}")]
    Eventfd(u32, #[source] nix::Error),
    #[error("VDUSE_VQ_SETUP_KICKFD {0}: {1}")]
    Kick(u32, #[source] std::io::Error),
    #[error("queue {0}: its iothread has stopped")]
    Iothread(u32),
}

/// See the module docs.
pub struct Device {
    dev: Arc<dyn VduseDevice>,
    params: DeviceParams,
    iotlb: IotlbMap,
    status: u8,
    vqs: Vec<Vq>,
}

impl Device {
    /// A device that `VDUSE_CREATE_DEV` made and `VQ_SETUP` sized.
    pub fn new(dev: Arc<dyn VduseDevice>, params: DeviceParams) -> Device {
        let vqs = (0..params.num_queues).map(|_| Vq::default()).collect();
        Device {
            dev,
            params,
            iotlb: IotlbMap::default(),
            status: 0,
            vqs,
        }
    }

    /// The kernel device this serves.
    pub fn kernel(&self) -> Arc<dyn VduseDevice> {
        self.dev.clone()
    }

    /// True when a driver is using the device (`DRIVER_OK`).
    pub fn driver_ok(&self) -> bool {
        self.status & STATUS_DRIVER_OK != 0
    }

    /// Answers one message.
    pub fn handle(&mut self, request: Request) -> Reply {
        match request {
            Request::GetVqState { index } => {
                let Some(vq) = self.vqs.get(index as usize) else {
                    log::warn!(
                        "vduse {}: GET_VQ_STATE of queue {index}, which we do not have",
                        self.dev.name()
                    );
                    return Reply::Failed;
                };
                let avail = vq
                    .running
                    .as_ref()
                    .and_then(|r| r.control.next_avail())
                    .or(vq.last_avail)
                    .unwrap_or(0);
                Reply::VqState {
                    index,
                    avail_index: avail,
                }
            }
            Request::SetStatus { status } => self.set_status(status),
            Request::UpdateIotlb { start, last } => {
                if start > last {
                    return Reply::Failed;
                }
                self.iotlb.update(&*self.dev, start, last);
                Reply::Ok
            }
            Request::Unknown { kind } => {
                log::warn!("vduse {}: unknown request type {kind}", self.dev.name());
                Reply::Failed
            }
        }
    }

    fn set_status(&mut self, status: u8) -> Reply {
        let was_ok = self.driver_ok();
        let now_ok = status & STATUS_DRIVER_OK != 0;
        if now_ok && !was_ok {
            if let Err(e) = self.start() {
                log::warn!("vduse {}: cannot start the device: {e}", self.dev.name());
                self.stop_queues();
                return Reply::Failed;
            }
        } else if !now_ok {
            self.stop_queues();
        }
        if status == 0 {
            self.reset();
        }
        self.status = status;
        Reply::Ok
    }

    /// Stops everything and forgets the driver's state (reset, removal).
    pub fn reset(&mut self) {
        self.stop_queues();
        self.iotlb.clear();
        for vq in &mut self.vqs {
            vq.last_avail = None;
        }
        self.status = 0;
    }

    fn start(&mut self) -> Result<(), StartError> {
        let features = self.dev.driver_features().map_err(StartError::Features)?;
        let event_idx = features & (1 << F_EVENT_IDX) != 0;
        self.iotlb.clear();
        self.iotlb.fetch(&*self.dev, 0, u64::MAX);
        for index in 0..u32::from(self.params.num_queues) {
            self.start_queue(index, event_idx)?;
        }
        Ok(())
    }

    fn start_queue(&mut self, index: u32, event_idx: bool) -> Result<(), StartError> {
        let info = self
            .dev
            .vq_info(index)
            .map_err(|e| StartError::Info(index, e))?;
        if info.ready == 0 {
            return Ok(());
        }
        let max = self.params.queue_size;
        let size = u16::try_from(info.num)
            .ok()
            .filter(|&n| n > 0 && n <= max && n.is_power_of_two())
            .ok_or(StartError::Size {
                index,
                num: info.num,
                max,
            })?;
        let next_avail = info.state[0];
        // The used index is where the driver's ring says it is (the kernel
        // keeps only the avail side); a ring we cannot read is caught by the
        // queue task, which stops it as broken.
        let next_used = self
            .iotlb
            .atomic()
            .memory()
            .read_obj::<u16>(GuestAddress(info.device_addr.wrapping_add(2)))
            .map(u16::from_le)
            .unwrap_or(next_avail);
        let kick = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC)
            .map_err(|e| StartError::Eventfd(index, e))?;
        self.dev
            .set_kick(index, Some(kick.as_fd()))
            .map_err(|e| StartError::Kick(index, e))?;
        let kick: OwnedFd = kick.into();
        let setup = QueueSetup {
            index: index as u16,
            size,
            desc_table: info.desc_addr,
            avail_ring: info.driver_addr,
            used_ring: info.device_addr,
            next_avail,
            next_used,
            event_idx,
            resubmit: Vec::new(),
        };
        let irq: Arc<dyn Notify> = Arc::new(Irq {
            dev: self.dev.clone(),
            index,
        });
        let (control, done) = QueueControl::new(Some(irq), None);
        let threads = &self.params.iothreads;
        let Some(thread) = threads.get(index as usize % threads.len().max(1)) else {
            return Err(StartError::Iothread(index));
        };
        let memory = self.iotlb.atomic();
        let params = self.params.exec.clone();
        let ctl = control.clone();
        thread
            .post(move || spawn_queue(setup, kick, memory, params, ctl, None))
            .map_err(|_| StartError::Iothread(index))?;
        if let Some(vq) = self.vqs.get_mut(index as usize) {
            vq.running = Some(Running { control, done });
        }
        Ok(())
    }

    fn stop_queues(&mut self) {
        for (i, vq) in self.vqs.iter_mut().enumerate() {
            let Some(r) = vq.running.take() else {
                continue;
            };
            r.control.stop();
            match r.done.recv_timeout(STOP_TIMEOUT) {
                Ok(end) => vq.last_avail = Some(end.next_avail),
                Err(_) => log::warn!(
                    "vduse {}: queue {i} did not stop within {STOP_TIMEOUT:?}",
                    self.dev.name()
                ),
            }
            // The interrupt holds the device open; drop it with the queue.
            r.control.set_call(None);
            if let Err(e) = self.dev.set_kick(i as u32, None) {
                log::debug!(
                    "vduse {}: VDUSE_VQ_SETUP_KICKFD {i} off: {e}",
                    self.dev.name()
                );
            }
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.stop_queues();
    }
}

/// [`ExecParams`] for a vduse-blk export.
pub fn exec_params(
    common: &crate::export::ExportCommon,
    block_size: u32,
    serial: &str,
    stats: Arc<ExportStats>,
) -> ExecParams {
    ExecParams {
        node: common.node.clone(),
        writable: common.writable,
        writethrough: Arc::new(AtomicBool::new(common.writethrough)),
        block_size,
        id: serial.as_bytes().to_vec(),
        stats,
    }
}
