//! `x-query-export-stats` (ringstor; `x-` as QEMU marks unstable
//! commands): per export and per connection or queue, counters of every
//! request kind, errors by kind, requests in flight, and latency
//! percentiles (request received to reply sent).
//!
//! ```text
//! -> {"execute": "x-query-export-stats", "arguments": {"id": "e0", "reset": true}}
//! <- {"return": [{"id": "e0", "type": "nbd", "node-name": "disk0", "in-flight": 0,
//!      "stats": {"read": {"operations": 1024, "bytes": 4194304, "total-time-ns": ..,
//!                         "failed": 0, "invalid": 0}, "write": {..}, ...,
//!                "errors": {"io": 0, ...}, "wr-highest-offset": .., "idle-time-ns": ..},
//!      "latency": {"read": {"count": 1024, "min-ns": .., "mean-ns": .., "p50-ns": ..,
//!                           "p90-ns": .., "p99-ns": .., "p99.9-ns": .., "max-ns": ..}},
//!      "queues": [{"iothread": "io0", "queue": "7", "client": "unix:pid=4242",
//!                  "in-flight": 0, "stats": {..}, "latency": {..}}]}]}
//! ```
//!
//! The numbers count since the export was added, or since the last call
//! with `reset: true` (which returns the numbers before the reset).
//! `query-blockstats` and the metrics endpoint are not reset.

use std::time::Instant;

use drivers::stats::{Counters, ErrorKind, Latency, OpKind, Summary, Totals, View};
use serde_json::{json, Map, Value};

use super::gather;
use crate::daemon::Daemon;
use crate::error::{ControlError, Result};

/// `x-query-export-stats`.
pub(crate) fn query(d: &Daemon, id: Option<&str>, reset: bool) -> Result<Value> {
    if let Some(id) = id {
        if d.exports.stats_of(id).is_none() {
            return Err(ControlError::failed(format!("Export '{id}' is not found")));
        }
    }
    let views = gather(d, View::SinceReset, id, reset);
    let list = views
        .iter()
        .map(|v| {
            let queues: Vec<Value> = v
                .threads
                .iter()
                .flat_map(|(thread, snap)| {
                    snap.queues.iter().map(move |q| {
                        let mut e = totals_json(&q.totals, v.taken);
                        e.insert("iothread".into(), json!(thread));
                        e.insert("queue".into(), json!(q.queue));
                        if let Some(c) = &q.client {
                            e.insert("client".into(), json!(c));
                        }
                        e.insert("in-flight".into(), json!(q.in_flight));
                        Value::Object(e)
                    })
                })
                .collect();
            let mut e = totals_json(&v.total(), v.taken);
            e.insert("id".into(), json!(v.id));
            e.insert("type".into(), json!(v.kind));
            e.insert("node-name".into(), json!(v.node));
            e.insert("in-flight".into(), json!(v.in_flight()));
            e.insert("queues".into(), Value::Array(queues));
            Value::Object(e)
        })
        .collect();
    Ok(Value::Array(list))
}

fn totals_json(t: &Totals, now: Instant) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("stats".into(), counters_json(&t.counters, now));
    m.insert("latency".into(), latency_json(&t.latency));
    m
}

/// Counters as `x-query-export-stats` prints them.
pub(crate) fn counters_json(c: &Counters, now: Instant) -> Value {
    let mut m = Map::new();
    for op in OpKind::ALL {
        let o = c.op(op);
        m.insert(
            op.name().into(),
            json!({
                "operations": o.operations,
                "bytes": o.bytes,
                "total-time-ns": o.total_time_ns,
                "failed": o.failed,
                "invalid": o.invalid,
            }),
        );
    }
    let errors: Map<String, Value> = ErrorKind::ALL
        .iter()
        .map(|k| (k.name().to_string(), json!(c.errors_of(*k))))
        .collect();
    m.insert("errors".into(), Value::Object(errors));
    m.insert("wr-highest-offset".into(), json!(c.wr_highest_offset));
    if let Some(idle) = c.idle_ns(now) {
        m.insert("idle-time-ns".into(), json!(idle));
    }
    Value::Object(m)
}

fn latency_json(l: &Latency) -> Value {
    let m: Map<String, Value> = OpKind::ALL
        .iter()
        .filter_map(|op| {
            l.summary(*op)
                .map(|s| (op.name().to_string(), summary_json(&s)))
        })
        .collect();
    Value::Object(m)
}

fn summary_json(s: &Summary) -> Value {
    json!({
        "count": s.count,
        "min-ns": s.min_ns,
        "mean-ns": s.mean_ns,
        "p50-ns": s.p50_ns,
        "p90-ns": s.p90_ns,
        "p99-ns": s.p99_ns,
        "p99.9-ns": s.p999_ns,
        "max-ns": s.max_ns,
    })
}
