//! The single-threaded executor of an iothread.
//!
//! Tasks are `!Send` futures that live in a slab on their iothread. Wakers
//! are `Send` (the `Waker` contract) and push the task's key on a lock-free
//! queue; a wake from another thread also rings the iothread's [`Notify`].

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};

use crossbeam_queue::SegQueue;

use super::notify::Notify;
use crate::ring::Slab;

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

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
            self.ready.queue.push(self.key);
            if super::runtime::current_id() != Some(self.ready.owner) {
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
    ready: Arc<ReadyQueue>,
    polled: Cell<u64>,
}

impl Executor {
    pub(crate) fn new(owner: usize, notify: Arc<Notify>) -> Executor {
        Executor {
            tasks: RefCell::new(Slab::new()),
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
        let key = tasks.insert(Task {
            fut: Some(fut),
            waker: Arc::new(TaskWaker {
                key: usize::MAX,
                scheduled: AtomicBool::new(true),
                ready: self.ready.clone(),
            }),
        });
        if let Some(t) = tasks.get_mut(key) {
            t.waker = Arc::new(TaskWaker {
                key,
                scheduled: AtomicBool::new(true),
                ready: self.ready.clone(),
            });
        }
        self.ready.queue.push(key);
    }

    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.queue.is_empty()
    }

    /// Polls up to `budget` ready tasks; returns how many were polled.
    pub(crate) fn run_ready(&self, budget: usize) -> usize {
        let mut n = 0;
        while n < budget {
            let Some(key) = self.ready.queue.pop() else {
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
            let mut tasks = self.tasks.borrow_mut();
            if done {
                tasks.remove(key);
            } else if let Some(task) = tasks.get_mut(key) {
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
    }
}
