//! The project's performance targets, judged on the page-cache NBD run
//! against the best of QSD/nbdkit/qemu-nbd (or, for a cost target, against
//! ringstor itself on a baseline job), as PASS/FAIL/SKIP lines. The TLS
//! targets (issue 11) are judged on the `tls` scenario, where QSD is the
//! only other server; they SKIP unless `--scenarios tls` ran.

use crate::results::{Comparison, Row};
use crate::servers::ServerKind;
use serde::Serialize;
use std::fmt;

/// Which ratio of a [`Comparison`] a target reads.
#[derive(Debug, Clone, Copy, Serialize)]
pub enum Metric {
    /// IOPS or bandwidth.
    Throughput,
    /// p50 latency.
    P50,
    /// Server CPU per I/O.
    CpuPerIo,
}

/// One target: `ratio(metric) >= threshold` (`at_least`) or `<=`.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What it promises, for humans.
    pub text: &'static str,
    /// Scenario id.
    pub scenario: &'static str,
    /// Job id.
    pub job: &'static str,
    /// Ratio read.
    pub metric: Metric,
    /// `>=` when true, `<=` when false.
    pub at_least: bool,
    /// Bound on the ratio.
    pub threshold: f64,
    /// `Some(job)`: the ratio is ringstor's throughput on this job over
    /// ringstor's on that job of the same scenario (the cost of a
    /// feature), not over the best other server.
    pub baseline: Option<&'static str>,
}

/// The targets from the project issue.
pub fn targets() -> Vec<Target> {
    let t = |text, job, metric, at_least, threshold| Target {
        text,
        scenario: "page-cache",
        job,
        metric,
        at_least,
        threshold,
        baseline: None,
    };
    // With TLS: at least QSD's throughput at no more CPU per I/O.
    let tls = |text, job, metric, at_least| Target {
        text,
        scenario: "tls",
        job,
        metric,
        at_least,
        threshold: 1.0,
        baseline: None,
    };
    vec![
        t(
            "NBD 4k randread qd32 IOPS, 1 conn",
            "randread-4k-qd32",
            Metric::Throughput,
            true,
            1.5,
        ),
        t(
            "NBD 4k randread qd32 IOPS, 4 conns",
            "randread-4k-qd32-4conn",
            Metric::Throughput,
            true,
            2.0,
        ),
        t(
            "NBD server CPU per read, 4 conns",
            "randread-4k-qd32-4conn",
            Metric::CpuPerIo,
            false,
            0.35,
        ),
        t(
            "NBD 1 MiB seqread qd8 bandwidth",
            "seqread-1m-qd8",
            Metric::Throughput,
            true,
            1.4,
        ),
        t(
            "NBD 4k randread qd1 p50 latency",
            "randread-4k-qd1",
            Metric::P50,
            false,
            1.0,
        ),
        tls(
            "NBD over TLS 4k randread qd32 IOPS vs QSD",
            "randread-4k-qd32",
            Metric::Throughput,
            true,
        ),
        tls(
            "NBD over TLS server CPU per 4k read vs QSD",
            "randread-4k-qd32",
            Metric::CpuPerIo,
            false,
        ),
        tls(
            "NBD over TLS 1 MiB seqread qd8 bandwidth vs QSD",
            "seqread-1m-qd8",
            Metric::Throughput,
            true,
        ),
        tls(
            "NBD over TLS server CPU per 1 MiB read vs QSD",
            "seqread-1m-qd8",
            Metric::CpuPerIo,
            false,
        ),
        Target {
            scenario: crate::bitmap::SCENARIO,
            baseline: Some(crate::bitmap::BASELINE_JOB),
            ..t(
                "NBD 4k randwrite qd32 IOPS (null node) with a dirty bitmap, vs without",
                crate::bitmap::JOB,
                Metric::Throughput,
                true,
                0.95,
            )
        },
    ]
    .into_iter()
    .chain(qcow2_targets())
    .collect()
}

