//! [`Backend`]: the vhost-user-blk device state of one frontend
//! connection, driven by vhost's `BackendReqHandler` through
//! [`VhostUserBackendReqHandlerMut`] (one message at a time, on the
//! export's protocol thread). Queues start on their iothreads when a ring
//! has its addresses, memory, a kick fd and is enabled, and stop (waiting
//! for their requests in flight) on `GET_VRING_BASE`, disable, reset or
//! disconnect.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserShMemConfig,
    VhostUserSharedMsg, VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{
    Error as VuError, GpuBackend, Result as VuResult, VhostUserBackendReqHandlerMut,
};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace};

use super::export::ExportShared;
use super::inflight::InflightRegion;
use super::memory::{MemoryTable, MAX_MEM_SLOTS};
use super::vring::{Running, Vring};
use crate::virtio_blk::spec::{self, DeviceConfig, CONFIG_LEN, CONFIG_WRITEBACK};
use crate::virtio_blk::{spawn_queue, ExecParams, InflightLog, Notify, QueueControl, QueueSetup};

/// `VHOST_USER_F_PROTOCOL_FEATURES`.
const F_PROTOCOL_FEATURES: u64 = 1 << 30;
/// Largest ring (virtio's split-queue maximum).
const MAX_QUEUE_SIZE: u32 = 32768;

/// The protocol features we offer.
pub fn protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
        | VhostUserProtocolFeatures::INFLIGHT_SHMFD
        | VhostUserProtocolFeatures::STATUS
}

/// Device state of one connection. See the module docs.
pub struct Backend {
    shared: Arc<ExportShared>,
    acked_features: u64,
    acked_protocol: u64,
    memory: MemoryTable,
    vrings: Vec<Vring>,
    inflight: Option<Arc<InflightRegion>>,
    /// virtio device status (`SET_STATUS` / `GET_STATUS`).
    pub(crate) status: u8,
}

fn invalid(why: &'static str) -> VuError {
    VuError::InvalidOperation(why)
}

impl Backend {
    /// A device with no frontend state yet.
    pub fn new(shared: Arc<ExportShared>) -> Backend {
        let n = usize::from(shared.num_queues);
        Backend {
            shared,
            acked_features: 0,
            acked_protocol: 0,
            memory: MemoryTable::new(),
            vrings: (0..n).map(|_| Vring::default()).collect(),
            inflight: None,
            status: 0,
        }
    }

    /// The device features offered.
    pub fn features(&self) -> u64 {
        spec::device_features(!self.shared.common.writable, self.shared.num_queues)
            | F_PROTOCOL_FEATURES
    }

    /// REPLY_ACK was negotiated (for the messages answered beside vhost's handler).
    pub fn reply_ack(&self) -> bool {
        self.acked_protocol & VhostUserProtocolFeatures::REPLY_ACK.bits() != 0
    }

    /// True when any queue stopped on a broken ring (`NEEDS_RESET`).
    pub fn needs_reset(&self) -> bool {
        self.vrings
            .iter()
            .any(|v| v.running.as_ref().is_some_and(|r| r.control.is_broken()))
    }

    fn vring(&mut self, index: u32) -> VuResult<&mut Vring> {
        self.vrings
            .get_mut(index as usize)
            .ok_or(VuError::InvalidParam)
    }

    /// Stops every queue and forgets the frontend's state (disconnect,
    /// reset): the next frontend starts from scratch.
    pub fn reset(&mut self) {
        for (i, v) in self.vrings.iter_mut().enumerate() {
            v.stop(i);
            *v = Vring::default();
        }
        self.memory.clear();
        self.acked_features = 0;
        self.status = 0;
    }

    fn protocol_on(&self) -> bool {
        self.acked_features & F_PROTOCOL_FEATURES != 0
    }

