//! [`VhostUserBlkExport`]: one vhost-user-blk export: its listening socket,
//! the protocol thread that serves one frontend at a time, and removal.
//!
//! # Removal
//!
//! Safe removal fails while a frontend is connected. Hard removal (and a
//! safe one with no frontend) wakes the protocol thread through an
//! eventfd; it drops the frontend (stopping its queues, which finish their
//! requests in flight), closes and unlinks the socket, and then reports
//! `on_drained` once.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::server::{listen, serve, VhostUserAddr};
use crate::export::{Export, ExportCommon, ExportError, RemoveMode};

/// The vhost-user-blk part of `block-export-add`.
#[derive(Debug)]
pub struct VhostUserBlkOptions {
    /// Where to listen.
    pub addr: VhostUserAddr,
    /// Logical block size (a power of two, 512 to 2 MiB, as QEMU checks).
    pub logical_block_size: u32,
    /// Request queues offered.
    pub num_queues: u16,
}

/// What the protocol thread and the control side share.
pub struct ExportShared {
    pub(crate) common: ExportCommon,
    pub(crate) block_size: u32,
    pub(crate) num_queues: u16,
    /// The device's write cache mode (`writeback` in config space).
    pub(crate) writethrough: Arc<AtomicBool>,
    /// A dup of the connected frontend's socket.
    connection: Mutex<Option<UnixStream>>,
    removing: AtomicBool,
    drained_sent: AtomicBool,
    pub(crate) stop: EventFd,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ExportShared {
    /// Records the frontend; false when the export is being removed.
    pub(crate) fn connect(&self, stream: &UnixStream) -> bool {
        let mut c = lock(&self.connection);
        if self.removing.load(Ordering::Acquire) {
            return false;
        }
        *c = stream.try_clone().ok();
        true
    }

    pub(crate) fn disconnect(&self) {
        lock(&self.connection).take();
    }

    pub(crate) fn removing(&self) -> bool {
        self.removing.load(Ordering::Acquire)
    }

    /// The protocol thread is done: report the drain once.
    pub(crate) fn finished(&self) {
        if self.removing() && !self.drained_sent.swap(true, Ordering::AcqRel) {
            (self.common.on_drained)(&self.common.id);
        }
    }

    fn wake(&self) {
        let _ = self.stop.write(1);
    }
}

/// A vhost-user-blk export held by the control plane's registry.
pub struct VhostUserBlkExport {
    shared: Arc<ExportShared>,
}

/// Starts listening and serving.
pub fn start(
    common: ExportCommon,
    opts: VhostUserBlkOptions,
) -> Result<Box<dyn Export>, ExportError> {
    if common.iothreads.is_empty() {
        return Err(ExportError::Failed("export has no iothread".into()));
    }
    let (listener, path): (_, Option<PathBuf>) = listen(opts.addr)?;
    let stop = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK)
        .map_err(|e| ExportError::Failed(format!("cannot create eventfd: {e}")))?;
    let shared = Arc::new(ExportShared {
        writethrough: Arc::new(AtomicBool::new(common.writethrough)),
        common,
        block_size: opts.logical_block_size,
        num_queues: opts.num_queues,
        connection: Mutex::new(None),
        removing: AtomicBool::new(false),
        drained_sent: AtomicBool::new(false),
        stop,
    });
    let sh = shared.clone();
    let name: String = format!("vu-blk-{}", shared.common.id)
        .chars()
        .take(15)
        .collect();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || serve(listener, path, sh))
        .map_err(|e| ExportError::Failed(format!("cannot start the vhost-user-blk thread: {e}")))?;
    Ok(Box::new(VhostUserBlkExport { shared }))
}

impl Export for VhostUserBlkExport {
    fn id(&self) -> &str {
        &self.shared.common.id
    }

    fn kind(&self) -> &'static str {
        "vhost-user-blk"
    }

    fn remove(&mut self, mode: RemoveMode) -> Result<(), ExportError> {
        let sh = &self.shared;
        {
            let c = lock(&sh.connection);
            if mode == RemoveMode::Safe && c.is_some() {
                return Err(ExportError::InUse(sh.common.id.clone()));
            }
            sh.removing.store(true, Ordering::Release);
            if let Some(s) = c.as_ref() {
                // Unblocks a message half received.
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        sh.wake();
        Ok(())
    }

    fn clients(&self) -> usize {
        usize::from(lock(&self.shared.connection).is_some())
    }
}

impl Drop for VhostUserBlkExport {
    fn drop(&mut self) {
        // Dropped without removal (a failed add, exit): stop serving.
        if !self.shared.removing.swap(true, Ordering::AcqRel) {
            self.shared.wake();
        }
    }
}
