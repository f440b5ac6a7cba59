//! The io_uring of one iothread: submission, reaping and parking.
//!
//! Every SQE carries a `user_data` that [`classify`] sorts into an operation
//! key (an index into the op slab, see [`crate::op`]) or one of the internal
//! tokens at the top of the `u64` range. The ring is the thread's only park
//! point: mailbox wake-ups arrive as the completion of a read on an eventfd.
//!
//! # Setup
//!
//! The ring is built with `SINGLE_ISSUER | DEFER_TASKRUN` (completions are
//! run in our own context when we enter the kernel, not by interrupting us)
//! and falls back to `COOP_TASKRUN`, then to no flags, on kernels that refuse.
//! Each of these is tried first with 128-byte SQEs (`IORING_SETUP_SQE128`,
//! which `IORING_OP_URING_CMD` with an 80-byte command needs: FUSE over
//! io_uring), then with the plain 64-byte ones; ordinary operations are the
//! same either way, only [`Ring::push128`] needs the wide ring.

mod slab;

use std::io;
use std::task::Waker;

use io_uring::{cqueue, squeue, IoUring, Submitter};

pub(crate) use slab::Slab;

/// `user_data` of the mailbox eventfd read.
pub(crate) const WAKE_TOKEN: u64 = u64::MAX;
/// `user_data` of SQEs whose completion nobody waits for (cancellations).
pub(crate) const IGNORE_TOKEN: u64 = u64::MAX - 1;
/// Keys at or above this value are reserved for the tokens above.
const RESERVED_BASE: u64 = u64::MAX - 15;
const _: () = assert!(IGNORE_TOKEN >= RESERVED_BASE && IGNORE_TOKEN < WAKE_TOKEN);

/// What a completion's `user_data` stands for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Token {
    Wake,
    Ignore,
    Op(usize),
}

/// Sorts a `user_data` value; the one place that knows the key space.
pub(crate) fn classify(user_data: u64) -> Token {
    match user_data {
        WAKE_TOKEN => Token::Wake,
        u if u >= RESERVED_BASE => Token::Ignore,
        u => Token::Op(u as usize),
    }
}

/// Where an operation is in its life.
pub(crate) enum Lifecycle {
    /// In the kernel; nobody polled yet.
    Submitted,
    /// In the kernel; a task waits.
    Waiting(Waker),
    /// The kernel is done.
    Completed(Completion),
    /// The future was dropped first: what the kernel may still touch is kept
    /// here until the completion arrives, then freed.
    Ignored {
        data: Box<dyn std::any::Any>,
        /// Close the fd a successful completion carries (an accept nobody takes).
        close_fd: bool,
    },
}

/// What the kernel said about one operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completion {
    /// `cqe.res`: a count, or `-errno`.
    pub(crate) result: i32,
}

impl Completion {
    /// The result as an `io::Result`.
    pub(crate) fn into_result(self) -> io::Result<u32> {
        if self.result < 0 {
            Err(io::Error::from_raw_os_error(-self.result))
        } else {
            Ok(self.result as u32)
        }
    }
}

