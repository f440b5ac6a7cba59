//! The FUSE export as the control plane holds it: checks, mount, the
//! queues on the iothreads, removal.
//!
//! # Removal
//!
//! Safe removal refuses while the file is open (OPENs not yet RELEASEd,
//! after half a second for the RELEASE of a file just closed).
//! Otherwise the export unmounts: a plain unmount when safe, a forced one
//! (which aborts the connection: open files get `ENOTCONN`) then a lazy
//! detach when hard. Destroying the mount ends the connection, so every
//! queue task of every iothread sees `ENODEV`/`ENOTCONN` and ends; the
//! last one reports the export drained (once).

use std::collections::HashSet;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use engine::block::{BlockHandle, Perm, PermGuard};
use engine::iothread::spawn_local;
use engine::op::SharedFd;

use super::exec::{Exec, FileState};
use super::mount::{mount, Mounted};
use super::ring::QUEUE_DEPTH;
use super::sys::{clone_fuse_fd, spawn_unmount_guard, UnmountGuard};
use crate::export::{Export, ExportCommon, ExportError, RemoveMode};

/// How long a safe removal waits for the RELEASE of a file just closed.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// `allow-other` (`FuseExportAllowOther`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowOther {
    Off,
    On,
    Auto,
}

/// `BlockExportOptionsFuse`, plus QEMU's proposed `io-uring`.
#[derive(Debug, Clone)]
pub struct FuseExportOptions {
    /// `mountpoint`: an existing regular file.
    pub mountpoint: String,
    /// `growable`: writes past the end grow the node.
    pub growable: bool,
    /// `allow-other` (default `auto`).
    pub allow_other: AllowOther,
    /// `io-uring`: `None` is ringstor's default, on where the kernel offers it.
    pub io_uring: Option<bool>,
}

/// Mountpoints of live FUSE exports, as given (QEMU's clash check).
static MOUNTPOINTS: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn mountpoints<R>(f: impl FnOnce(&mut HashSet<String>) -> R) -> R {
    let mut g = MOUNTPOINTS.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(HashSet::new))
}

/// What the queue tasks share with the control side.
struct Shared {
    common: ExportCommon,
    state: Arc<FileState>,
    /// Queue tasks still running on the iothreads.
    live: AtomicUsize,
    removing: AtomicBool,
    drained_sent: AtomicBool,
}

impl Shared {
    fn drained(&self) {
        if !self.drained_sent.swap(true, Ordering::AcqRel) {
            (self.common.on_drained)(&self.common.id);
        }
    }
}

/// Held by each queue task; the last one to go reports a removed export drained.
struct Live(Arc<Shared>);

impl Drop for Live {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1
            && self.0.removing.load(Ordering::Acquire)
        {
            self.0.drained();
        }
    }
}

/// A FUSE export held by the control plane's registry.
pub struct FuseExport {
    shared: Arc<Shared>,
    mountpoint: String,
    path: PathBuf,
    mounted: Option<Mounted>,
    unmounted: bool,
    /// Last, so the mount is gone before the guard is told to stand down.
    _resize: Option<PermGuard>,
    _guard: Option<UnmountGuard>,
}

fn failed(msg: impl Into<String>) -> ExportError {
    ExportError::Failed(msg.into())
}

/// Indices into `threads` for each ring queue: the iothread pinned to the
/// queue's CPU, else round robin.
fn queue_homes(queues: usize, cpus: &[Option<usize>]) -> Vec<usize> {
    (0..queues)
        .map(|q| {
            cpus.iter()
                .position(|c| *c == Some(q))
                .unwrap_or(q % cpus.len().max(1))
        })
        .collect()
}