    /// Starts ring `index` if it can run and is not running.
    fn maybe_start(&mut self, index: usize) -> VuResult<()> {
        let event_idx = self.acked_features & (1 << spec::F_EVENT_IDX) != 0;
        let protocol_on = self.protocol_on();
        let Some(v) = self.vrings.get(index) else {
            return Err(VuError::InvalidParam);
        };
        let enabled = v.enabled || !protocol_on;
        if v.running.is_some()
            || v.kick.is_none()
            || !v.addr_set
            || !enabled
            || !self.memory.is_set()
        {
            return Ok(());
        }
        let size = u64::from(v.size);
        let (Some(desc), Some(avail), Some(used)) = (
            self.memory.va_to_gpa(v.desc_va, 16 * size),
            self.memory.va_to_gpa(v.avail_va, 6 + 2 * size),
            self.memory.va_to_gpa(v.used_va, 6 + 8 * size),
        ) else {
            log::warn!("vhost-user-blk: ring {index} addresses are outside the memory table");
            return Err(invalid("ring addresses outside the memory table"));
        };
        let mut next_avail = v.next_avail;
        let mut next_used = v.next_used.unwrap_or(v.next_avail);
        let mut resubmit = Vec::new();
        if let Some(inf) = &self.inflight {
            // After a backend restart the used ring is the truth: what was
            // taken but not completed is resubmitted, as libvhost-user does.
            let mem = self.memory.atomic().memory();
            let ring_used: u16 = mem
                .read_obj(GuestAddress(used + 2))
                .map(u16::from_le)
                .unwrap_or(next_used);
            resubmit = inf.take_resubmits(index as u16, ring_used);
            if !resubmit.is_empty() {
                next_used = ring_used;
                next_avail = ring_used.wrapping_add(resubmit.len() as u16);
                log::info!(
                    "vhost-user-blk: ring {index}: resubmitting {} requests left in flight",
                    resubmit.len()
                );
            }
        }
        let setup = QueueSetup {
            index: index as u16,
            size: v.size,
            desc_table: desc,
            avail_ring: avail,
            used_ring: used,
            next_avail,
            next_used,
            event_idx,
            resubmit,
        };
        let kick: OwnedFd = match v.kick.as_ref().map(File::try_clone) {
            Some(Ok(f)) => f.into(),
            _ => return Err(invalid("cannot duplicate the kick fd")),
        };
        let call = v.call.clone().map(|c| c as Arc<dyn Notify>);
        let (control, done) = QueueControl::new(call, v.err.clone());
        let params = ExecParams {
            node: self.shared.common.node.clone(),
            writable: self.shared.common.writable,
            writethrough: self.shared.writethrough.clone(),
            block_size: self.shared.block_size,
            id: self.shared.common.id.as_bytes().to_vec(),
            stats: self.shared.common.stats.clone(),
        };
        let threads = &self.shared.common.iothreads;
        let Some(thread) = threads.get(index % threads.len().max(1)) else {
            return Err(invalid("export has no iothread"));
        };
        let memory = self.memory.atomic();
        let ctl = control.clone();
        let log: Option<Arc<dyn InflightLog>> =
            self.inflight.clone().map(|i| i as Arc<dyn InflightLog>);
        thread
            .post(move || spawn_queue(setup, kick, memory, params, ctl, log))
            .map_err(|_| invalid("iothread stopped"))?;
        if let Some(v) = self.vrings.get_mut(index) {
            v.running = Some(Running { control, done });
        }
        Ok(())
    }

    /// A frontend may not size the inflight region beyond our queues.
    fn check_inflight(&self, msg: &VhostUserInflight) -> VuResult<()> {
        let ok = msg.num_queues > 0
            && msg.num_queues <= self.shared.num_queues
            && msg.queue_size > 0
            && u32::from(msg.queue_size) <= MAX_QUEUE_SIZE;
        if ok {
            Ok(())
        } else {
            Err(VuError::InvalidParam)
        }
    }

