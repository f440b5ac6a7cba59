//! Operations: futures that own what the kernel touches until it is done.
//!
//! An [`Op<T>`] holds its data `T` (the fd handle and the buffers) and a key
//! into the ring's op slab, which is the SQE's `user_data`. Completion turns
//! `(T, Completion)` into the operation's output ([`Completable`]), handing
//! buffers back to the caller.
//!
//! # Cancellation contract
//!
//! Dropping an `Op` before its completion never frees memory the kernel may
//! still write: the data moves into the slab entry (`Lifecycle::Ignored`), an
//! `ASYNC_CANCEL` is queued, and the data is freed when the terminal
//! completion is reaped. An op dropped on a thread without a runtime (which
//! cannot happen for ops created on an iothread) leaks its data rather than
//! free it under the kernel.

mod accept;
mod connect;
mod fallocate;
mod fd;
mod fsync;
mod poll;
mod read;
mod readv;
mod recv;
mod sendmsg;
mod splice;
mod timeout;
mod uring_cmd;
mod write;
mod writev;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use io_uring::squeue;

use crate::iothread::runtime::{try_with_runtime, with_runtime};
use crate::ring::{Completion, Lifecycle, Ring};

pub use accept::accept;
pub use connect::connect;
pub use fallocate::fallocate;
pub use fd::SharedFd;
pub use fsync::{fdatasync, fsync};
pub use poll::poll_readable;
pub use read::{read_at, read_at_len};
pub use readv::{readv_at, readv_bufs};
pub use recv::recv_into;
pub use sendmsg::GatherList;
pub use sendmsg::{send_all, send_all_eager, sendmsg};
pub use splice::Pipe;
pub use timeout::{sleep, timeout, Elapsed};
pub use uring_cmd::{uring_cmd80, CmdBufs};
pub use write::{write_at, write_at_flags, write_at_len};
pub use writev::{writev_at, writev_at_flags, writev_list};

/// Data that turns into an output once the kernel completed the operation.
pub(crate) trait Completable {
    type Output;
    fn complete(self, completion: Completion) -> Self::Output;
}

/// An operation in the kernel. See the module docs for the contract.
pub(crate) struct Op<T: 'static> {
    key: usize,
    data: Option<T>,
    /// A successful completion carries a new fd (accept) that must be closed
    /// if nobody is left to take it.
    result_is_fd: bool,
}

impl<T: 'static> Op<T> {
    /// Queues `sqe` for `data`.
    ///
    /// # Safety
    ///
    /// Every pointer in `sqe` must point into heap memory owned by `data` (or
    /// into `'static` memory), so it stays valid while the op, or after a drop
    /// the slab, keeps `data`.
    ///
    /// # Panics
    ///
    /// When called on a thread that is not an iothread.
    pub(crate) unsafe fn submit(data: T, sqe: squeue::Entry) -> Op<T> {
        Self::queue(data, |ring, key| {
            // SAFETY: forwarded from this function's contract.
            unsafe { ring.push(&sqe.user_data(key)) }
        })
    }

    /// Gives `data` a slot, then lets `push` queue its SQE tagged with the
    /// slot's key; a push that fails completes the op with its errno.
    fn queue(data: T, push: impl FnOnce(&mut Ring, u64) -> std::io::Result<()>) -> Op<T> {
        let key = with_runtime(|rt| {
            let mut ring = rt.ring.borrow_mut();
            let key = ring.ops.insert(Lifecycle::Submitted);
            if let Err(e) = push(&mut ring, key as u64) {
                let result = -e.raw_os_error().unwrap_or(libc::EAGAIN);
                if let Some(slot) = ring.ops.get_mut(key) {
                    *slot = Lifecycle::Completed(Completion { result });
                }
            }
            key
        });
        Op {
            key,
            data: Some(data),
            result_is_fd: false,
        }
    }
}

impl<T: 'static> Op<T> {
    /// Like [`Op::submit`] for a 128-byte SQE; completes with `EINVAL` at
    /// once when the ring has 64-byte SQEs.
    ///
    /// # Safety
    ///
    /// As for [`Op::submit`].
    ///
    /// # Panics
    ///
    /// As for [`Op::submit`].
    pub(crate) unsafe fn submit128(data: T, sqe: squeue::Entry128) -> Op<T> {
        Self::queue(data, |ring, key| {
            // SAFETY: forwarded from this function's contract.
            unsafe { ring.push128(&sqe.user_data(key)) }
        })
    }

    /// Marks the op as one whose result is a new fd.
    pub(crate) fn result_is_fd(mut self) -> Self {
        self.result_is_fd = true;
        self
    }
}

impl<T: Completable + Unpin + 'static> Future for Op<T> {
    type Output = T::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T::Output> {
        let key = self.key;
        let done = with_runtime(|rt| {
            let mut ring = rt.ring.borrow_mut();
            let slot = ring.ops.get_mut(key)?;
            match slot {
                Lifecycle::Completed(c) => {
                    let c = *c;
                    ring.ops.remove(key);
                    Some(c)
                }
                Lifecycle::Waiting(w) if w.will_wake(cx.waker()) => None,
                _ => {
                    *slot = Lifecycle::Waiting(cx.waker().clone());
                    None
                }
            }
        });
        match done {
            Some(c) => match self.data.take() {
                Some(data) => Poll::Ready(data.complete(c)),
                None => Poll::Pending,
            },
            None => Poll::Pending,
        }
    }
}

impl<T: 'static> Drop for Op<T> {
    fn drop(&mut self) {
        let Some(data) = self.data.take() else { return };
        let key = self.key;
        let mut data = Some(data);
        try_with_runtime(|rt| {
            let mut ring = rt.ring.borrow_mut();
            let Some(slot) = ring.ops.get_mut(key) else {
                return;
            };
            if let Lifecycle::Completed(_) = slot {
                ring.ops.remove(key);
                drop(data.take());
                return;
            }
            if let Some(d) = data.take() {
                *slot = Lifecycle::Ignored {
                    data: Box::new(d),
                    close_fd: self.result_is_fd,
                };
            }
            let cancel = io_uring::opcode::AsyncCancel::new(key as u64)
                .build()
                .user_data(crate::ring::IGNORE_TOKEN);
            // SAFETY: a cancel SQE carries no pointer.
            if let Err(e) = unsafe { ring.push(&cancel) } {
                log::warn!("could not queue cancellation of op {key}: {e}");
            }
        });
        if let Some(d) = data {
            log::error!("op {key} dropped outside its iothread; leaking its buffers");
            std::mem::forget(d);
        }
    }
}