/// CPUs the kernel may run on (its FUSE ring has a queue for each).
fn possible_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let max = text
        .trim()
        .split(',')
        .filter_map(|r| r.rsplit('-').next())
        .filter_map(|n| n.trim().parse::<usize>().ok())
        .max();
    match max {
        Some(m) => m + 1,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

impl FuseExport {
    /// Checks the mountpoint, mounts, and starts the queues (see the module docs).
    pub fn start(common: ExportCommon, opts: FuseExportOptions) -> Result<FuseExport, ExportError> {
        let mp = opts.mountpoint.clone();
        if mountpoints(|m| m.contains(&mp)) {
            return Err(failed(format!("There already is a FUSE export on '{mp}'")));
        }
        let meta = std::fs::metadata(&mp).map_err(|e| {
            let desc = nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)).desc();
            failed(format!("Failed to stat '{mp}': {desc}"))
        })?;
        if !meta.is_file() {
            return Err(failed(format!("'{mp}' is not a regular file")));
        }
        let path = std::fs::canonicalize(&mp)
            .map_err(|e| failed(format!("Failed to stat '{mp}': {e}")))?;
        // QSD takes RESIZE for writable and growable exports.
        let resize = if common.writable || opts.growable {
            Some(
                common
                    .node
                    .attach(&common.id, Perm::RESIZE, Perm::ALL)
                    .map_err(|e| failed(e.to_string()))?,
            )
        } else {
            None
        };
        let rings_ok = common.iothreads.iter().all(|t| t.features().sqe128);
        let want_uring = opts.io_uring.unwrap_or(true) && rings_ok;
        let guard = spawn_unmount_guard(&path)
            .map_err(|e| failed(format!("Failed to mount FUSE session to export: {e}")))?;
        let attempts: &[bool] = match opts.allow_other {
            AllowOther::On => &[true],
            AllowOther::Off => &[false],
            AllowOther::Auto => &[true, false],
        };
        let mut mounted = None;
        let mut allow_other = false;
        for &ao in attempts {
            match mount(&path, ao, want_uring) {
                Ok(m) => {
                    mounted = Some(m);
                    allow_other = ao;
                    break;
                }
                Err(e) => log::debug!("fuse: mounting {mp} (allow_other {ao}): {e}"),
            }
        }
        let Some(mounted) = mounted else {
            return Err(failed("Failed to mount FUSE session to export"));
        };
        let n = mounted.negotiated;
        if opts.io_uring == Some(true) && !n.uring {
            log::warn!(
                "fuse export {}: FUSE over io_uring unavailable ({}); serving /dev/fuse",
                common.id,
                if !rings_ok {
                    "iothread rings without 128-byte SQEs"
                } else if !n.uring_offered {
                    "the kernel does not offer it: /sys/module/fuse/parameters/enable_uring"
                } else {
                    "refused"
                }
            );
        }
        let state = Arc::new(FileState::new(
            common.node.clone(),
            common.writable,
            common.writethrough,
            opts.growable,
            allow_other,
        ));
        let shared = Arc::new(Shared {
            common: common.clone(),
            state,
            live: AtomicUsize::new(0),
            removing: AtomicBool::new(false),
            drained_sent: AtomicBool::new(false),
        });
        let mut export = FuseExport {
            shared,
            mountpoint: mp.clone(),
            path,
            mounted: Some(mounted),
            unmounted: false,
            _resize: resize,
            _guard: Some(guard),
        };
        export.start_queues(n.uring)?;
        mountpoints(|m| m.insert(mp));
        Ok(export)
    }

    fn start_queues(&mut self, uring: bool) -> Result<(), ExportError> {
        let sh = self.shared.clone();
        let threads = &sh.common.iothreads;
        let cpus: Vec<Option<usize>> = threads.iter().map(|t| t.cpu()).collect();
        let queues = if uring { possible_cpus() } else { 0 };
        let homes = queue_homes(queues, &cpus);
        let Some(m) = &self.mounted else {
            return Err(failed("Failed to mount FUSE session to export"));
        };
        let mut fds = Vec::new();
        for _ in threads {
            fds.push(
                clone_fuse_fd(&std::os::fd::AsFd::as_fd(&m.session))
                    .map_err(|e| failed(format!("Failed to set up FUSE session: {e}")))?,
            );
        }
        log::info!(
            "fuse export {}: {} on {} iothread(s){}",
            sh.common.id,
            if uring {
                "FUSE over io_uring"
            } else {
                "/dev/fuse"
            },
            threads.len(),
            if uring {
                format!(", {queues} ring queues x {QUEUE_DEPTH}")
            } else {
                String::new()
            }
        );
        for (i, (thread, fd)) in threads.iter().zip(fds).enumerate() {
            let qids: Vec<u16> = homes
                .iter()
                .enumerate()
                .filter(|(_, h)| **h == i)
                .map(|(q, _)| q as u16)
                .collect();
            let tasks = 1 + qids.len() * QUEUE_DEPTH;
            sh.live.fetch_add(tasks, Ordering::AcqRel);
            let lives: Vec<Live> = (0..tasks).map(|_| Live(sh.clone())).collect();
            let node = sh.common.node.clone();
            let state = sh.state.clone();
            let id = sh.common.id.clone();
            let stats = sh.common.stats.clone();
            let posted = thread.post(move || {
                let exec = Rc::new(Exec {
                    state,
                    handle: BlockHandle::open(&node),
                    id,
                    over_dev: Default::default(),
                    over_ring: Default::default(),
                    rec: stats.queue(i.to_string(), None),
                });
                let fd = SharedFd::new(fd);
                let mut lives = lives.into_iter();
                for q in qids {
                    for _ in 0..QUEUE_DEPTH {
                        if let Some(l) = lives.next() {
                            spawn_local(super::ring::serve_entry(
                                fd.clone(),
                                q,
                                exec.clone(),
                                Box::new(l),
                            ));
                        }
                    }
                }
                if let Some(l) = lives.next() {
                    spawn_local(super::dev::serve(fd, exec, Box::new(l)));
                }
            });
            if posted.is_err() {
                return Err(failed("iothread stopped"));
            }
        }
        Ok(())
    }

    /// Whether no file is open, waiting up to `t` for RELEASEs in flight:
    /// `close(2)` returns once FLUSH is answered, and the kernel sends
    /// RELEASE after it, so a removal right after the last close would
    /// otherwise still see the file open.
    fn closed_within(&self, t: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + t;
        loop {
            if self.shared.state.open.load(Ordering::Acquire) == 0 {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Unmounts (see the module docs); `Err` when a safe unmount finds the
    /// file busy.
    fn unmount(&mut self, mode: RemoveMode) -> Result<(), ExportError> {
        use nix::mount::{umount2, MntFlags};
        if self.unmounted {
            return Ok(());
        }
        let r = match mode {
            RemoveMode::Safe => umount2(&self.path, MntFlags::empty()),
            RemoveMode::Hard => match umount2(&self.path, MntFlags::MNT_FORCE) {
                Err(nix::errno::Errno::EBUSY) => umount2(&self.path, MntFlags::MNT_DETACH),
                other => other,
            },
        };
        match r {
            // EINVAL: not mounted any more (unmounted from outside).
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {
                self.unmounted = true;
                // Now, while nothing can be mounted here again: fuser's
                // session unmounts the path by name when dropped.
                self.mounted = None;
                Ok(())
            }
            Err(nix::errno::Errno::EBUSY) => Err(ExportError::InUse(self.shared.common.id.clone())),
            Err(e) => Err(failed(format!(
                "Failed to unmount '{}': {}",
                self.mountpoint,
                e.desc()
            ))),
        }
    }
}

impl Export for FuseExport {
    fn id(&self) -> &str {
        &self.shared.common.id
    }

    fn kind(&self) -> &'static str {
        "fuse"
    }

    fn remove(&mut self, mode: RemoveMode) -> Result<(), ExportError> {
        let sh = self.shared.clone();
        if mode == RemoveMode::Safe && !self.closed_within(RELEASE_WAIT) {
            return Err(ExportError::InUse(sh.common.id.clone()));
        }
        self.unmount(mode)?;
        mountpoints(|m| m.remove(&self.mountpoint));
        sh.removing.store(true, Ordering::Release);
        if sh.live.load(Ordering::Acquire) == 0 {
            sh.drained();
        }
        Ok(())
    }

    fn clients(&self) -> usize {
        self.shared.state.open.load(Ordering::Acquire)
    }
}

impl Drop for FuseExport {
    fn drop(&mut self) {
        // Dropped without removal (a failed add): take the mount down.
        if !self.unmounted {
            let _ = self.unmount(RemoveMode::Hard);
            mountpoints(|m| m.remove(&self.mountpoint));
        }
        self.mounted = None;
    }
}

#[cfg(test)]
mod tests {
    use super::queue_homes;

    #[test]
    fn queues_go_to_the_iothread_on_their_cpu_else_round_robin() {
        assert_eq!(queue_homes(2, &[None]), vec![0, 0]);
        assert_eq!(queue_homes(2, &[Some(1), Some(0)]), vec![1, 0]);
        assert_eq!(queue_homes(4, &[None, None]), vec![0, 1, 0, 1]);
        assert!(queue_homes(0, &[None]).is_empty());
    }
}