    fn restart_if_running(&mut self, index: usize) -> VuResult<()> {
        let was = self.vrings.get(index).is_some_and(|v| v.running.is_some());
        if was {
            if let Some(v) = self.vrings.get_mut(index) {
                v.stop(index);
            }
        }
        self.maybe_start(index)
    }
}

impl VhostUserBackendReqHandlerMut for Backend {
    fn set_owner(&mut self) -> VuResult<()> {
        Ok(())
    }

    fn reset_owner(&mut self) -> VuResult<()> {
        self.reset();
        Ok(())
    }

    fn reset_device(&mut self) -> VuResult<()> {
        self.reset();
        Ok(())
    }

    fn get_features(&mut self) -> VuResult<u64> {
        Ok(self.features())
    }

    fn set_features(&mut self, features: u64) -> VuResult<()> {
        if features & !self.features() != 0 {
            return Err(VuError::FeatureMismatch);
        }
        self.acked_features = features;
        if !self.protocol_on() {
            for i in 0..self.vrings.len() {
                self.maybe_start(i)?;
            }
        }
        Ok(())
    }

    fn set_mem_table(
        &mut self,
        ctx: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy: Option<bool>,
    ) -> VuResult<Option<Vec<u64>>> {
        self.memory.set(ctx, files).map_err(|e| {
            log::warn!("vhost-user-blk: SET_MEM_TABLE: {e}");
            invalid("bad memory table")
        })?;
        for i in 0..self.vrings.len() {
            self.maybe_start(i)?;
        }
        Ok(None)
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> VuResult<()> {
        if num == 0 || num > MAX_QUEUE_SIZE || !num.is_power_of_two() {
            return Err(VuError::InvalidParam);
        }
        self.vring(index)?.size = num as u16;
        Ok(())
    }

    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> VuResult<()> {
        let v = self.vring(index)?;
        v.desc_va = descriptor;
        v.used_va = used;
        v.avail_va = available;
        v.addr_set = true;
        self.restart_if_running(index as usize)
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> VuResult<()> {
        let v = self.vring(index)?;
        v.next_avail = base as u16;
        v.next_used = None;
        Ok(())
    }

    fn get_vring_base(&mut self, index: u32) -> VuResult<VhostUserVringState> {
        let v = self.vring(index)?;
        v.stop(index as usize);
        // The ring restarts only with a new kick fd (vhost-user spec).
        v.kick = None;
        Ok(VhostUserVringState::new(index, u32::from(v.next_avail)))
    }

    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        let i = usize::from(index);
        let v = self.vring(u32::from(index))?;
        v.stop(i);
        v.kick = fd;
        self.maybe_start(i)
    }

    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        let v = self.vring(u32::from(index))?;
        v.call = fd.map(Arc::new);
        if let Some(r) = &v.running {
            r.control
                .set_call(v.call.clone().map(|c| c as Arc<dyn Notify>));
        }
        Ok(())
    }

    fn set_vring_err(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        let v = self.vring(u32::from(index))?;
        v.err = fd.map(Arc::new);
        if let Some(r) = &v.running {
            r.control.set_err(v.err.clone());
        }
        Ok(())
    }

    fn get_protocol_features(&mut self) -> VuResult<VhostUserProtocolFeatures> {
        Ok(protocol_features())
    }

    fn set_protocol_features(&mut self, features: u64) -> VuResult<()> {
        if features & !protocol_features().bits() != 0 {
            return Err(VuError::FeatureMismatch);
        }
        self.acked_protocol = features;
        Ok(())
    }