/// qcow2: at least QSD's IOPS at no more CPU per I/O, on both layouts,
/// 4k qd32 reads and writes.
fn qcow2_targets() -> Vec<Target> {
    const ROWS: [(&str, &str, &str, &str); 4] = [
        (
            "qcow2-prealloc",
            "randread-4k-qd32",
            "qcow2 preallocated 4k randread qd32 IOPS",
            "qcow2 preallocated 4k randread qd32 CPU per I/O",
        ),
        (
            "qcow2-prealloc",
            "randwrite-4k-qd32",
            "qcow2 preallocated 4k randwrite qd32 IOPS",
            "qcow2 preallocated 4k randwrite qd32 CPU per I/O",
        ),
        (
            "qcow2-sparse",
            "randread-4k-qd32",
            "qcow2 sparse 4k randread qd32 IOPS",
            "qcow2 sparse 4k randread qd32 CPU per I/O",
        ),
        (
            "qcow2-sparse",
            "randwrite-4k-qd32",
            "qcow2 sparse 4k randwrite qd32 IOPS",
            "qcow2 sparse 4k randwrite qd32 CPU per I/O",
        ),
    ];
    let mut v = Vec::new();
    for (scenario, job, iops, cpu) in ROWS {
        v.push(Target {
            text: iops,
            scenario,
            job,
            metric: Metric::Throughput,
            at_least: true,
            threshold: 1.0,
            baseline: None,
        });
        v.push(Target {
            text: cpu,
            scenario,
            job,
            metric: Metric::CpuPerIo,
            at_least: false,
            threshold: 1.0,
            baseline: None,
        });
    }
    v
}

/// A target's `job` that stands for every job of every scenario whose id
/// starts with the target's `scenario`; the ratio judged is the lowest.
pub const ALL_JOBS: &str = "*";

/// Outcome of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Met.
    Pass,
    /// Not met.
    Fail,
    /// Not measurable in this run (no ringstor, job not run).
    Skip,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        })
    }
}

/// A judged target.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The target.
    pub target: Target,
    /// PASS/FAIL/SKIP.
    pub status: Status,
    /// The measured ratio.
    pub ratio: Option<f64>,
    /// Extra information (ringstor's p99 ratio for the latency target).
    pub note: String,
}

impl Outcome {
    /// The line printed and written to the Markdown.
    pub fn line(&self) -> String {
        let op = if self.target.at_least { ">=" } else { "<=" };
        let got = self
            .ratio
            .map(|r| format!("{r:.2}x"))
            .unwrap_or_else(|| "n/a".to_string());
        let versus = match self.target.baseline {
            Some(b) => format!("ringstor/ringstor on {b}"),
            None => "ringstor/best".to_string(),
        };
        let mut s = format!(
            "{}: {} ({}/{}): {versus} = {got}, target {op} {:.2}x",
            self.status,
            self.target.text,
            self.target.scenario,
            self.target.job,
            self.target.threshold
        );
        if !self.note.is_empty() {
            s.push_str("; ");
            s.push_str(&self.note);
        }
        s
    }
}

/// Throughput of `server` on (scenario, job).
fn throughput(rows: &[Row], server: ServerKind, scenario: &str, job: &str) -> Option<f64> {
    rows.iter()
        .find(|r| r.server == server && r.scenario == scenario && r.job == job)
        .and_then(Row::throughput)
}

/// A baseline target: `server` on the target's job over itself on the
/// baseline job of the same scenario.
fn self_ratio(rows: &[Row], server: ServerKind, t: &Target, baseline: &str) -> Option<f64> {
    let with = throughput(rows, server, t.scenario, t.job)?;
    let without = throughput(rows, server, t.scenario, baseline)?;
    (without > 0.0).then(|| with / without)
}

fn judge(target: &Target, ratio: Option<f64>) -> Status {
    match ratio {
        None => Status::Skip,
        Some(r) if (target.at_least && r >= target.threshold) => Status::Pass,
        Some(r) if (!target.at_least && r <= target.threshold) => Status::Pass,
        Some(_) => Status::Fail,
    }
}

