//! What a query gets back from an iothread: plain, `Send` copies of the
//! counters and histograms of every export's queues on that thread, and
//! the types a query merges them into.

use std::time::Instant;

use super::counters::Counters;
use super::latency::Latency;

/// Counters and latency histograms together: what a queue records, and
/// what merging queues gives.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Counts, bytes, times, errors.
    pub counters: Counters,
    /// Latency histograms per request kind.
    pub latency: Latency,
}

impl Totals {
    /// Adds `other` into these.
    pub fn add(&mut self, other: &Totals) {
        self.counters.add(&other.counters);
        self.latency.add(&other.latency);
    }

    /// Takes away an earlier copy (a reset baseline).
    pub fn sub(&mut self, earlier: &Totals) {
        self.counters.sub(&earlier.counters);
        self.latency.sub(&earlier.latency);
    }
}

/// Which numbers a query wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Everything since the export was added (`query-blockstats`, metrics:
    /// counters that only grow).
    Cumulative,
    /// Since the last reset of `x-query-export-stats`.
    SinceReset,
}

/// One live connection or queue.
#[derive(Debug, Clone)]
pub struct QueueSnapshot {
    /// The driver's name for it (an NBD connection number, a virtqueue index).
    pub queue: String,
    /// The peer, when the driver knows it (`127.0.0.1:40312`, `unix:pid=77`).
    pub client: Option<String>,
    /// Requests started and not finished.
    pub in_flight: u64,
    /// Its numbers in the view asked for.
    pub totals: Totals,
}

/// One export's numbers on one iothread.
#[derive(Debug, Clone)]
pub struct ExportSnapshot {
    /// [`super::ExportStats::instance`]: tells apart two exports that had
    /// the same id one after the other.
    pub instance: u64,
    /// Export id.
    pub id: String,
    /// Name of the exported node.
    pub node: String,
    /// Queues that have ended, added up.
    pub closed: Totals,
    /// The live queues.
    pub queues: Vec<QueueSnapshot>,
}

impl ExportSnapshot {
    /// Closed and live queues together.
    pub fn total(&self) -> Totals {
        let mut t = self.closed.clone();
        for q in &self.queues {
            t.add(&q.totals);
        }
        t
    }

    /// Requests in flight over all live queues.
    pub fn in_flight(&self) -> u64 {
        self.queues.iter().map(|q| q.in_flight).sum()
    }
}

/// Everything one iothread holds.
#[derive(Debug, Clone)]
pub struct ThreadSnapshot {
    /// The iothread's name (its object id, or `ringstor-main`).
    pub iothread: String,
    /// When the copy was taken (for idle times).
    pub taken: Instant,
    /// Its exports, in no particular order.
    pub exports: Vec<ExportSnapshot>,
}
