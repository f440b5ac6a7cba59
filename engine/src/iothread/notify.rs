//! Wake-ups from other threads: an eventfd the ring reads, written at most
//! once per park.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::eventfd::{EfdFlags, EventFd};

/// The cross-thread doorbell of one iothread.
pub(crate) struct Notify {
    pub(crate) efd: EventFd,
    /// Someone rang since the iothread last cleared it: later rings skip the
    /// write system call.
    pending: AtomicBool,
}

impl Notify {
    pub(crate) fn new() -> std::io::Result<Notify> {
        let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Notify {
            efd,
            pending: AtomicBool::new(false),
        })
    }

    /// Wakes the iothread if it may be parked.
    pub(crate) fn ring(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.efd.write(1) {
                // EAGAIN means the counter is saturated: it is awake anyway.
                if e != nix::errno::Errno::EAGAIN {
                    log::error!("iothread wake-up failed: {e}");
                }
            }
        }
    }

    /// Called by the iothread before it re-checks its queues and parks.
    pub(crate) fn clear(&self) {
        self.pending.store(false, Ordering::SeqCst);
    }
}
