//! The OpenMetrics text of a scrape, written by `prometheus-client` from
//! the numbers the control thread gathered (`crate::stats::gather`).
//!
//! Every series has the labels `export`, `type`, `iothread` and `queue`
//! (a live connection or queue by its driver's name, or `closed` for the
//! queues on that iothread that have ended: summing over `queue` gives
//! the export's total, and every counter only grows). Request series add
//! `op` (`read`, `write`, `flush`, `discard`, `write-zeroes`,
//! `block-status`, `other`); error series add `kind`. Latency histograms
//! take their buckets from the HDR histograms.

use drivers::stats::{cumulative_counts, ErrorKind, OpKind, Totals};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::stats::ExportView;

/// Upper bounds of the latency buckets, in seconds (+Inf follows).
const BUCKETS_S: [f64; 20] = [
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type Labels = Vec<(&'static str, String)>;

/// One series' source: its labels, its numbers, its in-flight count
/// (`None` for the closed total).
struct Series<'a> {
    labels: Labels,
    totals: &'a Totals,
    in_flight: Option<u64>,
}

/// Label values come from ids and driver names, but the text format has
/// no escaping here: keep them to printable characters without quotes.
fn value(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || c == '"' || c == '\\' {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[derive(Debug)]
struct Scrape(Vec<ExportView>);

impl Scrape {
    fn series(&self) -> Vec<Series<'_>> {
        let mut out = Vec::new();
        for v in &self.0 {
            for (thread, snap) in &v.threads {
                let base = |queue: &str| -> Labels {
                    vec![
                        ("export", value(&v.id)),
                        ("type", value(v.kind)),
                        ("iothread", value(thread)),
                        ("queue", value(queue)),
                    ]
                };
                for q in &snap.queues {
                    out.push(Series {
                        labels: base(&q.queue),
                        totals: &q.totals,
                        in_flight: Some(q.in_flight),
                    });
                }
                let c = &snap.closed.counters;
                let any = c
                    .ops
                    .iter()
                    .any(|o| o.operations + o.failed + o.invalid > 0)
                    || c.errors.iter().any(|&e| e > 0);
                if any {
                    out.push(Series {
                        labels: base("closed"),
                        totals: &snap.closed,
                        in_flight: None,
                    });
                }
            }
        }
        out
    }
}

fn with(labels: &Labels, key: &'static str, v: &str) -> Labels {
    let mut l = labels.clone();
    l.push((key, v.to_string()));
    l
}

fn counter_family(
    enc: &mut DescriptorEncoder,
    series: &[Series<'_>],
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    get: impl Fn(&Totals, OpKind) -> u64,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for s in series {
        for op in OpKind::ALL {
            let l = with(&s.labels, "op", op.name());
            m.encode_family(&l)?
                .encode_counter::<NoLabelSet, u64, u64>(&get(s.totals, op), None)?;
        }
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let series = self.series();
        counter_family(
            &mut enc,
            &series,
            "ringstor_export_operations",
            "Requests done, by kind",
            None,
            |t, op| t.counters.op(op).operations,
        )?;
        counter_family(
            &mut enc,
            &series,
            "ringstor_export",
            "Bytes of the requests done, by kind",
            Some(&Unit::Bytes),
            |t, op| t.counters.op(op).bytes,
        )?;
        counter_family(
            &mut enc,
            &series,
            "ringstor_export_failed_operations",
            "Requests the node failed, by kind",
            None,
            |t, op| t.counters.op(op).failed,
        )?;
        counter_family(
            &mut enc,
            &series,
            "ringstor_export_invalid_operations",
            "Requests refused before any I/O, by kind",
            None,
            |t, op| t.counters.op(op).invalid,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "ringstor_export_errors",
                "Request and protocol errors, by kind",
                None,
                MetricType::Counter,
            )?;
            for s in &series {
                for k in ErrorKind::ALL {
                    let l = with(&s.labels, "kind", k.name());
                    m.encode_family(&l)?
                        .encode_counter::<NoLabelSet, u64, u64>(
                            &s.totals.counters.errors_of(k),
                            None,
                        )?;
                }
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "ringstor_export_in_flight",
                "Requests received and not yet answered",
                None,
                MetricType::Gauge,
            )?;
            for s in &series {
                if let Some(n) = s.in_flight {
                    m.encode_family(&s.labels)?.encode_gauge(&(n as i64))?;
                }
            }
        }
        let mut m = enc.encode_descriptor(
            "ringstor_export_request_latency",
            "Time from request received to reply sent, by kind",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        let bounds_ns: Vec<u64> = BUCKETS_S.iter().map(|s| (s * 1e9) as u64).collect();
        for s in &series {
            for op in OpKind::ALL {
                let Some(lat) = s.totals.latency.op(op) else {
                    continue;
                };
                let count = lat.hist.len();
                let cum = cumulative_counts(&lat.hist, &bounds_ns);
                let mut buckets = Vec::with_capacity(BUCKETS_S.len() + 1);
                let mut prev = 0u64;
                for (b, c) in BUCKETS_S.iter().zip(&cum) {
                    let c = (*c).min(count);
                    buckets.push((*b, c.saturating_sub(prev)));
                    prev = prev.max(c);
                }
                buckets.push((f64::MAX, count.saturating_sub(prev)));
                let l = with(&s.labels, "op", op.name());
                m.encode_family(&l)?.encode_histogram::<NoLabelSet>(
                    lat.sum_ns as f64 / 1e9,
                    count,
                    &buckets,
                    None,
                )?;
            }
        }
        Ok(())
    }
}

/// The OpenMetrics text (ending in `# EOF`) of `views`.
pub fn render(views: Vec<ExportView>) -> String {
    let mut reg = Registry::default();
    reg.register_collector(Box::new(Scrape(views)));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
        // Writing to a String cannot fail; an encoder error is a bug.
        log::error!("metrics: encoding failed");
    }
    out
}
