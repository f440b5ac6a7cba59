//! Two cross-iothread primitives that never block a thread: the metadata
//! lock ([`MetaLock`]) and a change notification ([`Event`]).
//!
//! Both park the *task*, not the thread: a waiter registers its waker and
//! returns `Pending`, so the iothread keeps serving its other connections
//! while another iothread holds the metadata. Wakers are `Send`, so a task
//! on iothread A is woken by a release on iothread B through A's ring.
//! The `std` mutex inside is held only to move a value or a waker, never
//! across an `.await`.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

struct LockState<T> {
    /// The value while nobody holds it.
    value: Option<Box<T>>,
    waiters: VecDeque<Waker>,
}

/// An async mutex whose value moves out to the holder (a baton), so no
/// `unsafe` is needed to hand `&mut T` across `.await` points.
pub(crate) struct MetaLock<T> {
    state: Mutex<LockState<T>>,
}

impl<T> MetaLock<T> {
    pub(crate) fn new(value: T) -> MetaLock<T> {
        MetaLock {
            state: Mutex::new(LockState {
                value: Some(Box::new(value)),
                waiters: VecDeque::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LockState<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the value.
    pub(crate) fn lock(&self) -> Lock<'_, T> {
        Lock {
            lock: self,
            waiting: None,
        }
    }

    /// The value, when nobody holds it (closing, where no task is left).
    pub(crate) fn take_now(&self) -> Option<Box<T>> {
        self.state().value.take()
    }
}

/// The future of [`MetaLock::lock`].
pub(crate) struct Lock<'a, T> {
    lock: &'a MetaLock<T>,
    /// The waker registered in the queue, if any (and maybe woken as the
    /// next holder).
    waiting: Option<Waker>,
}

impl<'a, T> Future for Lock<'a, T> {
    type Output = MetaGuard<'a, T>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<MetaGuard<'a, T>> {
        let lock = self.lock;
        let mut st = lock.state();
        match st.value.take() {
            Some(value) => {
                if self.waiting.take().is_some() {
                    st.waiters.retain(|w| !w.will_wake(cx.waker()));
                }
                drop(st);
                Poll::Ready(MetaGuard {
                    lock,
                    value: Some(value),
                })
            }
            None => {
                if !st.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    st.waiters.push_back(cx.waker().clone());
                }
                drop(st);
                self.waiting = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for Lock<'_, T> {
    fn drop(&mut self) {
        // A waiter that goes away may have been the one woken: pass the
        // wake-up on so the value does not sit unclaimed.
        if let Some(me) = self.waiting.take() {
            let next = {
                let mut st = self.lock.state();
                st.waiters.retain(|w| !w.will_wake(&me));
                if st.value.is_some() {
                    st.waiters.pop_front()
                } else {
                    None
                }
            };
            if let Some(w) = next {
                w.wake();
            }
        }
    }
}

/// The held value; dropping it hands the value back and wakes a waiter.
pub(crate) struct MetaGuard<'a, T> {
    lock: &'a MetaLock<T>,
    value: Option<Box<T>>,
}

impl<T> Deref for MetaGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match &self.value {
            Some(v) => v,
            None => unreachable!("a guard holds its value until dropped"),
        }
    }
}

impl<T> DerefMut for MetaGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        match &mut self.value {
            Some(v) => v,
            None => unreachable!("a guard holds its value until dropped"),
        }
    }
}

impl<T> Drop for MetaGuard<'_, T> {
    fn drop(&mut self) {
        let waker = {
            let mut st = self.lock.state();
            st.value = self.value.take();
            st.waiters.pop_front()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A generation counter with waiters: "something changed, look again".
pub(crate) struct Event {
    generation: AtomicU64,
    waiters: Mutex<Vec<Waker>>,
}

impl Event {
    pub(crate) fn new() -> Event {
        Event {
            generation: AtomicU64::new(0),
            waiters: Mutex::new(Vec::new()),
        }
    }

    /// The current generation, to wait for a later one.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Wakes everyone waiting.
    pub(crate) fn notify(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|p| p.into_inner()));
        for w in waiters {
            w.wake();
        }
    }

    /// Resolves once the generation differs from `seen`.
    pub(crate) fn changed(&self, seen: u64) -> Changed<'_> {
        Changed { event: self, seen }
    }
}

/// The future of [`Event::changed`].
pub(crate) struct Changed<'a> {
    event: &'a Event,
    seen: u64,
}

impl Future for Changed<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.generation() != self.seen {
            return Poll::Ready(());
        }
        let mut w = self.event.waiters.lock().unwrap_or_else(|p| p.into_inner());
        // Checked again under the lock: a notify between the two looks has
        // either bumped the generation or will see this waker.
        if self.event.generation() != self.seen {
            return Poll::Ready(());
        }
        w.push(cx.waker().clone());
        Poll::Pending
    }
}
