//! The per-thread runtime: ring + executor + mailbox, and the run loop.
//!
//! # Run loop
//!
//! ```text
//!   mailbox jobs ─► ready tasks (bounded) ─► submit / reap ─┐
//!        ▲                                                  │
//!        └──────────── park in io_uring_enter(wait=1) ◄─────┘ (nothing ready)
//! ```
//!
//! Tasks queue SQEs while they run; the park call submits them all at once,
//! so a burst of requests costs one system call.
//!
//! # Panics
//!
//! [`with_runtime`] (and every op built on it) panics when called on a thread
//! that is not an iothread: a programming error, never driven by input.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;
use io_uring::opcode;

use super::contention::Mover;
use super::executor::Executor;
use super::notify::Notify;
use super::poll::{AdaptivePoll, PREEMPT_GAP};
use super::poller::Pollers;
use crate::ring::{Ring, WAKE_TOKEN};

/// Work posted to an iothread from elsewhere.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// Tasks polled between two looks at the ring.
const TASK_BUDGET: usize = 512;

/// Busy rounds (tasks still ready) between two looks of the mover.
const MOVER_ROUNDS: u32 = 64;

pub(crate) struct Runtime {
    pub(crate) id: usize,
    pub(crate) ring: RefCell<Ring>,
    pub(crate) exec: Executor,
    notify: Arc<Notify>,
    /// Where the wake eventfd read lands; boxed so its address is stable.
    wake_buf: Box<u64>,
    /// Sources looked at in user space while the thread spins.
    pub(crate) pollers: Pollers,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Runtime>>> = const { RefCell::new(None) };
    static CURRENT_ID: Cell<Option<usize>> = const { Cell::new(None) };
    /// When this thread last reaped completions (see [`reap_time`]).
    static REAPED_AT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The time this iothread last reaped completions from its ring. For a
/// task just woken by an operation's completion, that is when the
/// completion reached user space, had without reading the clock again
/// (statistics stamp every request with it). Off an iothread, or before
/// its first reap, the current time.
pub fn reap_time() -> Instant {
    REAPED_AT.with(Cell::get).unwrap_or_else(Instant::now)
}

/// Runs `f` with this thread's runtime. See the module's `# Panics`.
pub(crate) fn with_runtime<R>(f: impl FnOnce(&Runtime) -> R) -> R {
    match try_with_runtime(f) {
        Some(r) => r,
        None => panic!("ringstor engine: I/O submitted from a thread that is not an iothread"),
    }
}

/// Runs `f` with this thread's runtime, if it has one.
pub(crate) fn try_with_runtime<R>(f: impl FnOnce(&Runtime) -> R) -> Option<R> {
    let rt = CURRENT.with(|c| c.borrow().clone())?;
    Some(f(&rt))
}

/// The id of the iothread we are on, if any.
pub(crate) fn current_id() -> Option<usize> {
    CURRENT_ID.with(|c| c.get())
}

/// Spawns a task on the current iothread. See the module's `# Panics`.
pub fn spawn_local<F: Future<Output = ()> + 'static>(fut: F) {
    with_runtime(|rt| rt.exec.spawn(Box::pin(fut)));
}

impl Runtime {
    pub(crate) fn install(id: usize, ring: Ring, notify: Arc<Notify>) -> Rc<Runtime> {
        crate::buf::fixed::init(ring.submitter());
        let rt = Rc::new(Runtime {
            id,
            ring: RefCell::new(ring),
            exec: Executor::new(id, notify.clone()),
            notify,
            wake_buf: Box::new(0),
            pollers: Pollers::default(),
        });
        CURRENT.with(|c| *c.borrow_mut() = Some(rt.clone()));
        CURRENT_ID.with(|c| c.set(Some(id)));
        rt
    }

    fn arm_wake(&self) {
        let mut ring = self.ring.borrow_mut();
        if ring.wake_armed {
            return;
        }
        let ptr = &*self.wake_buf as *const u64 as *mut u8;
        let sqe = opcode::Read::new(
            io_uring::types::Fd(std::os::fd::AsRawFd::as_raw_fd(&self.notify.efd)),
            ptr,
            8,
        )
        .build()
        .user_data(WAKE_TOKEN);
        // SAFETY: wake_buf is boxed and lives as long as the runtime, which
        // outlives the ring's last reap (see `shutdown`).
        match unsafe { ring.push(&sqe) } {
            Ok(()) => ring.wake_armed = true,
            Err(e) => log::error!("iothread {}: cannot arm wake-up: {e}", self.id),
        }
    }

