//! Mounting with the `fuser` crate (a plain `mount(2)` as root, no
//! libfuse), and the INIT negotiation it runs: what the export asks of the
//! kernel, and whether the kernel offers FUSE over io_uring.

use std::path::Path;
use std::sync::{Arc, Mutex};

use fuser::{Config, InitFlags, KernelConfig, MountOption, Session, SessionACL};

use super::exec::MAX_IO;

/// Requests the kernel may have in the background (async direct I/O,
/// readahead) at once: the kernel's default of 12 would cap a qd32 client.
const MAX_BACKGROUND: u16 = 256;

/// What INIT settled.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Negotiated {
    /// FUSE over io_uring is on for this connection.
    pub(crate) uring: bool,
    /// The kernel offered it (`enable_uring`).
    pub(crate) uring_offered: bool,
}

/// The `fuser` file system whose only job is the INIT reply; requests are
/// served by the export's iothreads, never by `fuser`'s session loop.
pub(crate) struct InitFs {
    want_uring: bool,
    out: Arc<Mutex<Negotiated>>,
}

impl fuser::Filesystem for InitFs {
    fn init(&mut self, _req: &fuser::Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let caps = config.capabilities();
        let offered = caps.contains(InitFlags::FUSE_OVER_IO_URING);
        // Async direct I/O lets one submitter keep many requests in flight;
        // O_TRUNC comes inside OPEN (and is ignored there, as by QSD).
        let mut want = InitFlags::FUSE_ASYNC_DIO | InitFlags::FUSE_ATOMIC_O_TRUNC;
        let uring = self.want_uring && offered;
        if uring {
            want |= InitFlags::FUSE_OVER_IO_URING;
        }
        let _ = config.add_capabilities(want & caps);
        let _ = config.set_max_write(MAX_IO as u32);
        let _ = config.set_max_background(MAX_BACKGROUND);
        let _ = config.set_congestion_threshold(MAX_BACKGROUND / 4 * 3);
        if let Ok(mut n) = self.out.lock() {
            *n = Negotiated {
                uring,
                uring_offered: offered,
            };
        }
        Ok(())
    }
}

/// A mounted connection: the `fuser` session (whose drop unmounts, if the
/// export has not) and what INIT settled.
pub(crate) struct Mounted {
    pub(crate) session: Session<InitFs>,
    pub(crate) negotiated: Negotiated,
}

/// Mounts `path` (absolute) with `default_permissions`, and `allow_other`
/// when asked; the INIT reply is written before this returns.
pub(crate) fn mount(path: &Path, allow_other: bool, want_uring: bool) -> std::io::Result<Mounted> {
    let out = Arc::new(Mutex::new(Negotiated::default()));
    let fs = InitFs {
        want_uring,
        out: out.clone(),
    };
    let mut config = Config::default();
    config.mount_options = vec![MountOption::DefaultPermissions];
    config.acl = if allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    let session = Session::new(fs, path, &config)?;
    let negotiated = out.lock().map(|n| *n).unwrap_or_default();
    Ok(Mounted {
        session,
        negotiated,
    })
}
