//! An in-process stand-in for the kernel side of VDUSE, for the tests:
//! [`StandIn`] plays `/dev/vduse/control`, [`FakeDevice`] plays
//! `/dev/vduse/$NAME`. Messages travel over a `SOCK_SEQPACKET`
//! socketpair in the uapi byte layout (one record per read, as the device
//! fd gives), IOTLB regions are memfds, kicks and interrupts eventfds. The
//! test drives it as the kernel would: it sets the queues' info and the
//! driver features, sends `SET_STATUS` / `UPDATE_IOTLB` / `GET_VQ_STATE`
//! and waits for the answer, kicks, and waits for interrupts.
//!
//! Like the kernel, it refuses `VDUSE_DESTROY_DEV` while the device is
//! open, so the tests see that the driver closes every handle first.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use super::kernel::{DeviceSpec, KernelError, VduseDevice, VduseHost};
use super::message::{decode_reply, encode_request, Message, Request};
use super::sys::{IotlbEntry, VqInfo, REQUEST_LEN, RESPONSE_LEN};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long the kernel side waits for an answer or an interrupt.
pub const WAIT: Duration = Duration::from_secs(10);

/// The kernel's view of one device.
pub struct FakeDevice {
    pub spec: DeviceSpec,
    ours: OwnedFd,
    kernel: OwnedFd,
    next_id: AtomicUsize,
    /// Handles the driver holds open.
    open: AtomicUsize,
    pub max_sizes: Mutex<Vec<Option<u16>>>,
    pub vq_info: Mutex<Vec<VqInfo>>,
    pub kicks: Mutex<Vec<Option<OwnedFd>>>,
    pub irqs: Vec<EventFd>,
    pub features: Mutex<u64>,
    /// `(entry, memfd)`: what `VDUSE_IOTLB_GET_FD` finds.
    pub iotlb: Mutex<Vec<(IotlbEntry, File)>>,
    pub iotlb_calls: AtomicUsize,
}

