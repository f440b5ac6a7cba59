//! Statistics of export I/O, recorded on the data path of every export
//! driver and merged when someone asks.
//!
//! ```text
//!  control plane                        iothread (one of many)
//!  ExportStats::new(id, node) ──► driver: rec = stats.queue("3", peer)
//!                                  per request:
//!                                    t = rec.start(op, offset, len)
//!                                    rec.finish(t, outcome)
//!                                  counters + HDR histograms in the
//!                                  recorder (RefCell, thread-local)
//!  query: collect(threads) ─mailbox─► local::snapshot() ─► copies back
//!  merge per export / node / queue, render QMP or OpenMetrics
//! ```
//!
//! # Adopting it in a driver
//!
//! Take `common.stats` from the [`crate::export::ExportCommon`], make one
//! [`QueueRecorder`] per connection or queue *on the iothread it runs on*
//! (`stats.queue(name, client)`), call [`QueueRecorder::start`] when a
//! request is received and [`QueueRecorder::finish`] with its [`Outcome`]
//! when its reply has been sent; [`QueueRecorder::protocol_error`] when a
//! peer breaks the protocol. Dropping the recorder (with the queue) keeps
//! its numbers in the export's totals and logs the disconnect.
//!
//! # What it promises
//!
//! No lock and no atomic shared between iothreads on the path of a
//! request: a recorder is `!Send` and only its thread writes to it. The
//! control thread reads by posting a job to each iothread's mailbox
//! ([`collect`]); an iothread answers between two turns of its loop.
//! `bytes`, `operations` and `total_time_ns` count requests that
//! succeeded, as QEMU's `query-blockstats` does; failures and refusals are
//! counted apart and by [`ErrorKind`].

mod collect;
mod counters;
mod export;
mod latency;
mod local;
mod log;
mod op;
mod recorder;
mod snapshot;

pub use collect::{collect, forget, Request, COLLECT_TIMEOUT};
pub use counters::{Counters, OpCounters};
pub use export::{recording_enabled, ExportStats};
pub use latency::{cumulative_counts, Latency, OpLatency, Summary};
pub use local::Filter;
pub use log::{peer_name, RateLimit};
pub use op::{ErrorKind, OpKind, Outcome};
pub use recorder::{QueueRecorder, Stamp, Started};
pub use snapshot::{ExportSnapshot, QueueSnapshot, ThreadSnapshot, Totals, View};

#[cfg(test)]
mod tests;
