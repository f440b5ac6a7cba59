//! Signalling an eventfd from an iothread without a syscall of its own: an
//! 8-byte `IORING_OP_WRITE` queued on the ring, so it goes to the kernel
//! with the next `io_uring_enter` the thread makes anyway (the one that
//! submits the next reads or waits for completions). A vhost-user queue
//! signals its call eventfd once per batch of completions; a `write(2)`
//! there cost about a fifth of the iothread's time on 4k reads.
//!
//! Nobody awaits the result: an eventfd write fails only when the counter
//! would overflow, and then a signal is pending anyway. The op is parked in
//! the ring's slab as ignored from the start, owning a handle on the fd, so
//! the fd number cannot be closed and reused before the kernel has written it.

use io_uring::opcode;

use super::SharedFd;
use crate::iothread::runtime::with_runtime;
use crate::ring::Lifecycle;

/// The value every signal adds to the eventfd counter.
static ONE: u64 = 1;

/// Queues `+1` on the eventfd `fd`; it is written with the ring's next
/// submission. Falls back to a `write(2)` now when the SQE cannot be queued.
///
/// # Panics
///
/// Off an iothread.
pub fn signal_eventfd(fd: &SharedFd) {
    let queued = with_runtime(|rt| {
        let mut ring = rt.ring.borrow_mut();
        let key = ring.ops.insert(Lifecycle::Ignored {
            data: Box::new(fd.clone()),
            close_fd: false,
        });
        let sqe = super::fd::with_fd!(fd, |f| opcode::Write::new(
            f,
            std::ptr::addr_of!(ONE).cast(),
            8
        )
        .offset(u64::MAX)
        .build())
        .user_data(key as u64);
        // SAFETY: the SQE points at `ONE`, a static, and names the fd by a
        // handle the slab entry owns until the completion is reaped.
        let pushed = unsafe { ring.push(&sqe) }.is_ok();
        if !pushed {
            ring.ops.remove(key);
        }
        pushed
    });
    if !queued {
        // SAFETY: `ONE` is 8 readable bytes; `fd` is open while we hold it.
        let _ = unsafe { libc::write(fd.raw(), std::ptr::addr_of!(ONE).cast(), 8) };
    }
}