    fn get_queue_num(&mut self) -> VuResult<u64> {
        Ok(u64::from(self.shared.num_queues))
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> VuResult<()> {
        let i = index as usize;
        let v = self.vring(index)?;
        v.enabled = enable;
        if enable {
            self.maybe_start(i)
        } else {
            v.stop(i);
            Ok(())
        }
    }

    fn get_config(
        &mut self,
        offset: u32,
        size: u32,
        _flags: VhostUserConfigFlags,
    ) -> VuResult<Vec<u8>> {
        let cfg = DeviceConfig {
            capacity: self.shared.common.node.size() >> spec::SECTOR_SHIFT,
            blk_size: self.shared.block_size,
            num_queues: self.shared.num_queues,
            writeback: !self.shared.writethrough.load(Ordering::Relaxed),
        }
        .to_bytes();
        let (start, len) = (offset as usize, size as usize);
        match start.checked_add(len) {
            Some(end) if end <= CONFIG_LEN => Ok(cfg[start..end].to_vec()),
            _ => Err(VuError::InvalidParam),
        }
    }

    fn set_config(
        &mut self,
        offset: u32,
        buf: &[u8],
        _flags: VhostUserConfigFlags,
    ) -> VuResult<()> {
        // Only `writeback` is writable (VIRTIO_BLK_F_CONFIG_WCE).
        match (offset as usize, buf) {
            (CONFIG_WRITEBACK, [wb]) => {
                self.shared.writethrough.store(*wb == 0, Ordering::Relaxed);
                Ok(())
            }
            _ => Err(VuError::InvalidParam),
        }
    }

    fn set_gpu_socket(&mut self, _gpu: GpuBackend) -> VuResult<()> {
        Err(invalid("not a GPU device"))
    }

    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> VuResult<File> {
        Err(invalid("no shared objects"))
    }

    fn get_inflight_fd(&mut self, msg: &VhostUserInflight) -> VuResult<(VhostUserInflight, File)> {
        self.check_inflight(msg)?;
        let (region, file, len) =
            InflightRegion::create(msg.num_queues, msg.queue_size).map_err(|e| {
                log::warn!("vhost-user-blk: GET_INFLIGHT_FD: {e}");
                VuError::BackendInternalError
            })?;
        self.inflight = Some(Arc::new(region));
        Ok((
            VhostUserInflight::new(len, 0, msg.num_queues, msg.queue_size),
            file,
        ))
    }

    fn set_inflight_fd(&mut self, msg: &VhostUserInflight, file: File) -> VuResult<()> {
        self.check_inflight(msg)?;
        let region = InflightRegion::map(
            file,
            msg.mmap_offset,
            msg.mmap_size,
            msg.num_queues,
            msg.queue_size,
        )
        .map_err(|e| {
            log::warn!("vhost-user-blk: SET_INFLIGHT_FD: {e}");
            VuError::InvalidParam
        })?;
        self.inflight = Some(Arc::new(region));
        Ok(())
    }

    fn get_max_mem_slots(&mut self) -> VuResult<u64> {
        Ok(MAX_MEM_SLOTS)
    }

    fn add_mem_region(
        &mut self,
        region: &VhostUserSingleMemoryRegion,
        fd: File,
        _postcopy: Option<bool>,
    ) -> VuResult<Option<u64>> {
        self.memory.add(region, fd).map_err(|e| {
            log::warn!("vhost-user-blk: ADD_MEM_REG: {e}");
            invalid("bad memory region")
        })?;
        for i in 0..self.vrings.len() {
            self.maybe_start(i)?;
        }
        Ok(None)
    }

    fn remove_mem_region(&mut self, region: &VhostUserSingleMemoryRegion) -> VuResult<()> {
        self.memory.remove(region).map_err(|e| {
            log::warn!("vhost-user-blk: REM_MEM_REG: {e}");
            invalid("bad memory region")
        })
    }

    fn set_device_state_fd(
        &mut self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _fd: File,
    ) -> VuResult<Option<File>> {
        Err(invalid("no device state transfer"))
    }

    fn check_device_state(&mut self) -> VuResult<()> {
        Err(invalid("no device state transfer"))
    }

    fn get_shmem_config(&mut self) -> VuResult<VhostUserShMemConfig> {
        Err(invalid("no shared memory regions"))
    }

    fn set_log_base(&mut self, _log: &VhostUserLog, _file: File) -> VuResult<()> {
        Err(invalid("no dirty logging"))
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.reset();
    }
}