    /// The loop; returns when `stop` is set.
    /// A `mover` moves the thread off a contended CPU; it looks at most
    /// once a [`super::contention::WINDOW`], at idle points and every
    /// [`MOVER_ROUNDS`] busy rounds.
    pub(crate) fn run(
        &self,
        mailbox: &Receiver<Job>,
        stop: &AtomicBool,
        poll_max_ns: u64,
        mut mover: Option<Mover>,
    ) {
        let mut adapt = AdaptivePoll::new(poll_max_ns);
        let mut idle_skips = 0u32;
        let mut busy_rounds = 0u32;
        loop {
            while let Ok(job) = mailbox.try_recv() {
                job();
            }
            if stop.load(Ordering::Acquire) {
                break;
            }
            self.exec.run_ready(TASK_BUDGET);
            if self.exec.has_ready() || !mailbox.is_empty() {
                // More to run: reap without waiting, but not on every round
                // when nothing was queued.
                idle_skips += 1;
                if idle_skips >= 8 || self.ring.borrow_mut().sq_len() > 0 {
                    idle_skips = 0;
                    self.enter(false);
                }
                busy_rounds += 1;
                if busy_rounds >= MOVER_ROUNDS {
                    busy_rounds = 0;
                    if let Some(m) = &mut mover {
                        m.tick(Instant::now());
                    }
                }
                continue;
            }
            idle_skips = 0;
            busy_rounds = 0;
            let now = Instant::now();
            if let Some(m) = &mut mover {
                m.tick(now);
            }
            self.notify.clear();
            // `stop` too: a stop rung while `pending` was still set wrote no
            // eventfd, so after the clear nothing else would wake us for it.
            if !mailbox.is_empty() || self.exec.has_ready() || stop.load(Ordering::Acquire) {
                continue;
            }
            if self.poll(mailbox, &mut adapt, now) {
                continue;
            }
            // Sources that kept their notifications off while we spun turn
            // them on again; what came in meanwhile is served, not slept on.
            if self.pollers.run(true) {
                continue;
            }
            self.arm_wake();
            self.enter(true);
        }
    }

    /// Busy-polls the ring for as long as `adapt` says (up to
    /// `poll-max-ns` while polling pays, see [`super::poll`]): a client
    /// that answers within that time finds the iothread awake, without a
    /// sleep and wake-up per round trip. Spins in user space (see
    /// `Ring::enter`), looking at the ring and at the registered
    /// [`super::poller`] sources. Returns true when work turned up.
    fn poll(&self, mailbox: &Receiver<Job>, adapt: &mut AdaptivePoll, start: Instant) -> bool {
        let limit = adapt.budget(start);
        if limit.is_zero() {
            return false;
        }
        let mut last = start;
        let mut spins = 0u32;
        let mut gapped = false;
        loop {
            // Only the yield and the loop count as a gap: an enter that
            // runs a lot of task work is busy, not preempted.
            gapped |= last.elapsed() > PREEMPT_GAP;
            self.enter(false);
            let polled = self.pollers.run(false);
            let found = polled || self.exec.has_ready() || !mailbox.is_empty();
            let now = Instant::now();
            if found || now - start >= limit {
                adapt.spun(found, gapped, spins > 0, now);
                return found;
            }
            last = now;
            spins += 1;
            // io_uring's workers (buffered writes to ext4 go there) inherit
            // this thread's CPU: polling must not keep them off it. With
            // nothing else runnable here this returns at once.
            std::thread::yield_now();
        }
    }

    fn enter(&self, wait: bool) {
        let mut ring = self.ring.borrow_mut();
        if let Err(e) = ring.enter(wait) {
            log::error!("iothread {}: io_uring_enter failed: {e}", self.id);
        }
        ring.reap();
        if ring.reaped > 0 {
            REAPED_AT.with(|t| t.set(Some(Instant::now())));
        }
    }

    /// Drops every task and waits (bounded) for the kernel to return every
    /// buffer before the ring goes away.
    pub(crate) fn shutdown(&self) {
        self.exec.clear();
        // Make the wake read complete so its buffer is free to go.
        if self.ring.borrow().wake_armed {
            let _ = self.notify.efd.write(1);
        }
        for _ in 0..1000 {
            let busy = {
                let ring = self.ring.borrow();
                ring.in_flight() > 0 || ring.wake_armed
            };
            if !busy {
                break;
            }
            let mut ring = self.ring.borrow_mut();
            let _ = ring.enter(false);
            ring.reap();
            drop(ring);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let left = self.ring.borrow().in_flight();
        if left > 0 {
            log::error!(
                "iothread {}: {left} operations still in the kernel at exit",
                self.id
            );
            // Their buffers must outlive any late completion: leak them.
            let ops = std::mem::replace(&mut self.ring.borrow_mut().ops, crate::ring::Slab::new());
            std::mem::forget(ops);
        }
        // The ring goes first, so no operation can reach the arena any more.
        CURRENT.with(|c| c.borrow_mut().take());
        CURRENT_ID.with(|c| c.set(None));
        crate::buf::fixed::teardown();
    }
}
