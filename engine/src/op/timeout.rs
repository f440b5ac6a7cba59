//! `IORING_OP_TIMEOUT` as [`sleep`], and [`timeout`] around any future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use io_uring::{opcode, types::Timespec};

use super::{Completable, Op};
use crate::ring::Completion;

struct Sleep {
    _ts: Box<Timespec>,
}

impl Completable for Sleep {
    type Output = ();
    fn complete(self, _c: Completion) -> Self::Output {}
}

/// Resolves after `dur` (a timer in the ring: no thread, no syscall of its own).
pub async fn sleep(dur: Duration) {
    let ts = Box::new(Timespec::from(dur));
    let sqe = opcode::Timeout::new(&*ts as *const Timespec).build();
    // SAFETY: the SQE points at the boxed timespec, which the op owns.
    unsafe { Op::submit(Sleep { _ts: ts }, sqe) }.await
}

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out")]
pub struct Elapsed;

/// Runs `fut` for at most `dur`.
pub async fn timeout<F: Future>(dur: Duration, fut: F) -> Result<F::Output, Elapsed> {
    let timer = sleep(dur);
    Race {
        fut: Box::pin(fut),
        timer: Box::pin(timer),
    }
    .await
}

struct Race<F: Future, T: Future<Output = ()>> {
    fut: Pin<Box<F>>,
    timer: Pin<Box<T>>,
}

impl<F: Future, T: Future<Output = ()>> Future for Race<F, T> {
    type Output = Result<F::Output, Elapsed>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(v) = self.fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Elapsed));
        }
        Poll::Pending
    }
}
