//! [`KernelHost`]: the real `/dev/vduse`, through the ioctls of
//! [`super::sys`].
//!
//! **Not exercised on the machines this is developed and tested on**
//! (their kernels have no `CONFIG_VDPA`): only the first step, opening
//! `/dev/vduse/control` and reporting that it is missing, runs in the
//! tests. Everything above [`super::kernel`] is tested through the
//! in-process stand-in instead.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::kernel::{DeviceSpec, KernelError, VduseDevice, VduseHost};
use super::sys::{self, CreateDev, DevConfig, IotlbEntry, VqConfig, VqEventfd, VqInfo};

/// Where the VDUSE nodes live.
#[derive(Debug, Clone)]
pub struct KernelHost {
    dir: PathBuf,
}

impl Default for KernelHost {
    fn default() -> Self {
        KernelHost {
            dir: PathBuf::from("/dev/vduse"),
        }
    }
}

/// How long `/dev/vduse/$NAME` may take to appear (devtmpfs makes it at
/// once; a static `/dev` waits for udev).
const NODE_WAIT: Duration = Duration::from_secs(2);

fn ioctl_err(op: &'static str) -> impl FnOnce(io::Error) -> KernelError {
    move |source| KernelError::Ioctl { op, source }
}

/// A device name as the uapi wants it: NUL-terminated in `NAME_MAX` bytes.
fn name_bytes(name: &str) -> Option<[u8; sys::NAME_MAX]> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() >= sys::NAME_MAX || b.contains(&0) {
        return None;
    }
    let mut out = [0u8; sys::NAME_MAX];
    out[..b.len()].copy_from_slice(b);
    Some(out)
}

impl KernelHost {
    fn control(&self) -> Result<File, KernelError> {
        let node = self.dir.join("control");
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&node)
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => KernelError::Missing { node },
                _ => KernelError::Open { node, source },
            })
    }

    fn open_device(node: &Path) -> io::Result<File> {
        let deadline = Instant::now() + NODE_WAIT;
        loop {
            let r = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
                .open(node);
            match r {
                Err(e) if e.kind() == io::ErrorKind::NotFound && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                r => return r,
            }
        }
    }
}

impl VduseHost for KernelHost {
    fn create(&self, spec: &DeviceSpec) -> Result<Arc<dyn VduseDevice>, KernelError> {
        let control = self.control()?;
        let version =
            sys::get_api_version(control.as_fd()).map_err(ioctl_err("VDUSE_GET_API_VERSION"))?;
        log::debug!(
            "vduse: kernel API version {version}; using {}",
            sys::API_VERSION
        );
        sys::set_api_version(control.as_fd(), sys::API_VERSION)
            .map_err(ioctl_err("VDUSE_SET_API_VERSION"))?;
        let Some(name) = name_bytes(&spec.name) else {
            return Err(KernelError::Ioctl {
                op: "VDUSE_CREATE_DEV",
                source: io::Error::from_raw_os_error(libc::EINVAL),
            });
        };
        if spec.config.len() > sys::CONFIG_SPACE_MAX {
            return Err(KernelError::Ioctl {
                op: "VDUSE_CREATE_DEV",
                source: io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        let mut arg = CreateDev {
            head: DevConfig {
                name,
                vendor_id: 0,
                device_id: spec.device_id,
                features: spec.features,
                vq_num: spec.vq_num,
                vq_align: spec.vq_align,
                reserved: [0; 13],
                config_size: spec.config.len() as u32,
            },
            config: [0; sys::CONFIG_SPACE_MAX],
        };
        arg.config[..spec.config.len()].copy_from_slice(&spec.config);
        sys::create_dev(control.as_fd(), &arg).map_err(|e| match e.raw_os_error() {
            Some(libc::EEXIST) => KernelError::Exists(spec.name.clone()),
            _ => KernelError::Ioctl {
                op: "VDUSE_CREATE_DEV",
                source: e,
            },
        })?;
        let node = self.dir.join(&spec.name);
        match Self::open_device(&node) {
            Ok(file) => Ok(Arc::new(KernelDevice {
                name: spec.name.clone(),
                file,
            })),
            Err(source) => {
                if let Err(e) = sys::destroy_dev(control.as_fd(), &name) {
                    log::warn!("vduse: cannot destroy '{}' again: {e}", spec.name);
                }
                Err(KernelError::Open { node, source })
            }
        }
    }

    fn destroy(&self, name: &str) -> Result<(), KernelError> {
        let control = self.control()?;
        let Some(bytes) = name_bytes(name) else {
            return Ok(());
        };
        sys::destroy_dev(control.as_fd(), &bytes).map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => KernelError::Busy(name.to_string()),
            _ => KernelError::Ioctl {
                op: "VDUSE_DESTROY_DEV",
                source: e,
            },
        })
    }
}

/// `/dev/vduse/$NAME`, open.
#[derive(Debug)]
struct KernelDevice {
    name: String,
    file: File,
}

impl VduseDevice for KernelDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    fn vq_setup(&self, index: u32, max_size: u16) -> io::Result<()> {
        sys::vq_setup(
            self.fd(),
            &VqConfig {
                index,
                max_size,
                reserved: [0; 13],
            },
        )
    }

    fn vq_info(&self, index: u32) -> io::Result<VqInfo> {
        let mut info = VqInfo {
            index,
            ..VqInfo::default()
        };
        sys::vq_get_info(self.fd(), &mut info)?;
        Ok(info)
    }

    fn set_kick(&self, index: u32, kick: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let fd = kick.map_or(sys::EVENTFD_DEASSIGN, |k| k.as_raw_fd());
        sys::vq_setup_kickfd(self.fd(), &VqEventfd { index, fd })
    }

    fn inject_vq_irq(&self, index: u32) -> io::Result<()> {
        sys::vq_inject_irq(self.fd(), index)
    }

    fn inject_config_irq(&self) -> io::Result<()> {
        sys::dev_inject_config_irq(self.fd())
    }

    fn iotlb_fd(&self, start: u64, last: u64) -> io::Result<Option<(File, IotlbEntry)>> {
        let mut entry = IotlbEntry {
            start,
            last,
            ..IotlbEntry::default()
        };
        match sys::iotlb_get_fd(self.fd(), &mut entry) {
            Ok(fd) => Ok(Some((File::from(fd), entry))),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn driver_features(&self) -> io::Result<u64> {
        sys::dev_get_features(self.fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_fit_the_uapi() {
        assert!(name_bytes("vd0").is_some());
        assert!(name_bytes("").is_none());
        assert!(name_bytes(&"x".repeat(255)).is_some());
        assert!(name_bytes(&"x".repeat(256)).is_none());
        assert!(name_bytes("a\0b").is_none());
    }

    #[test]
    fn a_missing_control_node_is_named() {
        let dir = tempfile::tempdir().expect("dir");
        let host = KernelHost {
            dir: dir.path().join("vduse"),
        };
        let spec = DeviceSpec {
            name: "vd0".into(),
            device_id: sys::VIRTIO_ID_BLOCK,
            features: 0,
            vq_num: 1,
            vq_align: 4096,
            config: vec![0; 8],
        };
        let e = host.create(&spec).err().expect("no control node");
        assert!(matches!(e, KernelError::Missing { .. }), "{e}");
        assert!(
            e.to_string().contains("vduse/control does not exist"),
            "{e}"
        );
    }
}