impl FakeDevice {
    fn new(spec: DeviceSpec) -> io::Result<FakeDevice> {
        let (ours, kernel) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )?;
        let n = spec.vq_num as usize;
        let irqs = (0..n)
            .map(|_| EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FakeDevice {
            spec,
            ours,
            kernel,
            next_id: AtomicUsize::new(1),
            open: AtomicUsize::new(0),
            max_sizes: Mutex::new(vec![None; n]),
            vq_info: Mutex::new(
                (0..n as u32)
                    .map(|index| VqInfo {
                        index,
                        ..VqInfo::default()
                    })
                    .collect(),
            ),
            kicks: Mutex::new((0..n).map(|_| None).collect()),
            irqs,
            features: Mutex::new(0),
            iotlb: Mutex::new(Vec::new()),
            iotlb_calls: AtomicUsize::new(0),
        })
    }

    /// Handles open on the device now.
    pub fn open_handles(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Sends a message and waits for its answer, as `vduse_dev_msg_sync`
    /// does: `(ok, vq_state index, avail index)`.
    pub fn request(&self, request: Request) -> (bool, u32, u16) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) as u32;
        let b = encode_request(&Message { id, request });
        assert_eq!(
            nix::unistd::write(&self.kernel, &b).expect("send request"),
            REQUEST_LEN
        );
        let mut fds = [PollFd::new(self.kernel.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(WAIT.as_millis()).unwrap_or(u16::MAX);
        let n = poll(&mut fds, PollTimeout::from(ms)).expect("poll");
        assert_eq!(n, 1, "no answer to {request:?}");
        let mut r = [0u8; RESPONSE_LEN];
        assert_eq!(
            nix::unistd::read(&self.kernel, &mut r).expect("answer"),
            RESPONSE_LEN
        );
        let (rid, ok, index, avail) = decode_reply(&r).expect("reserved words zero");
        assert_eq!(rid, id, "answer to the request asked");
        (ok, index, avail)
    }

    /// Signals queue `index`'s kick eventfd (a driver's notify).
    pub fn kick(&self, index: usize) {
        let kicks = lock(&self.kicks);
        let fd = kicks
            .get(index)
            .and_then(Option::as_ref)
            .expect("kick fd set up");
        nix::unistd::write(fd, &1u64.to_ne_bytes()).expect("kick");
    }

    /// Waits for an interrupt on queue `index`.
    pub fn wait_irq(&self, index: usize) {
        let irq = &self.irqs[index];
        let mut fds = [PollFd::new(irq.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(WAIT.as_millis()).unwrap_or(u16::MAX);
        assert_eq!(
            poll(&mut fds, PollTimeout::from(ms)).expect("poll"),
            1,
            "no interrupt"
        );
        let _ = irq.read();
    }
}

/// A handle the driver holds: counted, so destroy can refuse while open.
struct Handle(Arc<FakeDevice>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl VduseDevice for Handle {
    fn name(&self) -> &str {
        &self.0.spec.name
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.0.ours.as_fd()
    }

    fn vq_setup(&self, index: u32, max_size: u16) -> io::Result<()> {
        let mut s = lock(&self.0.max_sizes);
        let slot = s
            .get_mut(index as usize)
            .ok_or(io::Error::from_raw_os_error(libc::EINVAL))?;
        *slot = Some(max_size);
        Ok(())
    }

    fn vq_info(&self, index: u32) -> io::Result<VqInfo> {
        lock(&self.0.vq_info)
            .get(index as usize)
            .copied()
            .ok_or(io::Error::from_raw_os_error(libc::EINVAL))
    }

    fn set_kick(&self, index: u32, kick: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let mut k = lock(&self.0.kicks);
        let slot = k
            .get_mut(index as usize)
            .ok_or(io::Error::from_raw_os_error(libc::EINVAL))?;
        // The kernel takes its own reference (eventfd_ctx_fdget).
        *slot = kick.map(|f| f.try_clone_to_owned()).transpose()?;
        Ok(())
    }

    fn inject_vq_irq(&self, index: u32) -> io::Result<()> {
        let irq = self
            .0
            .irqs
            .get(index as usize)
            .ok_or(io::Error::from_raw_os_error(libc::EINVAL))?;
        irq.write(1)?;
        Ok(())
    }

    fn inject_config_irq(&self) -> io::Result<()> {
        Ok(())
    }

    fn iotlb_fd(&self, start: u64, last: u64) -> io::Result<Option<(File, IotlbEntry)>> {
        self.0.iotlb_calls.fetch_add(1, Ordering::Relaxed);
        let regions = lock(&self.0.iotlb);
        let mut found: Vec<&(IotlbEntry, File)> = regions
            .iter()
            .filter(|(e, _)| e.start <= last && e.last >= start)
            .collect();
        found.sort_by_key(|(e, _)| e.start);
        match found.first() {
            Some((e, f)) => Ok(Some((f.try_clone()?, *e))),
            None => Ok(None),
        }
    }

    fn driver_features(&self) -> io::Result<u64> {
        Ok(*lock(&self.0.features))
    }
}

/// `/dev/vduse/control`, in process.
#[derive(Default)]
pub struct StandIn {
    pub devices: Mutex<HashMap<String, Arc<FakeDevice>>>,
    pub destroyed: Mutex<Vec<String>>,
}

impl StandIn {
    /// The device named `name`.
    pub fn device(&self, name: &str) -> Arc<FakeDevice> {
        lock(&self.devices)
            .get(name)
            .cloned()
            .expect("device created")
    }
}

impl VduseHost for StandIn {
    fn create(&self, spec: &DeviceSpec) -> Result<Arc<dyn VduseDevice>, KernelError> {
        let mut devices = lock(&self.devices);
        if devices.contains_key(&spec.name) {
            return Err(KernelError::Exists(spec.name.clone()));
        }
        let dev = Arc::new(
            FakeDevice::new(spec.clone()).map_err(|source| KernelError::Ioctl {
                op: "VDUSE_CREATE_DEV",
                source,
            })?,
        );
        dev.open.fetch_add(1, Ordering::AcqRel);
        devices.insert(spec.name.clone(), dev.clone());
        Ok(Arc::new(Handle(dev)))
    }

    fn destroy(&self, name: &str) -> Result<(), KernelError> {
        let mut devices = lock(&self.devices);
        let Some(dev) = devices.get(name) else {
            return Err(KernelError::Ioctl {
                op: "VDUSE_DESTROY_DEV",
                source: io::Error::from_raw_os_error(libc::EINVAL),
            });
        };
        if dev.open_handles() > 0 {
            return Err(KernelError::Busy(name.to_string()));
        }
        devices.remove(name);
        lock(&self.destroyed).push(name.to_string());
        Ok(())
    }
}
