//! What the accept loop waits for besides a client: a free connection slot
//! (`max-connections`) and the server stopping.
//!
//! As in QEMU (`nbd_update_server_watch`), a server at its limit stops
//! accepting: further clients wait in the listen backlog, and the first of
//! them is served as soon as a connection ends. Connections end on their
//! own iothreads and `stop` runs on the control thread, so both wake the
//! accept loop's task through its (thread-safe) waker.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

#[derive(Default)]
struct State {
    connections: usize,
    stopped: bool,
    /// The accept loop, while it waits.
    waiter: Option<Waker>,
}

/// Connection slots and the stop flag of one server.
pub(crate) struct AcceptGate {
    /// 0: unlimited.
    max: usize,
    state: Mutex<State>,
}

/// One connection's slot, from before its accept to its end.
pub(crate) struct Slot(Arc<AcceptGate>);

impl Drop for Slot {
    fn drop(&mut self) {
        let waiter = {
            let mut s = self.0.lock();
            s.connections -= 1;
            s.waiter.take()
        };
        if let Some(w) = waiter {
            w.wake();
        }
    }
}

impl AcceptGate {
    pub(crate) fn new(max: u32) -> Arc<AcceptGate> {
        Arc::new(AcceptGate {
            max: max as usize,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the server: wakes the accept loop, which then ends.
    pub(crate) fn stop(&self) {
        let waiter = {
            let mut s = self.lock();
            s.stopped = true;
            s.waiter.take()
        };
        if let Some(w) = waiter {
            w.wake();
        }
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.lock().stopped
    }

    /// Waits for a free slot and takes it; `None` once stopped.
    pub(crate) async fn slot(self: &Arc<Self>) -> Option<Slot> {
        poll_fn(|cx| {
            let mut s = self.lock();
            if s.stopped {
                return Poll::Ready(None);
            }
            if self.max == 0 || s.connections < self.max {
                s.connections += 1;
                return Poll::Ready(Some(Slot(self.clone())));
            }
            s.waiter = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Runs `fut` until it finishes (`Some`) or the server stops (`None`,
    /// and `fut` is dropped, which cancels an accept in the kernel).
    pub(crate) async fn unless_stopped<F: Future>(&self, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            {
                let mut s = self.lock();
                if s.stopped {
                    return Poll::Ready(None);
                }
                s.waiter = Some(cx.waker().clone());
            }
            fut.as_mut().poll(cx).map(Some)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_full_gate_waits_for_a_slot_then_for_stop() {
        let gate = AcceptGate::new(2);
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut take = || {
            let mut f = pin!(gate.slot());
            f.as_mut().poll(&mut cx)
        };
        let Poll::Ready(Some(a)) = take() else {
            panic!("first slot")
        };
        let Poll::Ready(Some(_b)) = take() else {
            panic!("second slot")
        };
        assert!(take().is_pending(), "a third client must wait");
        drop(a);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "a freed slot wakes");
        let Poll::Ready(Some(_c)) = take() else {
            panic!("the freed slot")
        };
        assert!(take().is_pending());
        gate.stop();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2, "stop wakes");
        assert!(matches!(take(), Poll::Ready(None)));
    }

    #[test]
    fn stop_ends_a_pending_wait() {
        let gate = AcceptGate::new(0);
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        let mut f = pin!(gate.unless_stopped(std::future::pending::<()>()));
        assert!(f.as_mut().poll(&mut cx).is_pending());
        gate.stop();
        assert_eq!(f.as_mut().poll(&mut cx), Poll::Ready(None));
    }
}
