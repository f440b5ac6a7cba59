//! The data of a run: per (scenario, job, server) the raw repeats and their
//! summaries, and per (scenario, job) ringstor's ratio to the best other
//! server. This is what `results.json` holds and the reports render.

use crate::fio::FioRun;
use crate::jobs::Primary;
use crate::servers::ServerKind;
use crate::stats::{best, ratio, summarize, Better, Summary};
use serde::Serialize;

/// One measured fio run plus the server CPU it cost.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// fio's numbers.
    #[serde(flatten)]
    pub fio: FioRun,
    /// Server CPU seconds (user + system, all threads) during the run.
    pub server_cpu_s: f64,
    /// File pages the machine re-read after eviction during the run
    /// (`None` when `/proc/vmstat` does not say).
    pub refaults: Option<u64>,
}

impl Sample {
    /// The sample of one client run `run` against the server `pid`: its
    /// CPU and the machine's refaults counted around it.
    pub fn measure(
        pid: u32,
        ticks: f64,
        run: impl FnOnce() -> crate::error::Result<FioRun>,
    ) -> crate::error::Result<Sample> {
        let refaults = crate::vmstat::file_refaults();
        let before = crate::cpu::process_cpu_seconds(pid, ticks)?;
        let fio = run()?;
        let after = crate::cpu::process_cpu_seconds(pid, ticks)?;
        Ok(Sample {
            fio,
            server_cpu_s: after - before,
            refaults: crate::vmstat::since(refaults, crate::vmstat::file_refaults()),
        })
    }

    /// Server CPU seconds per million I/Os.
    pub fn cpu_s_per_mio(&self) -> f64 {
        self.server_cpu_s / self.fio.total_ios as f64 * 1e6
    }

    /// Seconds the run measured (its I/Os at its rate).
    pub fn seconds(&self) -> f64 {
        self.fio.total_ios as f64 / self.fio.iops.max(f64::MIN_POSITIVE)
    }

    /// The client's (fio's) CPU seconds per million I/Os, when it said.
    pub fn client_cpu_s_per_mio(&self) -> Option<f64> {
        Some(self.fio.client_cpu_s? / self.fio.total_ios as f64 * 1e6)
    }
}

/// Summaries over a row's repeats (`None` when nothing was measured).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summaries {
    /// IOPS.
    pub iops: Summary,
    /// MiB/s.
    pub bw_mib_s: Summary,
    /// p50 total latency, µs.
    pub p50_us: Summary,
    /// p99 total latency, µs.
    pub p99_us: Summary,
    /// p99.9 total latency, µs.
    pub p999_us: Summary,
    /// Server CPU seconds per million I/Os.
    pub cpu_s_per_mio: Summary,
    /// Client CPU seconds per million I/Os (when every repeat reported it).
    pub client_cpu_s_per_mio: Option<Summary>,
}

/// One server on one job of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Scenario id.
    pub scenario: String,
    /// Job id.
    pub job: String,
    /// Ratio/chart metric of the job.
    pub primary: Primary,
    /// Server.
    pub server: ServerKind,
    /// Measured repeats.
    pub samples: Vec<Sample>,
    /// Why the row is incomplete, if it is.
    pub error: Option<String>,
    /// Median and min–max of each metric.
    pub summary: Option<Summaries>,
}

impl Row {
    /// A row from its samples; summaries are computed here.
    pub fn new(
        scenario: &str,
        job: &str,
        primary: Primary,
        server: ServerKind,
        samples: Vec<Sample>,
        error: Option<String>,
    ) -> Row {
        let s = |f: &dyn Fn(&Sample) -> f64| summarize(&samples.iter().map(f).collect::<Vec<_>>());
        let summary = (|| {
            Some(Summaries {
                iops: s(&|x| x.fio.iops)?,
                bw_mib_s: s(&|x| x.fio.bw_bytes / 1048576.0)?,
                p50_us: s(&|x| x.fio.p50_ns / 1000.0)?,
                p99_us: s(&|x| x.fio.p99_ns / 1000.0)?,
                p999_us: s(&|x| x.fio.p999_ns / 1000.0)?,
                cpu_s_per_mio: s(&|x| x.cpu_s_per_mio())?,
                client_cpu_s_per_mio: samples
                    .iter()
                    .map(Sample::client_cpu_s_per_mio)
                    .collect::<Option<Vec<_>>>()
                    .and_then(|v| summarize(&v)),
            })
        })();
        Row {
            scenario: scenario.to_string(),
            job: job.to_string(),
            primary,
            server,
            samples,
            error,
            summary,
        }
    }

    /// Median of the job's primary metric (IOPS or MiB/s).
    pub fn throughput(&self) -> Option<f64> {
        let s = self.summary?;
        Some(match self.primary {
            Primary::Iops => s.iops.median,
            Primary::Bandwidth => s.bw_mib_s.median,
        })
    }
}

/// ringstor against the best other server on one (scenario, job).
/// Ratios are ringstor / best: > 1 is more throughput, < 1 is lower
/// latency or less CPU.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Scenario id.
    pub scenario: String,
    /// Job id.
    pub job: String,
    /// The other server with the highest throughput.
    pub best_other: Option<ServerKind>,
    /// Primary metric (IOPS or MiB/s) ratio, vs the highest other.
    pub throughput: Option<f64>,
    /// p50 latency ratio, vs the lowest other.
    pub p50: Option<f64>,
    /// p99 latency ratio, vs the lowest other.
    pub p99: Option<f64>,
    /// CPU per I/O ratio, vs the lowest other.
    pub cpu_per_io: Option<f64>,
}

