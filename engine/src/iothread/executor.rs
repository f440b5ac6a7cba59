//! The single-threaded executor of an iothread.
//!
//! Tasks are `!Send` futures that live in a slab on their iothread. Wakers
//! are `Send` (the `Waker` contract): a wake on the iothread itself (an op's
//! completion, a task waking another) pushes the task's key on a
//! thread-local queue, with no atomic read-modify-write; a wake from another
//! thread pushes it on a lock-free queue and rings the iothread's
//! [`Notify`].
//!
//! A request of an export is a task of its own, so spawning is on the hot
//! path: a task's waker is kept with its slab slot when the task ends and
//! nothing else holds it, and the next task in that slot reuses it, so a
//! spawn in steady state allocates only the future's box.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};

use crossbeam_queue::SegQueue;

use super::notify::Notify;
use crate::ring::Slab;

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

thread_local! {
    /// Keys woken on this thread, for the executor of this thread (there
    /// is one per iothread).
    static LOCAL_READY: RefCell<VecDeque<usize>> = const { RefCell::new(VecDeque::new()) };
}

fn push_local(key: usize) {
    // Fails only while the thread exits (its thread-locals are being
    // destroyed): nothing will poll the task any more.
    let _ = LOCAL_READY.try_with(|q| q.borrow_mut().push_back(key));
}

fn pop_local() -> Option<usize> {
    LOCAL_READY
        .try_with(|q| q.borrow_mut().pop_front())
        .ok()
        .flatten()
}

pub(crate) struct ReadyQueue {
    queue: SegQueue<usize>,
    owner: usize,
    notify: Arc<Notify>,
}

struct TaskWaker {
    key: usize,
    scheduled: AtomicBool,
    ready: Arc<ReadyQueue>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            if super::runtime::current_id() == Some(self.ready.owner) {
                push_local(self.key);
            } else {
                self.ready.queue.push(self.key);
                self.ready.notify.ring();
            }
        }
    }
}

struct Task {
    fut: Option<LocalFuture>,
    waker: Arc<TaskWaker>,
}

pub(crate) struct Executor {
    tasks: RefCell<Slab<Task>>,
    /// Wakers of ended tasks that nobody else holds, by slab key.
    spare: RefCell<Vec<Option<Arc<TaskWaker>>>>,
    ready: Arc<ReadyQueue>,
    polled: Cell<u64>,
}

impl Executor {
    pub(crate) fn new(owner: usize, notify: Arc<Notify>) -> Executor {
        // Keys a previous executor of this thread left queued (tests run
        // several in turn) would be polled as this one's tasks.
        let _ = LOCAL_READY.try_with(|q| q.borrow_mut().clear());
        Executor {
            tasks: RefCell::new(Slab::new()),
            spare: RefCell::new(Vec::new()),
            ready: Arc::new(ReadyQueue {
                queue: SegQueue::new(),
                owner,
                notify,
            }),
            polled: Cell::new(0),
        }
    }

    pub(crate) fn spawn(&self, fut: LocalFuture) {
        let mut tasks = self.tasks.borrow_mut();
        let key = tasks.vacant_key();
        let spare = self.spare.borrow_mut().get_mut(key).and_then(Option::take);
        let waker = match spare {
            // Unique (checked when it was kept, and nothing can clone it
            // since): no stale wake can reach the new task through it.
            Some(w) => {
                w.scheduled.store(true, Ordering::Release);
                w
            }
            None => Arc::new(TaskWaker {
                key,
                scheduled: AtomicBool::new(true),
                ready: self.ready.clone(),
            }),
        };
        let at = tasks.insert(Task {
            fut: Some(fut),
            waker,
        });
        debug_assert_eq!(at, key);
        push_local(key);
    }

    /// Keeps the waker of an ended task for the next task in its slot,
    /// when nothing else holds it.
    fn keep_waker(&self, key: usize, mut waker: Arc<TaskWaker>) {
        if Arc::get_mut(&mut waker).is_none() {
            return;
        }
        let mut spare = self.spare.borrow_mut();
        if spare.len() <= key {
            spare.resize_with(key + 1, || None);
        }
        spare[key] = Some(waker);
    }

    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.queue.is_empty()
            || LOCAL_READY
                .try_with(|q| !q.borrow().is_empty())
                .unwrap_or(false)
    }

    /// Polls up to `budget` ready tasks; returns how many were polled.
    pub(crate) fn run_ready(&self, budget: usize) -> usize {
        // Wakes from other threads join the local queue behind what is
        // there, so neither starves the other.
        while let Some(key) = self.ready.queue.pop() {
            push_local(key);
        }
        let mut n = 0;
        while n < budget {
            let Some(key) = pop_local() else {
                break;
            };
            // Take the future out so the task can spawn others while polled.
            let (fut, waker) = {
                let mut tasks = self.tasks.borrow_mut();
                let Some(task) = tasks.get_mut(key) else {
                    continue;
                };
                let Some(fut) = task.fut.take() else { continue };
                task.waker.scheduled.store(false, Ordering::Release);
                (fut, task.waker.clone())
            };
            n += 1;
            let w = Waker::from(waker);
            let mut cx = Context::from_waker(&w);
            let mut fut = fut;
            let done = fut.as_mut().poll(&mut cx).is_ready();
            drop(w);
            if done {
                // The future is dropped outside the borrow: its drop may
                // touch the executor.
                drop(fut);
                let ended = self.tasks.borrow_mut().remove(key);
                if let Some(task) = ended {
                    self.keep_waker(key, task.waker);
                }
            } else if let Some(task) = self.tasks.borrow_mut().get_mut(key) {
                task.fut = Some(fut);
            }
        }
        self.polled.set(self.polled.get() + n as u64);
        n
    }

    /// Drops every task (their ops cancel themselves; see `crate::op`).
    pub(crate) fn clear(&self) {
        loop {
            let drained = self.tasks.borrow_mut().drain();
            if drained.is_empty() {
                break;
            }
            // Dropped outside the borrow: a task's drop may touch the executor.
            drop(drained);
        }
        self.spare.borrow_mut().clear();
        let _ = LOCAL_READY.try_with(|q| q.borrow_mut().clear());
    }
}
