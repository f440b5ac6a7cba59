//! Plain counters: per request kind (operations, bytes, time, failures)
//! and per error kind. Owned by one queue on one iothread while it
//! records; copied into snapshots and added up when a query merges them.

use std::time::Instant;

use super::op::{ErrorKind, OpKind, Outcome};

/// The counters of one request kind, with QEMU's meaning: `operations`,
/// `bytes` and `total_time_ns` count requests that succeeded, `failed` and
/// `invalid` the others (QEMU's `account-failed=off`,
/// `account-invalid=off`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounters {
    /// Requests done.
    pub operations: u64,
    /// Bytes of the requests done.
    pub bytes: u64,
    /// Sum of their latencies (request received to reply sent).
    pub total_time_ns: u64,
    /// Requests the node failed.
    pub failed: u64,
    /// Requests refused before any I/O.
    pub invalid: u64,
}

/// Every counter of a queue, an export or a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Per request kind, indexed by [`OpKind::index`].
    pub ops: [OpCounters; OpKind::COUNT],
    /// Errors by kind, indexed by [`ErrorKind::index`] (request errors and
    /// protocol errors).
    pub errors: [u64; ErrorKind::COUNT],
    /// End of the furthest write, write-zeroes or discard done.
    pub wr_highest_offset: u64,
    /// When the last request finished.
    pub last_access: Option<Instant>,
}

impl Counters {
    /// The counters of one kind.
    pub fn op(&self, kind: OpKind) -> &OpCounters {
        &self.ops[kind.index()]
    }

    /// Errors of one kind.
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors[kind.index()]
    }

    /// Counts one finished request.
    #[inline]
    pub(crate) fn record(&mut self, op: OpKind, end: u64, len: u64, ns: u64, outcome: Outcome) {
        let c = &mut self.ops[op.index()];
        match outcome {
            Outcome::Ok => {
                c.operations += 1;
                c.bytes += len;
                c.total_time_ns += ns;
                if matches!(op, OpKind::Write | OpKind::WriteZeroes | OpKind::Discard) {
                    self.wr_highest_offset = self.wr_highest_offset.max(end);
                }
            }
            Outcome::Failed(k) => {
                c.failed += 1;
                self.errors[k.index()] += 1;
            }
            Outcome::Invalid(k) => {
                c.invalid += 1;
                self.errors[k.index()] += 1;
            }
        }
    }

    /// Adds `other` (merging queues, threads, exports).
    pub fn add(&mut self, other: &Counters) {
        for (a, b) in self.ops.iter_mut().zip(&other.ops) {
            a.operations += b.operations;
            a.bytes += b.bytes;
            a.total_time_ns += b.total_time_ns;
            a.failed += b.failed;
            a.invalid += b.invalid;
        }
        for (a, b) in self.errors.iter_mut().zip(&other.errors) {
            *a += b;
        }
        self.wr_highest_offset = self.wr_highest_offset.max(other.wr_highest_offset);
        self.last_access = self.last_access.max(other.last_access);
    }

    /// Takes away an earlier copy of the same counters (a reset baseline).
    /// The high-water mark and the last access stay: they are not sums.
    pub fn sub(&mut self, earlier: &Counters) {
        for (a, b) in self.ops.iter_mut().zip(&earlier.ops) {
            a.operations = a.operations.saturating_sub(b.operations);
            a.bytes = a.bytes.saturating_sub(b.bytes);
            a.total_time_ns = a.total_time_ns.saturating_sub(b.total_time_ns);
            a.failed = a.failed.saturating_sub(b.failed);
            a.invalid = a.invalid.saturating_sub(b.invalid);
        }
        for (a, b) in self.errors.iter_mut().zip(&earlier.errors) {
            *a = a.saturating_sub(*b);
        }
    }

    /// Nanoseconds since the last request finished, if there was one.
    pub fn idle_ns(&self, now: Instant) -> Option<u64> {
        self.last_access
            .map(|t| now.saturating_duration_since(t).as_nanos() as u64)
    }
}