/// The FUSE targets (issue 10), against QSD's FUSE export on the same file.
pub fn fuse_targets() -> Vec<Target> {
    let t = |text, job, metric, at_least, threshold| Target {
        text,
        scenario: "",
        job,
        metric,
        at_least,
        threshold,
        baseline: None,
    };
    vec![
        Target {
            scenario: "fuse-uring-1io",
            ..t(
                "FUSE over io_uring 4k randread qd32 IOPS",
                "randread-4k-qd32",
                Metric::Throughput,
                true,
                1.5,
            )
        },
        Target {
            scenario: "fuse-uring-1io",
            ..t(
                "FUSE over io_uring server CPU per read",
                "randread-4k-qd32",
                Metric::CpuPerIo,
                false,
                0.5,
            )
        },
        Target {
            scenario: "fuse-",
            ..t(
                "FUSE: no row below QSD (lowest ratio of all fuse-* rows)",
                ALL_JOBS,
                Metric::Throughput,
                true,
                1.0,
            )
        },
    ]
}

/// The vhost-user-blk targets (issue 9), against QSD on the same file.
pub fn vhost_targets(transport: &'static str) -> Vec<Target> {
    let t = |text, job, metric, at_least, threshold| Target {
        text,
        scenario: "page-cache",
        job,
        metric,
        at_least,
        threshold,
        baseline: None,
    };
    let mut v = vec![
        t(
            "vhost-user-blk 4k randread qd32 IOPS",
            "randread-4k-qd32",
            Metric::Throughput,
            true,
            1.3,
        ),
        t(
            "vhost-user-blk server CPU per read, qd32",
            "randread-4k-qd32",
            Metric::CpuPerIo,
            false,
            0.5,
        ),
    ];
    for job in [
        "randwrite-4k-qd32",
        "randread-4k-qd1",
        "randwrite-4k-qd1",
        "seqread-1m-qd8",
    ] {
        v.push(t(
            "vhost-user-blk no row below QSD",
            job,
            Metric::Throughput,
            true,
            1.0,
        ));
    }
    if transport.ends_with("2q") {
        for x in &mut v {
            x.text = match x.metric {
                Metric::CpuPerIo => "vhost-user-blk 2 queues: server CPU per read, qd32",
                _ if x.job == "randread-4k-qd32" => {
                    "vhost-user-blk 2 queues: 4k randread qd32 IOPS"
                }
                _ => "vhost-user-blk 2 queues: no row below QSD",
            };
        }
    }
    v
}

/// Judge the targets of `transport` against the run's comparisons and rows.
pub fn evaluate_for(
    transport: &'static str,
    comparisons: &[Comparison],
    rows: &[Row],
) -> Vec<Outcome> {
    let list = match transport {
        "nbd" => targets(),
        "fuse" => fuse_targets(),
        other => vhost_targets(other),
    };
    evaluate_list(list, comparisons, rows)
}

/// Judge every NBD target against the run's comparisons and rows.
#[cfg(test)]
pub fn evaluate(comparisons: &[Comparison], rows: &[Row]) -> Vec<Outcome> {
    evaluate_list(targets(), comparisons, rows)
}

