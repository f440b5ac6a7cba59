//! The statistics registry of one iothread: every recorder on the thread,
//! by export, and the totals of its recorders that have ended.
//!
//! It is a thread-local touched only by its own thread: recorders register
//! and retire here, and the jobs the control thread posts through the
//! iothread's mailbox ([`super::collect`]) read, reset and forget here.
//! Nothing in it is shared with another thread.
//!
//! # Panics
//!
//! None: a thread that never had a recorder answers with an empty list.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

use super::export::ExportStats;
use super::recorder::{Live, QueueCell};
use super::snapshot::{ExportSnapshot, QueueSnapshot, ThreadSnapshot, Totals, View};

#[derive(Default)]
struct Local {
    exports: HashMap<u64, ExportLocal>,
    next_key: u64,
}

struct ExportLocal {
    meta: Arc<ExportStats>,
    /// Ended queues, added up.
    closed: Totals,
    /// Their reset baselines, added up.
    closed_base: Totals,
    queues: BTreeMap<u64, Weak<QueueCell>>,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

/// Adds a new recorder; returns its key.
pub(crate) fn register(meta: &Arc<ExportStats>, cell: &Rc<QueueCell>) -> u64 {
    LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        l.next_key += 1;
        let key = l.next_key;
        l.exports
            .entry(meta.instance())
            .or_insert_with(|| ExportLocal {
                meta: meta.clone(),
                closed: Totals::default(),
                closed_base: Totals::default(),
                queues: BTreeMap::new(),
            })
            .queues
            .insert(key, Rc::downgrade(cell));
        key
    })
}

/// A recorder ended: keep its numbers in its export's closed total.
pub(crate) fn retire(instance: u64, key: u64, live: Live) {
    // At thread exit the registry may already be gone; nothing to keep then.
    let _ = LOCAL.try_with(|l| {
        let mut l = l.borrow_mut();
        let Some(e) = l.exports.get_mut(&instance) else {
            return;
        };
        e.queues.remove(&key);
        // Without a baseline (never reset) all of it counts since the reset.
        if let Some(b) = &live.baseline {
            e.closed_base.add(b);
        }
        e.closed.add(&live.totals);
    });
}

/// Which exports a job is about.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only these instances (`None`: all).
    pub instances: Option<Vec<u64>>,
}

impl Filter {
    fn wants(&self, instance: u64) -> bool {
        self.instances
            .as_ref()
            .is_none_or(|v| v.contains(&instance))
    }
}

fn since(current: &Totals, base: Option<&Totals>) -> Totals {
    let mut t = current.clone();
    if let Some(b) = base {
        t.sub(b);
    }
    t
}

/// Copies this thread's numbers (run on the iothread).
pub fn snapshot(iothread: &str, view: View, filter: &Filter) -> ThreadSnapshot {
    let taken = Instant::now();
    let exports = LOCAL
        .try_with(|l| {
            let l = l.borrow();
            l.exports
                .values()
                .filter(|e| filter.wants(e.meta.instance()))
                .map(|e| export_snapshot(e, view))
                .collect()
        })
        .unwrap_or_default();
    ThreadSnapshot {
        iothread: iothread.to_string(),
        taken,
        exports,
    }
}

fn export_snapshot(e: &ExportLocal, view: View) -> ExportSnapshot {
    let queues = e
        .queues
        .values()
        .filter_map(Weak::upgrade)
        .map(|cell| {
            let live = cell.live.borrow();
            let totals = match view {
                View::Cumulative => live.totals.clone(),
                View::SinceReset => since(&live.totals, live.baseline.as_deref()),
            };
            QueueSnapshot {
                queue: cell.queue.clone(),
                client: cell.client.clone(),
                in_flight: live.in_flight,
                totals,
            }
        })
        .collect();
    let closed = match view {
        View::Cumulative => e.closed.clone(),
        View::SinceReset => since(&e.closed, Some(&e.closed_base)),
    };
    ExportSnapshot {
        instance: e.meta.instance(),
        id: e.meta.id().to_string(),
        node: e.meta.node_name().to_string(),
        closed,
        queues,
    }
}

/// Starts the since-reset view afresh for the exports `filter` selects
/// (run on the iothread): the current numbers become the baseline.
pub fn reset(filter: &Filter) {
    let _ = LOCAL.try_with(|l| {
        let mut l = l.borrow_mut();
        for e in l.exports.values_mut() {
            if !filter.wants(e.meta.instance()) {
                continue;
            }
            e.closed_base = e.closed.clone();
            for cell in e.queues.values().filter_map(Weak::upgrade) {
                let mut live = cell.live.borrow_mut();
                live.baseline = Some(Box::new(live.totals.clone()));
            }
        }
    });
}

/// Drops what this thread keeps of exports that are gone and have no
/// queue left (run on the iothread, after the control plane has taken
/// their last numbers).
pub fn forget(instances: &[u64]) {
    let _ = LOCAL.try_with(|l| {
        l.borrow_mut()
            .exports
            .retain(|id, e| !(instances.contains(id) && e.queues.is_empty()));
    });
}