/// Which setup flags the ring got.
#[derive(Debug, Clone, Copy)]
pub struct RingFeatures {
    /// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN`.
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN` (the fallback).
    pub coop_taskrun: bool,
    /// `IORING_SETUP_SQE128`: 128-byte SQEs (80-byte `URING_CMD`s).
    pub sqe128: bool,
}

/// The io_uring with 64- or 128-byte SQEs (see the module's Setup).
enum Uring {
    Narrow(IoUring),
    Wide(IoUring<squeue::Entry128>),
}

/// Runs `$body` with `$u` bound to the io_uring, whichever its SQE size.
macro_rules! with_uring {
    ($uring:expr, |$u:ident| $body:expr) => {
        match $uring {
            Uring::Narrow($u) => $body,
            Uring::Wide($u) => $body,
        }
    };
}

fn build<S: squeue::EntryMarker>(entries: u32, defer: bool, coop: bool) -> io::Result<IoUring<S>> {
    let mut b = IoUring::<S>::builder();
    b.setup_cqsize(entries.saturating_mul(4)).setup_clamp();
    if defer {
        // TASKRUN_FLAG: the kernel marks the SQ ring when task work
        // (deferred completions) waits, so a poll that finds it clear
        // stays in user space.
        b.setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag();
    }
    if coop {
        b.setup_coop_taskrun();
    }
    b.build(entries)
}

/// Slots in each ring's registered file table.
const FIXED_FILES: u32 = 256;

pub(crate) struct Ring {
    uring: Uring,
    /// Free slots of the registered file table (empty when unavailable).
    free_files: Vec<u32>,
    pub(crate) ops: Slab<Lifecycle>,
    pub(crate) features: RingFeatures,
    /// A read on the wake eventfd is in the kernel.
    pub(crate) wake_armed: bool,
    /// Completions the last [`Ring::reap`] took.
    pub(crate) reaped: usize,
}

impl Ring {
    pub(crate) fn new(entries: u32) -> io::Result<Ring> {
        let attempts: [(bool, bool); 3] = [(true, false), (false, true), (false, false)];
        let mut last_err = None;
        for (defer, coop) in attempts {
            let built = match build::<squeue::Entry128>(entries, defer, coop) {
                Ok(u) => Ok(Uring::Wide(u)),
                Err(_) => build::<squeue::Entry>(entries, defer, coop).map(Uring::Narrow),
            };
            match built {
                Ok(uring) => {
                    let features = RingFeatures {
                        defer_taskrun: defer,
                        coop_taskrun: coop,
                        sqe128: matches!(uring, Uring::Wide(_)),
                    };
                    let free_files = match with_uring!(&uring, |u| u
                        .submitter()
                        .register_files_sparse(FIXED_FILES))
                    {
                        Ok(()) => (0..FIXED_FILES).rev().collect(),
                        Err(e) => {
                            log::info!("registered files unavailable ({e}); using plain fds");
                            Vec::new()
                        }
                    };
                    return Ok(Ring {
                        uring,
                        free_files,
                        ops: Slab::new(),
                        features,
                        wake_armed: false,
                        reaped: 0,
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("io_uring setup failed")))
    }

    /// The io_uring's submitter, for registration calls.
    pub(crate) fn submitter(&self) -> Submitter<'_> {
        with_uring!(&self.uring, |u| u.submitter())
    }

    /// Puts `fd` in the registered file table; `None` when full or refused.
    pub(crate) fn register_file(&mut self, fd: std::os::fd::RawFd) -> Option<u32> {
        let slot = self.free_files.pop()?;
        match self.submitter().register_files_update(slot, &[fd]) {
            Ok(_) => Some(slot),
            Err(e) => {
                log::debug!("register_files_update failed: {e}");
                self.free_files.push(slot);
                None
            }
        }
    }

    /// Empties a slot of the registered file table.
    pub(crate) fn unregister_file(&mut self, slot: u32) {
        if self.submitter().register_files_update(slot, &[-1]).is_ok() {
            self.free_files.push(slot);
        }
    }

    /// SQEs queued but not yet handed to the kernel.
    pub(crate) fn sq_len(&mut self) -> usize {
        with_uring!(&mut self.uring, |u| u.submission().len())
    }

    /// Queues one SQE, flushing the SQ to the kernel first when it is full.
    ///
    /// # Safety
    ///
    /// Every pointer in `sqe` must stay valid until its completion is reaped:
    /// the caller parks what it points to in the op (or the ring) until then.
    pub(crate) unsafe fn push(&mut self, sqe: &squeue::Entry) -> io::Result<()> {
        for _ in 0..64 {
            let pushed = match &mut self.uring {
                // SAFETY: forwarded from this function's contract.
                Uring::Narrow(u) => unsafe { u.submission().push(sqe) }.is_ok(),
                // SAFETY: as above; the second half of a widened SQE is zeroes.
                Uring::Wide(u) => unsafe {
                    u.submission()
                        .push(&squeue::Entry128::from(sqe.clone()))
                        .is_ok()
                },
            };
            if pushed {
                return Ok(());
            }
            self.enter(false)?;
        }
        Err(io::Error::from_raw_os_error(libc::EAGAIN))
    }

    /// Queues one 128-byte SQE; `EINVAL` when the ring has 64-byte SQEs
    /// ([`RingFeatures::sqe128`] false).
    ///
    /// # Safety
    ///
    /// As for [`Ring::push`].
    pub(crate) unsafe fn push128(&mut self, sqe: &squeue::Entry128) -> io::Result<()> {
        for _ in 0..64 {
            let Uring::Wide(u) = &mut self.uring else {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            };
            // SAFETY: forwarded from this function's contract.
            if unsafe { u.submission().push(sqe) }.is_ok() {
                return Ok(());
            }
            self.enter(false)?;
        }
        Err(io::Error::from_raw_os_error(libc::EAGAIN))
    }

    /// Whether an enter without SQEs could post completions: under
    /// DEFER_TASKRUN only when the kernel flagged task work (or a CQ
    /// overflow); otherwise completions land in the CQ by themselves.
    fn kernel_has_work(&mut self) -> bool {
        if !self.features.defer_taskrun {
            return false;
        }
        with_uring!(&mut self.uring, |u| {
            let sq = u.submission();
            sq.taskrun() || sq.cq_overflow()
        })
    }

    /// Submits what is queued and runs completions; waits for one if `wait`.
    /// Without `wait` and with nothing to submit, enters the kernel only
    /// when it has completions to run: a busy-poll spins in user space.
    pub(crate) fn enter(&mut self, wait: bool) -> io::Result<()> {
        let want = u32::from(wait);
        let to_submit = self.sq_len() as u32;
        if !wait && to_submit == 0 && !self.kernel_has_work() {
            return Ok(());
        }
        let flags = io_uring::EnterFlags::GETEVENTS.bits();
        // SAFETY: plain io_uring_enter without an argument pointer; every SQE
        // queued was pushed under `push`'s contract.
        match unsafe {
            self.submitter()
                .enter::<libc::sigset_t>(to_submit, want, flags, None)
        } {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                // Interrupted, or the CQ is full and must be reaped first.
                Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// Moves completions into the op slab, waking their tasks; returns
    /// whether the wake eventfd fired.
    pub(crate) fn reap(&mut self) -> bool {
        let mut woke = false;
        let ops = &mut self.ops;
        let wake_armed = &mut self.wake_armed;
        let reaped = &mut self.reaped;
        with_uring!(&mut self.uring, |u| {
            let mut cq = u.completion();
            cq.sync();
            *reaped = cq.len();
            for cqe in &mut cq {
                match classify(cqe.user_data()) {
                    Token::Wake => {
                        *wake_armed = false;
                        woke = true;
                    }
                    Token::Ignore => {}
                    Token::Op(key) => complete(ops, key, cqe),
                }
            }
        });
        woke
    }

    /// Operations the kernel still holds.
    pub(crate) fn in_flight(&self) -> usize {
        self.ops.len()
    }
}

fn complete(ops: &mut Slab<Lifecycle>, key: usize, cqe: cqueue::Entry) {
    let more = cqueue::more(cqe.flags());
    let cqe = Completion {
        result: cqe.result(),
    };
    let Some(slot) = ops.get_mut(key) else {
        log::warn!("completion for unknown op {key}");
        return;
    };
    match std::mem::replace(slot, Lifecycle::Submitted) {
        Lifecycle::Submitted => *slot = Lifecycle::Completed(cqe),
        Lifecycle::Waiting(waker) => {
            *slot = Lifecycle::Completed(cqe);
            waker.wake();
        }
        Lifecycle::Completed(_) => *slot = Lifecycle::Completed(cqe),
        Lifecycle::Ignored { data, close_fd } => {
            if close_fd && cqe.result >= 0 {
                // SAFETY: the kernel just created this fd for us and nobody
                // else has seen it.
                drop(unsafe {
                    <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(cqe.result)
                });
            }
            if more {
                *slot = Lifecycle::Ignored { data, close_fd };
            } else {
                ops.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_classify() {
        assert_eq!(classify(WAKE_TOKEN), Token::Wake);
        assert_eq!(classify(IGNORE_TOKEN), Token::Ignore);
        assert_eq!(classify(7), Token::Op(7));
    }
}
