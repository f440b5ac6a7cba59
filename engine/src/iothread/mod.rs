//! Iothreads: one OS thread pinned to one CPU, one io_uring, one executor.
//!
//! The control thread creates an [`IoThread`] and talks to it only through
//! its [`IoThreadHandle`]: jobs posted to the mailbox run on the iothread,
//! where they may spawn `!Send` tasks ([`spawn_local`]) that submit I/O to
//! the thread's own ring. Nothing on the data path is shared between
//! iothreads.

mod contention;
mod executor;
mod notify;
mod poll;
mod poller;
pub(crate) mod runtime;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{unbounded, Sender};

pub use poller::{register_poller, Poller};
pub use runtime::{reap_time, spawn_local};

use crate::error::{EngineError, Result};
use crate::ring::{Ring, RingFeatures};
use notify::Notify;
use runtime::{Job, Runtime};

/// QEMU's default `poll-max-ns` for iothreads.
pub const DEFAULT_POLL_MAX_NS: u64 = 32768;

/// Default submission queue size of an iothread's ring.
pub const DEFAULT_RING_ENTRIES: u32 = 1024;

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// `Shared::cpu` of an unpinned thread.
const NO_CPU: usize = usize::MAX;

/// How to start an iothread.
#[derive(Debug, Clone)]
pub struct IoThreadConfig {
    /// Thread name (QEMU's object id, e.g. `io0`), for `ps` and logs.
    pub name: String,
    /// CPU to pin to; `None` leaves the thread unpinned.
    pub cpu: Option<usize>,
    /// Whether the thread may leave `cpu` for an idler one of the
    /// process's allowed CPUs while another task keeps `cpu` busy (see
    /// `contention.rs`): true for threads placed round robin, false for
    /// `cpu=`.
    pub movable: bool,
    /// Submission queue entries.
    pub ring_entries: u32,
    /// Longest busy-poll before parking, in ns (QEMU's `poll-max-ns`;
    /// 0 never polls).
    pub poll_max_ns: u64,
}

struct Shared {
    mailbox: Sender<Job>,
    /// The CPU the thread is pinned to now, [`NO_CPU`] when unpinned.
    cpu: Arc<AtomicUsize>,
    notify: Arc<Notify>,
    stop: AtomicBool,
}

/// A running iothread; stopping it (or dropping this) joins the thread.
pub struct IoThread {
    handle: IoThreadHandle,
    join: Option<JoinHandle<()>>,
}

/// A cheap, `Send` handle to post work to an iothread.
#[derive(Clone)]
pub struct IoThreadHandle {
    id: usize,
    name: Arc<str>,
    tid: i32,
    features: RingFeatures,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for IoThreadHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoThreadHandle")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("cpu", &self.cpu())
            .finish()
    }
}

impl IoThread {
    /// Starts the thread, pins it, builds its ring; returns once it runs.
    /// It busy-polls up to `config.poll_max_ns` while polling pays (see
    /// `poll.rs`).
    pub fn spawn(config: IoThreadConfig) -> Result<IoThread> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new().map_err(EngineError::Eventfd)?);
        let (tx, rx) = unbounded::<Job>();
        let cpu = Arc::new(AtomicUsize::new(config.cpu.unwrap_or(NO_CPU)));
        let shared = Arc::new(Shared {
            mailbox: tx,
            cpu: cpu.clone(),
            notify: notify.clone(),
            stop: AtomicBool::new(false),
        });
        let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<(i32, RingFeatures)>>(1);
        let thread_shared = shared.clone();
        let cfg = config.clone();
        let name: Arc<str> = config.name.clone().into();
        let mover_name = name.clone();
        // The control thread's set: the process's, before any pinning.
        let allowed = allowed_cpus();
        let join = std::thread::Builder::new()
            .name(config.name.clone())
            .spawn(move || {
                let tid = nix::unistd::gettid().as_raw();
                if let Some(cpu) = cfg.cpu {
                    if let Err(e) = pin_to_cpu(cpu) {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                }
                let ring = match Ring::new(cfg.ring_entries) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(EngineError::RingSetup(e)));
                        return;
                    }
                };
                let features = ring.features;
                let mover = match cfg.cpu {
                    Some(_) if cfg.movable => contention::Mover::new(mover_name, tid, allowed, cpu),
                    _ => None,
                };
                let rt = Runtime::install(id, ring, notify);
                let _ = ready_tx.send(Ok((tid, features)));
                rt.run(&rx, &thread_shared.stop, cfg.poll_max_ns, mover);
                rt.shutdown();
            })
            .map_err(EngineError::Spawn)?;
        let (tid, features) = match ready_rx.recv() {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                let _ = join.join();
                return Err(e);
            }
            Err(_) => {
                let _ = join.join();
                return Err(EngineError::Died);
            }
        };
        log::info!(
            "iothread {} started: tid {tid}, cpu {:?}, defer_taskrun {}",
            config.name,
            config.cpu,
            features.defer_taskrun
        );
        let handle = IoThreadHandle {
            id,
            name,
            tid,
            features,
            shared,
        };
        Ok(IoThread {
            handle,
            join: Some(join),
        })
    }

    /// A handle for posting work.
    pub fn handle(&self) -> &IoThreadHandle {
        &self.handle
    }

    /// Stops the loop (dropping remaining tasks) and joins the thread.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.handle.shared.stop.store(true, Ordering::Release);
        self.handle.shared.notify.ring();
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl IoThreadHandle {
    /// Engine-wide id of the iothread.
    pub fn id(&self) -> usize {
        self.id
    }
    /// The thread name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The CPU it is pinned to now (a movable thread's changes, see
    /// [`IoThreadConfig::movable`]).
    pub fn cpu(&self) -> Option<usize> {
        match self.shared.cpu.load(Ordering::Relaxed) {
            NO_CPU => None,
            cpu => Some(cpu),
        }
    }
    /// Its Linux thread id.
    pub fn thread_id(&self) -> i32 {
        self.tid
    }
    /// Which ring setup flags it got.
    pub fn features(&self) -> RingFeatures {
        self.features
    }

    /// Runs `job` on the iothread (where it may [`spawn_local`]).
    pub fn post(&self, job: impl FnOnce() + Send + 'static) -> Result<()> {
        if self.shared.stop.load(Ordering::Acquire) {
            return Err(EngineError::Stopped);
        }
        self.shared
            .mailbox
            .send(Box::new(job))
            .map_err(|_| EngineError::Stopped)?;
        self.shared.notify.ring();
        Ok(())
    }

    /// Runs `f` on the iothread and waits for its result (control thread).
    pub fn call<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.post(move || {
            let _ = tx.send(f());
        })?;
        rx.recv().map_err(|_| EngineError::Stopped)
    }

    /// Spawns the future `make()` builds on the iothread and waits for its output.
    pub fn block_on<F, Fut>(&self, make: F) -> Result<Fut::Output>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.post(move || {
            let fut = make();
            spawn_local(async move {
                let _ = tx.send(fut.await);
            });
        })?;
        rx.recv().map_err(|_| EngineError::Stopped)
    }
}

/// Id of the iothread the caller runs on, if any.
pub fn current_iothread_id() -> Option<usize> {
    runtime::current_id()
}

fn pin_to_cpu(cpu: usize) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).map_err(|e| EngineError::Pin {
        cpu,
        source: e.into(),
    })?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(|e| {
        EngineError::Pin {
            cpu,
            source: e.into(),
        }
    })
}

/// CPUs this process may run on, in order (placement picks from these).
pub fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => vec![0],
    }
}

#[cfg(test)]
mod tests;
