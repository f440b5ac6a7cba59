//! Export statistics as the control plane shows them: asking every
//! iothread for its numbers (`drivers::stats::collect`), merging them per
//! export, per node and per queue, and keeping the totals of exports that
//! are gone, so that a node's numbers never go down.
//!
//! - `blockstats`: QMP `query-blockstats` in QEMU's shape.
//! - `export_stats`: ringstor's `x-query-export-stats`.
//! - the OpenMetrics endpoint is in `crate::metrics`, fed from [`gather`].

pub(crate) mod blockstats;
pub(crate) mod export_stats;

use std::collections::HashMap;
use std::time::Instant;

use drivers::stats::{self, Counters, ExportSnapshot, ExportStats, Filter, Request, Totals, View};
use engine::iothread::IoThreadHandle;

use crate::daemon::Daemon;

/// One export's numbers from every iothread it has queues on.
#[derive(Debug, Clone)]
pub struct ExportView {
    /// Export id.
    pub id: String,
    /// Export type (`nbd`, ...).
    pub kind: &'static str,
    /// Exported node.
    pub node: String,
    /// Per iothread (by name) that has any of its numbers.
    pub threads: Vec<(String, ExportSnapshot)>,
    /// When the numbers were taken.
    pub taken: Instant,
}

impl ExportView {
    /// All of it added up.
    pub fn total(&self) -> Totals {
        let mut t = Totals::default();
        for (_, s) in &self.threads {
            t.add(&s.total());
        }
        t
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u64 {
        self.threads.iter().map(|(_, s)| s.in_flight()).sum()
    }
}

/// Totals of removed exports, by the node they exported.
#[derive(Debug, Default)]
pub struct StatsHub {
    retired: HashMap<String, Counters>,
}

impl StatsHub {
    /// Counters of removed exports, by the node they exported.
    pub(crate) fn retired_all(&self) -> impl Iterator<Item = (&str, &Counters)> {
        self.retired.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// An export is gone: keep its last numbers under its node, and let
    /// the iothreads forget it.
    pub(crate) fn retire(&mut self, threads: &[IoThreadHandle], export: &ExportStats) {
        let req = Request {
            view: View::Cumulative,
            filter: Filter {
                instances: Some(vec![export.instance()]),
            },
            reset: false,
        };
        let entry = self
            .retired
            .entry(export.node_name().to_string())
            .or_default();
        for snap in stats::collect(threads, &req) {
            for e in snap.exports {
                entry.add(&e.total().counters);
            }
        }
        stats::forget(threads, vec![export.instance()]);
    }

    /// A node was deleted: a new node of that name starts from zero.
    pub(crate) fn forget_node(&mut self, name: &str) {
        self.retired.remove(name);
    }
}

/// Every iothread, the default one first.
pub(crate) fn threads(d: &Daemon) -> Vec<IoThreadHandle> {
    d.objects.all_handles()
}

/// The live exports' numbers (`only`: just that export id), newest
/// first like `query-block-exports`; `reset` starts their since-reset
/// view afresh after reading.
pub(crate) fn gather(d: &Daemon, view: View, only: Option<&str>, reset: bool) -> Vec<ExportView> {
    let exports: Vec<_> = d
        .exports
        .stats_entries()
        .filter(|e| only.is_none_or(|id| e.0 == id))
        .collect();
    let req = Request {
        view,
        filter: Filter {
            instances: Some(exports.iter().map(|e| e.3.instance()).collect()),
        },
        reset,
    };
    let snaps = stats::collect(&threads(d), &req);
    let taken = Instant::now();
    exports
        .into_iter()
        .map(|(id, kind, node, st)| {
            let threads = snaps
                .iter()
                .flat_map(|s| {
                    s.exports
                        .iter()
                        .filter(|e| e.instance == st.instance())
                        .map(|e| (s.iothread.clone(), e.clone()))
                })
                .collect();
            ExportView {
                id: id.to_string(),
                kind,
                node: node.to_string(),
                threads,
                taken,
            }
        })
        .collect()
}
