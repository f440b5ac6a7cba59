//! [`QueueRecorder`]: what a connection or queue records into, on its own
//! iothread.
//!
//! ```text
//!   let t = rec.start(OpKind::Read, offset, len);   // request received
//!   ... do the I/O, queue the reply ...
//!   rec.finish(t, Outcome::Ok);                      // reply sent
//! ```
//!
//! A recorder is `!Send`: its state sits in a `RefCell` that only its
//! iothread touches, so recording is a few additions and one histogram
//! increment, with no lock and no atomic. The iothread's registry
//! (`local`) knows every recorder on the thread and copies them when the
//! control thread asks; when a recorder is dropped its numbers are added
//! to its export's closed total on that thread, so nothing is lost.
//!
//! Drivers that handle many requests at once stamp a batch once
//! ([`QueueRecorder::start_at`], [`QueueRecorder::finish_at`]); right
//! after an awaited operation completes, [`QueueRecorder::reaped`] gives
//! the time its completion was reaped without reading the clock at all
//! (the iothread reads it once per reap). With recording off
//! (`RINGSTOR_STATS=off`) every call returns at once and reads no clock.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::export::ExportStats;
use super::local;
use super::op::{ErrorKind, OpKind, Outcome};
use super::snapshot::Totals;

/// A moment, or nothing when recording is off.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(Option<Instant>);

/// A started request: give it back to [`QueueRecorder::finish`].
#[derive(Debug, Clone, Copy)]
#[must_use = "a started request must be finished, or the in-flight count stays up"]
pub struct Started {
    at: Stamp,
    op: OpKind,
    offset: u64,
    len: u64,
}

impl Started {
    /// The request kind.
    pub fn op(&self) -> OpKind {
        self.op
    }
}

/// What the recorder holds; shared with the thread's registry.
pub(crate) struct QueueCell {
    pub(crate) queue: String,
    pub(crate) client: Option<String>,
    pub(crate) live: RefCell<Live>,
}

#[derive(Default)]
pub(crate) struct Live {
    pub(crate) totals: Totals,
    pub(crate) in_flight: u64,
    /// The totals at the last reset (`x-query-export-stats` `reset`).
    pub(crate) baseline: Option<Box<Totals>>,
}

/// Records one connection's or queue's requests. See the module docs.
pub struct QueueRecorder {
    export: Arc<ExportStats>,
    cell: Rc<QueueCell>,
    key: u64,
    on: bool,
}

impl std::fmt::Debug for QueueRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueRecorder")
            .field("export", &self.export.id())
            .field("queue", &self.cell.queue)
            .finish_non_exhaustive()
    }
}

impl QueueRecorder {
    pub(crate) fn new(export: Arc<ExportStats>, queue: String, client: Option<String>) -> Self {
        let on = export.enabled();
        let cell = Rc::new(QueueCell {
            queue,
            client,
            live: RefCell::new(Live::default()),
        });
        let key = local::register(&export, &cell);
        export.log_open(&cell.queue, cell.client.as_deref());
        QueueRecorder {
            export,
            cell,
            key,
            on,
        }
    }

    /// The export this queue belongs to.
    pub fn export(&self) -> &Arc<ExportStats> {
        &self.export
    }

    /// The queue's name.
    pub fn queue(&self) -> &str {
        &self.cell.queue
    }

    /// The peer, if known.
    pub fn client(&self) -> Option<&str> {
        self.cell.client.as_deref()
    }

    /// The time now (nothing when recording is off).
    #[inline]
    pub fn now(&self) -> Stamp {
        Stamp(self.on.then(Instant::now))
    }

    /// When the iothread last reaped completions: for a task that has
    /// just been woken by an operation (a receive, a send), the moment
    /// that operation completed, without a clock read of its own.
    #[inline]
    pub fn reaped(&self) -> Stamp {
        Stamp(self.on.then(engine::iothread::reap_time))
    }

    /// A request of `len` bytes at `offset` was received now.
    #[inline]
    pub fn start(&self, op: OpKind, offset: u64, len: u64) -> Started {
        self.start_at(self.now(), op, offset, len)
    }

    /// A request was received at `at` (one [`Self::now`] for a batch).
    #[inline]
    pub fn start_at(&self, at: Stamp, op: OpKind, offset: u64, len: u64) -> Started {
        if self.on {
            self.cell.live.borrow_mut().in_flight += 1;
        }
        Started {
            at,
            op,
            offset,
            len,
        }
    }

    /// Its reply was sent now.
    #[inline]
    pub fn finish(&self, t: Started, outcome: Outcome) {
        if self.on {
            self.finish_at(self.now(), t, outcome);
        }
    }

    /// Its reply was sent at `now` (one [`Self::now`] for a batch).
    #[inline]
    pub fn finish_at(&self, now: Stamp, t: Started, outcome: Outcome) {
        let (Some(now), Some(at)) = (now.0, t.at.0) else {
            return;
        };
        let ns = now.saturating_duration_since(at).as_nanos() as u64;
        let mut l = self.cell.live.borrow_mut();
        l.in_flight = l.in_flight.saturating_sub(1);
        let end = t.offset.saturating_add(t.len);
        l.totals.counters.record(t.op, end, t.len, ns, outcome);
        l.totals.counters.last_access = Some(now);
        l.totals.latency.record(t.op, ns);
    }

    /// The peer broke the protocol; the queue is ending. Counted as a
    /// protocol error and logged (rate-limited) with the peer's address.
    pub fn protocol_error(&self, what: &dyn std::fmt::Display) {
        if self.on {
            self.cell.live.borrow_mut().totals.counters.errors[ErrorKind::Protocol.index()] += 1;
        }
        self.export
            .log_protocol_error(&self.cell.queue, self.cell.client.as_deref(), what);
    }
}

impl Drop for QueueRecorder {
    fn drop(&mut self) {
        let live = std::mem::take(&mut *self.cell.live.borrow_mut());
        let ops: u64 = live
            .totals
            .counters
            .ops
            .iter()
            .map(|o| o.operations + o.failed + o.invalid)
            .sum();
        self.export
            .log_close(&self.cell.queue, self.cell.client.as_deref(), ops);
        local::retire(self.export.instance(), self.key, live);
    }
}
