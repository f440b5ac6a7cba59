//! Latency histograms: one HDR histogram per request kind, created on the
//! first request of that kind, in nanoseconds with two significant digits
//! (1 % precision; a histogram grows to about 10 KiB for latencies up to a
//! millisecond). Only the owning queue records into it; queries copy it.

use hdrhistogram::Histogram;

use super::op::OpKind;

/// Longest latency kept apart; anything longer counts as this.
const MAX_NS: u64 = 3_600_000_000_000;
/// Significant digits of the histograms.
const SIGFIG: u8 = 2;

/// One request kind's histogram and the exact sum of what it holds.
#[derive(Debug, Clone)]
pub struct OpLatency {
    /// The latencies, in ns.
    pub hist: Histogram<u64>,
    /// Their exact sum, in ns.
    pub sum_ns: u64,
}

impl OpLatency {
    fn new() -> OpLatency {
        OpLatency {
            // Auto-resizing: it only grows as far as the latencies seen.
            hist: Histogram::new(SIGFIG).unwrap_or_else(|_| unreachable_sigfig()),
            sum_ns: 0,
        }
    }
}

/// `Histogram::new` fails only for more than 5 significant digits.
#[cold]
fn unreachable_sigfig() -> Histogram<u64> {
    panic!("hdrhistogram refused {SIGFIG} significant digits")
}

/// Percentiles of one histogram, in ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Requests measured.
    pub count: u64,
    /// Shortest (to 1 %).
    pub min_ns: u64,
    /// Mean (exact).
    pub mean_ns: u64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Longest (to 1 %).
    pub max_ns: u64,
}

/// The latency histograms of a queue (or a merge of queues).
#[derive(Debug, Clone, Default)]
pub struct Latency {
    by_op: [Option<Box<OpLatency>>; OpKind::COUNT],
}

impl Latency {
    /// Records one request's latency.
    #[inline]
    pub(crate) fn record(&mut self, op: OpKind, ns: u64) {
        let slot = self.by_op[op.index()].get_or_insert_with(|| Box::new(OpLatency::new()));
        let ns = ns.min(MAX_NS);
        if slot.hist.record(ns).is_err() {
            slot.hist.saturating_record(ns);
        }
        slot.sum_ns += ns;
    }

    /// The histogram of one kind, if any request of it was measured.
    pub fn op(&self, op: OpKind) -> Option<&OpLatency> {
        self.by_op[op.index()].as_deref()
    }

    /// Adds `other`'s histograms into these.
    pub fn add(&mut self, other: &Latency) {
        for (a, b) in self.by_op.iter_mut().zip(&other.by_op) {
            let Some(b) = b else { continue };
            match a {
                None => *a = Some(b.clone()),
                Some(a) => {
                    if a.hist.add(&b.hist).is_err() {
                        log::warn!("stats: latency histograms could not be merged");
                    }
                    a.sum_ns += b.sum_ns;
                }
            }
        }
    }

    /// Takes away an earlier copy of the same histograms (a reset baseline).
    pub fn sub(&mut self, earlier: &Latency) {
        for (a, b) in self.by_op.iter_mut().zip(&earlier.by_op) {
            let (Some(a), Some(b)) = (a.as_mut(), b) else {
                continue;
            };
            if a.hist.subtract(&b.hist).is_err() {
                log::warn!("stats: a reset baseline does not fit its histogram");
                a.hist.reset();
            }
            a.sum_ns = a.sum_ns.saturating_sub(b.sum_ns);
        }
    }

    /// Percentiles of one kind; `None` when nothing was measured.
    pub fn summary(&self, op: OpKind) -> Option<Summary> {
        self.op(op).and_then(summary)
    }

    /// Percentiles over every kind together.
    pub fn summary_all(&self) -> Option<Summary> {
        let mut all: Option<OpLatency> = None;
        for l in self.by_op.iter().flatten() {
            match &mut all {
                None => all = Some((**l).clone()),
                Some(a) => {
                    let _ = a.hist.add(&l.hist);
                    a.sum_ns += l.sum_ns;
                }
            }
        }
        all.as_ref().and_then(summary)
    }
}

fn summary(l: &OpLatency) -> Option<Summary> {
    let h = &l.hist;
    let count = h.len();
    if count == 0 {
        return None;
    }
    Some(Summary {
        count,
        min_ns: h.min(),
        mean_ns: l.sum_ns / count,
        p50_ns: h.value_at_quantile(0.5),
        p90_ns: h.value_at_quantile(0.9),
        p99_ns: h.value_at_quantile(0.99),
        p999_ns: h.value_at_quantile(0.999),
        max_ns: h.max(),
    })
}

/// Cumulative counts at each upper bound (ns), for Prometheus buckets:
/// `out[i]` counts latencies `<= bounds[i]` (to the histogram's 1 %).
pub fn cumulative_counts(h: &Histogram<u64>, bounds_ns: &[u64]) -> Vec<u64> {
    bounds_ns.iter().map(|&b| h.count_between(0, b)).collect()
}