/// Rows grouped by (scenario, job), in first-seen order.
pub fn groups(rows: &[Row]) -> Vec<(&str, &str, Vec<&Row>)> {
    let mut out: Vec<(&str, &str, Vec<&Row>)> = Vec::new();
    for r in rows {
        match out
            .iter_mut()
            .find(|(s, j, _)| *s == r.scenario && *j == r.job)
        {
            Some((_, _, v)) => v.push(r),
            None => out.push((&r.scenario, &r.job, vec![r])),
        }
    }
    out
}

/// The best other server's throughput of a group (the chart's 1.0).
pub fn best_other_throughput(group: &[&Row]) -> Option<f64> {
    let others: Vec<f64> = group
        .iter()
        .filter(|r| !r.server.is_ringstor())
        .filter_map(|r| r.throughput())
        .collect();
    best(&others, Better::Higher)
}

/// ringstor's ratios on every group where ringstor was measured.
pub fn comparisons(rows: &[Row]) -> Vec<Comparison> {
    let mut out = Vec::new();
    for (scenario, job, group) in groups(rows) {
        let Some(rs) = group
            .iter()
            .find(|r| r.server == ServerKind::Ringstor)
            .and_then(|r| r.summary.map(|s| (r, s)))
        else {
            continue;
        };
        let others: Vec<(&Row, Summaries)> = group
            .iter()
            .filter(|r| !r.server.is_ringstor())
            .filter_map(|r| r.summary.map(|s| (*r, s)))
            .collect();
        let col = |f: fn(&Summaries) -> f64| others.iter().map(|(_, s)| f(s)).collect::<Vec<_>>();
        let tput: Vec<f64> = others.iter().filter_map(|(r, _)| r.throughput()).collect();
        let best_other = others
            .iter()
            .filter_map(|(r, _)| r.throughput().map(|t| (r.server, t)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(k, _)| k);
        let (rrow, rsum) = rs;
        out.push(Comparison {
            scenario: scenario.to_string(),
            job: job.to_string(),
            best_other,
            throughput: rrow
                .throughput()
                .and_then(|t| ratio(t, &tput, Better::Higher)),
            p50: ratio(rsum.p50_us.median, &col(|s| s.p50_us.median), Better::Lower),
            p99: ratio(rsum.p99_us.median, &col(|s| s.p99_us.median), Better::Lower),
            cpu_per_io: ratio(
                rsum.cpu_s_per_mio.median,
                &col(|s| s.cpu_s_per_mio.median),
                Better::Lower,
            ),
        });
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A row with identical repeats, for tests of the reports.
    pub(crate) fn row(
        scenario: &str,
        job: &str,
        server: ServerKind,
        iops: f64,
        p50_us: f64,
        cpu_s: f64,
    ) -> Row {
        let fio = FioRun {
            iops,
            bw_bytes: iops * 4096.0,
            p50_ns: p50_us * 1000.0,
            p99_ns: p50_us * 3000.0,
            p999_ns: p50_us * 5000.0,
            clat_p50_ns: p50_us * 900.0,
            clat_p99_ns: p50_us * 2900.0,
            clat_p999_ns: p50_us * 4900.0,
            total_ios: (iops * 3.0) as u64,
            client_cpu_s: Some(cpu_s * 2.0),
        };
        let sample = Sample {
            fio,
            server_cpu_s: cpu_s,
            refaults: Some(0),
        };
        Row::new(scenario, job, Primary::Iops, server, vec![sample; 3], None)
    }

    #[test]
    fn ringstor_is_compared_with_the_best_other() {
        let rows = vec![
            row(
                "page-cache",
                "randread-4k-qd32",
                ServerKind::Ringstor,
                300_000.0,
                10.0,
                0.9,
            ),
            row(
                "page-cache",
                "randread-4k-qd32",
                ServerKind::Qsd,
                200_000.0,
                20.0,
                1.2,
            ),
            row(
                "page-cache",
                "randread-4k-qd32",
                ServerKind::Nbdkit,
                100_000.0,
                15.0,
                1.8,
            ),
        ];
        let c = comparisons(&rows);
        assert_eq!(c.len(), 1);
        let c = &c[0];
        assert_eq!(c.best_other, Some(ServerKind::Qsd));
        assert_eq!(c.throughput, Some(1.5));
        // Lowest other p50 is nbdkit's 15 µs.
        assert!((c.p50.unwrap() - 10.0 / 15.0).abs() < 1e-9);
        // CPU per MIO: ringstor 0.9/900k, qsd 1.2/600k → 1.0 vs 2.0.
        assert!((c.cpu_per_io.unwrap() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn no_comparison_without_ringstor() {
        let rows = vec![row("null", "j", ServerKind::Qsd, 1.0, 1.0, 1.0)];
        assert!(comparisons(&rows).is_empty());
        assert_eq!(best_other_throughput(&groups(&rows)[0].2), Some(1.0));
    }
}