fn evaluate_list(list: Vec<Target>, comparisons: &[Comparison], rows: &[Row]) -> Vec<Outcome> {
    list.into_iter()
        .map(|target| {
            if let Some(baseline) = target.baseline {
                let ratio = self_ratio(rows, ServerKind::Ringstor, &target, baseline);
                let note = match (ratio, self_ratio(rows, ServerKind::Qsd, &target, baseline)) {
                    (None, _) => format!("ringstor not measured on both {baseline} and this job"),
                    (Some(_), Some(q)) => format!("QSD's own ratio {q:.2}x"),
                    (Some(_), None) => String::new(),
                };
                return Outcome {
                    status: judge(&target, ratio),
                    target,
                    ratio,
                    note,
                };
            }
            let pick = |c: &Comparison| match target.metric {
                Metric::Throughput => c.throughput,
                Metric::P50 => c.p50,
                Metric::CpuPerIo => c.cpu_per_io,
            };
            let (c, ratio) = if target.job == ALL_JOBS {
                let worst = comparisons
                    .iter()
                    .filter(|c| c.scenario.starts_with(target.scenario))
                    .filter_map(|c| pick(c).map(|r| (c, r)))
                    .min_by(|a, b| a.1.total_cmp(&b.1));
                (worst.map(|w| w.0), worst.map(|w| w.1))
            } else {
                let c = comparisons
                    .iter()
                    .find(|c| c.scenario == target.scenario && c.job == target.job);
                (c, c.and_then(pick))
            };
            let status = judge(&target, ratio);
            let mut note = match (c, target.metric) {
                (Some(c), Metric::P50) => c
                    .p99
                    .map(|p| format!("p99 ratio {p:.2}x (shown, no target)"))
                    .unwrap_or_default(),
                (Some(c), _) if target.job == ALL_JOBS => {
                    format!("lowest: {}/{}", c.scenario, c.job)
                }
                _ => String::new(),
            };
            if c.is_none() {
                note = "ringstor not measured on this job".to_string();
            }
            Outcome {
                target,
                status,
                ratio,
                note,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(job: &str, throughput: f64, p50: f64, cpu: f64) -> Comparison {
        Comparison {
            scenario: "page-cache".into(),
            job: job.into(),
            best_other: None,
            throughput: Some(throughput),
            p50: Some(p50),
            p99: Some(1.2),
            cpu_per_io: Some(cpu),
        }
    }

    #[test]
    fn pass_fail_and_skip() {
        let c = vec![
            cmp("randread-4k-qd32", 1.6, 1.0, 1.0),
            cmp("randread-4k-qd32-4conn", 1.9, 1.0, 0.3),
            cmp("randread-4k-qd1", 1.0, 0.9, 1.0),
        ];
        let o = evaluate(&c, &[]);
        let st: Vec<Status> = o.iter().map(|o| o.status).collect();
        use Status::*;
        assert_eq!(st[..6], [Pass, Fail, Pass, Skip, Pass, Skip]);
        // The TLS and qcow2 rows were not run.
        assert!(st[6..].iter().all(|s| *s == Skip));
        assert!(o[4].line().contains("p99 ratio 1.20x"));
        assert!(o[0]
            .line()
            .starts_with("PASS: NBD 4k randread qd32 IOPS, 1 conn"));
        assert!(o[3].line().contains("n/a"));
    }

    #[test]
    fn bitmap_cost_is_ringstor_over_itself() {
        use crate::results::tests::row;
        let job = crate::bitmap::JOB;
        let rows = vec![
            row(
                crate::bitmap::SCENARIO,
                crate::bitmap::BASELINE_JOB,
                ServerKind::Ringstor,
                100_000.0,
                50.0,
                1.0,
            ),
            row(
                crate::bitmap::SCENARIO,
                job,
                ServerKind::Ringstor,
                96_000.0,
                50.0,
                1.0,
            ),
            row(
                crate::bitmap::SCENARIO,
                crate::bitmap::BASELINE_JOB,
                ServerKind::Qsd,
                50_000.0,
                50.0,
                1.0,
            ),
            row(
                crate::bitmap::SCENARIO,
                job,
                ServerKind::Qsd,
                45_000.0,
                50.0,
                1.0,
            ),
        ];
        let o = evaluate(&[], &rows);
        let b = o
            .iter()
            .find(|o| o.target.scenario == crate::bitmap::SCENARIO)
            .expect("bitmap target");
        assert_eq!(b.status, Status::Pass);
        assert!((b.ratio.unwrap_or(0.0) - 0.96).abs() < 1e-9);
        let line = b.line();
        assert!(
            line.contains("ringstor/ringstor on null-randwrite-4k-qd32 = 0.96x"),
            "{line}"
        );
        assert!(line.contains("QSD's own ratio 0.90x"), "{line}");
    }

    #[test]
    fn fuse_targets_read_the_uring_row_and_the_lowest_row() {
        let mut c = vec![
            cmp("randread-4k-qd32", 2.0, 1.0, 0.4),
            cmp("randwrite-4k-qd1", 0.9, 1.0, 1.0),
            cmp("seqread-1m-qd8", 3.0, 1.0, 1.0),
        ];
        c[0].scenario = "fuse-uring-1io".into();
        c[1].scenario = "fuse-dev-2io".into();
        c[2].scenario = "page-cache".into();
        let o = evaluate_for("fuse", &c, &[]);
        let n = o.len();
        use Status::*;
        assert_eq!(
            (o[n - 3].status, o[n - 2].status, o[n - 1].status),
            (Pass, Pass, Fail)
        );
        assert_eq!(o[n - 1].ratio, Some(0.9));
        assert!(o[n - 1]
            .line()
            .contains("lowest: fuse-dev-2io/randwrite-4k-qd1"));
    }
}
