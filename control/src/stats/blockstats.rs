//! `query-blockstats` in QEMU's shape (`BlockStats`, `BlockDeviceStats`).
//!
//! With `query-nodes: true`, one entry per node in creation order, as
//! QEMU lists them; each node counts the I/O that exports did on it or
//! through it (a `raw` node's I/O reaches its `file` child, whose
//! `wr_highest_offset` then includes the `raw` offset), including exports
//! removed since. QSD 10 reports zeros there: its NBD server does no
//! accounting. Without it, QEMU lists named or device-attached
//! BlockBackends, and QSD's exports have neither, so QSD prints `[]`;
//! ringstor lists one entry per export instead, with `qdev` set to the
//! export id and `device` empty (an export's backend has no name).
//!
//! Mapping: `rd_*` are reads, `wr_*` writes and write-zeroes (as QEMU's
//! virtio-blk counts them), `unmap_*` discards, `flush_*` flushes.
//! `account_invalid` and `account_failed` are false: failed and refused
//! requests count only in `failed_*` and `invalid_*`.

use std::collections::HashMap;
use std::time::Instant;

use drivers::stats::{Counters, OpCounters, OpKind, View};
use serde_json::{json, Value};

use super::gather;
use crate::daemon::Daemon;

/// Deepest chain of `file` children followed.
const MAX_DEPTH: usize = 16;

/// `query-blockstats`.
pub(crate) fn query(d: &Daemon, query_nodes: bool) -> Value {
    let live = gather(d, View::Cumulative, None, false);
    let now = Instant::now();
    let by_node = node_counters(d, &live);
    let zero = Counters::default();
    let counters_of = |name: &str| by_node.get(name).unwrap_or(&zero);
    if query_nodes {
        return Value::Array(
            d.blocks
                .names_by_age()
                .into_iter()
                .map(|n| node_entry(d, n, counters_of(n), &counters_of, now, 0))
                .collect(),
        );
    }
    Value::Array(
        live.iter()
            .map(|v| {
                let mut e = node_entry(d, &v.node, &v.total().counters, &counters_of, now, 0);
                e["device"] = json!("");
                e["qdev"] = json!(v.id);
                e
            })
            .collect(),
    )
}

/// Counters per node: every live and removed export's, added to its node
/// and the nodes below it.
fn node_counters(d: &Daemon, live: &[super::ExportView]) -> HashMap<String, Counters> {
    let mut out: HashMap<String, Counters> = HashMap::new();
    let mut add = |start: &str, c: &Counters| {
        let mut name = start.to_string();
        let mut shift = 0u64;
        for _ in 0..MAX_DEPTH {
            let Some(entry) = d.blocks.get(&name) else {
                break;
            };
            let mut here = c.clone();
            if here.wr_highest_offset > 0 {
                here.wr_highest_offset = here.wr_highest_offset.saturating_add(shift);
            }
            out.entry(name.clone()).or_default().add(&here);
            let Some(child) = entry.node.child() else {
                break;
            };
            shift += entry
                .json
                .get("offset")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            name = child.name().to_string();
        }
    };
    for v in live {
        add(&v.node, &v.total().counters);
    }
    for (node, c) in d.stats.retired_all() {
        add(node, c);
    }
    out
}

fn node_entry<'a>(
    d: &Daemon,
    name: &str,
    stats: &Counters,
    counters_of: &dyn Fn(&str) -> &'a Counters,
    now: Instant,
    depth: usize,
) -> Value {
    let mut e = json!({
        "node-name": name,
        "stats": device_stats(stats, now),
    });
    let Some(entry) = d.blocks.get(name) else {
        return e;
    };
    let drv = entry.node.driver();
    if matches!(drv, "file" | "host_device") {
        let un = stats.op(OpKind::Discard);
        e["driver-specific"] = json!({
            "driver": drv,
            "discard-nb-ok": un.operations,
            "discard-nb-failed": un.failed,
            "discard-bytes-ok": un.bytes,
        });
    }
    if let Some(child) = entry.node.child() {
        if depth < MAX_DEPTH {
            let c = child.name();
            e["parent"] = node_entry(d, c, counters_of(c), counters_of, now, depth + 1);
        }
    }
    e
}

fn sum(a: &OpCounters, b: &OpCounters) -> OpCounters {
    OpCounters {
        operations: a.operations + b.operations,
        bytes: a.bytes + b.bytes,
        total_time_ns: a.total_time_ns + b.total_time_ns,
        failed: a.failed + b.failed,
        invalid: a.invalid + b.invalid,
    }
}

/// QEMU's `BlockDeviceStats`.
fn device_stats(c: &Counters, now: Instant) -> Value {
    let rd = c.op(OpKind::Read);
    let wr = sum(c.op(OpKind::Write), c.op(OpKind::WriteZeroes));
    let fl = c.op(OpKind::Flush);
    let un = c.op(OpKind::Discard);
    let mut s = json!({
        "rd_bytes": rd.bytes,
        "wr_bytes": wr.bytes,
        "zone_append_bytes": 0,
        "unmap_bytes": un.bytes,
        "rd_operations": rd.operations,
        "wr_operations": wr.operations,
        "zone_append_operations": 0,
        "flush_operations": fl.operations,
        "unmap_operations": un.operations,
        "rd_total_time_ns": rd.total_time_ns,
        "wr_total_time_ns": wr.total_time_ns,
        "zone_append_total_time_ns": 0,
        "flush_total_time_ns": fl.total_time_ns,
        "unmap_total_time_ns": un.total_time_ns,
        "wr_highest_offset": c.wr_highest_offset,
        "rd_merged": 0,
        "wr_merged": 0,
        "zone_append_merged": 0,
        "unmap_merged": 0,
        "failed_rd_operations": rd.failed,
        "failed_wr_operations": wr.failed,
        "failed_zone_append_operations": 0,
        "failed_flush_operations": fl.failed,
        "failed_unmap_operations": un.failed,
        "invalid_rd_operations": rd.invalid,
        "invalid_wr_operations": wr.invalid,
        "invalid_zone_append_operations": 0,
        "invalid_flush_operations": fl.invalid,
        "invalid_unmap_operations": un.invalid,
        "account_invalid": false,
        "account_failed": false,
        "timed_stats": [],
    });
    if let Some(idle) = c.idle_ns(now) {
        s["idle_time_ns"] = json!(idle);
    }
    s
}
