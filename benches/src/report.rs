//! The run report: the JSON document (`results.json`) and its Markdown
//! rendering (`results.md`): machine, targets, one table per scenario
//! (median and min–max per metric) and ringstor's ratios.

use crate::jobs::{Mode, Timing};
use crate::machine::Machine;
use crate::results::{best_other_throughput, groups, Comparison, Row, Sample};
use crate::servers::ServerKind;
use crate::stats::Summary;
use crate::targets::Outcome;
use serde::Serialize;
use std::fmt::Write;

/// A server as found for this run.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    /// Which server.
    pub kind: ServerKind,
    /// Binary path used (or expected).
    pub binary: String,
    /// `--version` first line, or why it is missing.
    pub version: String,
    /// Whether it took part.
    pub present: bool,
}

/// Everything about one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Results directory name.
    pub name: String,
    /// Start time, UTC.
    pub started_utc: String,
    /// Wall time of the whole run.
    pub duration_s: f64,
    /// `--short` or `--full`.
    pub mode: Mode,
    /// Transport id.
    pub transport: String,
    /// Repeats and run lengths.
    pub timing: Timing,
    /// CPU placement of servers and fio.
    pub placement: String,
    /// Machine description.
    pub machine: Machine,
    /// Servers and versions.
    pub servers: Vec<ServerInfo>,
    /// Lines about what was skipped and why.
    pub skipped: Vec<String>,
    /// All measurements.
    pub rows: Vec<Row>,
    /// ringstor / best other.
    pub comparisons: Vec<Comparison>,
    /// PASS/FAIL/SKIP.
    pub targets: Vec<Outcome>,
    /// Recording statistics on vs off (with `ringstor-nostats` rows).
    pub recording: Vec<crate::recording::Cost>,
}

/// Human description of a scenario id.
pub fn scenario_title(id: &str) -> &'static str {
    match id {
        "page-cache" => "file image, page cache (cache.direct=off / writeback / cache=default)",
        "direct" => "file image, O_DIRECT (cache.direct=on / --cache=none / nbdkit cache=none)",
        "null" => "null backend (null-co read-zeroes=on / nbdkit null)",
        crate::bitmap::SCENARIO => {
            "null backend, writes, a dirty bitmap on the node disabled then enabled (ringstor, QSD)"
        }
        _ => "",
    }
}

fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Refaults per second over a row's repeats from which the row is listed
/// as having re-read evicted pages. The counter is the whole machine's:
/// rows that cache nothing (null node, O_DIRECT) averaged up to 62/s in
/// `results/full-2026-12-03/` (binaries and libraries read again; single
/// repeats up to ~150/s, hence the row's average), rows over an image
/// being paged out 31-159/s.
const REFAULTS_NOTED: f64 = 100.0;

/// The rows during which the machine re-read evicted file pages at more
/// than the background rate: their page-cache figures are partly the
/// disk's (see `vmstat.rs`).
fn refaults_section(md: &mut String, rows: &[Row]) {
    let _ = writeln!(
        md,
        "\n## Refaults\n\nFile pages re-read after eviction during a repeat (`workingset_refault_file` of /proc/vmstat, the whole machine: binaries and libraries count too), rows at {REFAULTS_NOTED:.0}/s or more over their repeats:\n"
    );
    let mut any = false;
    for row in rows {
        let total: u64 = row.samples.iter().filter_map(|s| s.refaults).sum();
        let secs: f64 = row.samples.iter().map(Sample::seconds).sum();
        let rate = total as f64 / secs.max(1e-3);
        if rate < REFAULTS_NOTED {
            continue;
        }
        let _ = writeln!(
            md,
            "- {} {} {}: {rate:.0}/s, {total} in {secs:.0} s",
            row.scenario,
            row.job,
            row.server.id(),
        );
        any = true;
    }
    if !any {
        let _ = writeln!(md, "None.");
    }
}

fn spread(s: &Summary) -> String {
    format!("{} ({}–{})", si(s.median), si(s.min), si(s.max))
}

fn ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "–".into())
}

/// The Markdown document.
pub fn markdown(r: &RunReport) -> String {
    let mut md = String::new();
    // `write!` to a String cannot fail; results are ignored with `let _`.
    let _ = writeln!(md, "# ringstor benchmark: {}\n", r.name);
    let _ = writeln!(
        md,
        "Started {} UTC, took {:.0} s. Mode `{:?}`, transport `{}`: {} repeats × {} s after one discarded {} s warm-up per server and job; image {} MiB. Placement: {}.\n",
        r.started_utc,
        r.duration_s,
        r.mode,
        r.transport,
        r.timing.repeats,
        r.timing.runtime_s,
        r.timing.ramp_s,
        r.timing.image_mib,
        r.placement
    );
    let m = &r.machine;
    let _ = writeln!(md, "## Machine\n\n| | |\n|---|---|");
    let _ = writeln!(md, "| kernel | {} |", m.kernel);
    let _ = writeln!(md, "| CPU | {} |", m.cpu_model);
    let _ = writeln!(md, "| cores | {} |", m.cores);
    let _ = writeln!(md, "| memory | {:.1} GiB |", m.memory_gib);
    let _ = writeln!(md, "| fio | {} |", m.fio);
    for s in &r.servers {
        let _ = writeln!(md, "| {} | {} (`{}`) |", s.kind.id(), s.version, s.binary);
    }
    let _ = writeln!(
        md,
        "\n## Targets (page cache: vs best of QSD/nbdkit/qemu-nbd; tls: vs QSD)\n"
    );
    for t in &r.targets {
        let _ = writeln!(md, "- {}", t.line());
    }
    if r.rows
        .iter()
        .any(|x| x.server == ServerKind::RingstorNoStats)
    {
        let _ = writeln!(md, "\n## Statistics recording: on vs off\n");
        for l in crate::recording::lines(&r.recording) {
            let _ = writeln!(md, "- {l}");
        }
    }
    if !r.skipped.is_empty() {
        let _ = writeln!(md, "\n## Skipped\n");
        for s in &r.skipped {
            let _ = writeln!(md, "- {s}");
        }
    }
    let _ = writeln!(
        md,
        "\n## Results\n\nMedian (min–max) over the repeats. Latencies are fio total latency (submission + completion, `lat_ns`) in µs; completion-only (`clat_ns`) percentiles are in results.json. CPU is server user+system seconds per million I/Os, fio CPU the client's own (fio's `usr_cpu` + `sys_cpu`): the two share the machine's cores unless pinned apart, so a server's throughput is bounded by both. \"vs best\" is the row's IOPS (MiB/s for 1 MiB jobs) over the best non-ringstor server's."
    );
    let mut scenario = "";
    for (sc, job, rows) in groups(&r.rows) {
        if sc != scenario {
            scenario = sc;
            let _ = writeln!(md, "\n### {sc}: {}\n", scenario_title(sc));
            let _ = writeln!(
                md,
                "| job | server | IOPS | MiB/s | p50 µs | p99 µs | p99.9 µs | CPU s/M I/O | fio CPU s/M I/O | vs best |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
        }
        let best = best_other_throughput(&rows);
        for row in rows {
            match (&row.summary, &row.error) {
                (Some(s), err) => {
                    let vs = row.throughput().zip(best).map(|(t, b)| t / b);
                    let _ = writeln!(
                        md,
                        "| {job} | {}{} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        row.server.id(),
                        if err.is_some() { " (partial)" } else { "" },
                        spread(&s.iops),
                        spread(&s.bw_mib_s),
                        spread(&s.p50_us),
                        spread(&s.p99_us),
                        spread(&s.p999_us),
                        spread(&s.cpu_s_per_mio),
                        s.client_cpu_s_per_mio.as_ref().map_or("–".into(), spread),
                        ratio(vs)
                    );
                }
                (None, err) => {
                    let _ = writeln!(
                        md,
                        "| {job} | {} | error: {} | | | | | | | |",
                        row.server.id(),
                        err.as_deref().unwrap_or("no data").replace('|', "/")
                    );
                }
            }
        }
    }
    refaults_section(&mut md, &r.rows);
    let _ = writeln!(md, "\n## ringstor / best other\n");
    if r.comparisons.is_empty() {
        let _ = writeln!(md, "ringstor was not measured in this run.");
    } else {
        let _ = writeln!(
            md,
            "Throughput > 1 is better; latency and CPU < 1 are better.\n\n| scenario | job | best other | throughput | p50 | p99 | CPU/I/O |\n|---|---|---|---:|---:|---:|---:|"
        );
        for c in &r.comparisons {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                c.scenario,
                c.job,
                c.best_other.map(|k| k.id()).unwrap_or("–"),
                ratio(c.throughput),
                ratio(c.p50),
                ratio(c.p99),
                ratio(c.cpu_per_io)
            );
        }
    }
    let _ = writeln!(
        md,
        "\n![throughput relative to the best other server](ratios.svg)"
    );
    md
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::results::{comparisons, tests::row};
    use crate::targets::evaluate;

    pub(crate) fn sample_report(with_ringstor: bool) -> RunReport {
        let mut rows = vec![
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
            row(
                "null",
                "null-randread-4k-qd32",
                ServerKind::Qsd,
                250_000.0,
                12.0,
                1.0,
            ),
        ];
        if with_ringstor {
            rows.insert(
                0,
                row(
                    "page-cache",
                    "randread-4k-qd32",
                    ServerKind::Ringstor,
                    300_000.0,
                    10.0,
                    0.9,
                ),
            );
        }
        let comparisons = comparisons(&rows);
        let targets = evaluate(&comparisons, &rows);
        RunReport {
            name: "test".into(),
            started_utc: "2026-01-01T00:00:00".into(),
            duration_s: 1.0,
            mode: Mode::Short,
            transport: "nbd".into(),
            timing: Mode::Short.timing(),
            placement: "none".into(),
            machine: Machine::probe("fio-3.33".into()),
            servers: vec![],
            skipped: vec!["SKIP ringstor: binary not found".into()],
            rows,
            comparisons,
            targets,
            recording: Vec::new(),
        }
    }

    #[test]
    fn markdown_has_tables_targets_and_ratios() {
        let md = markdown(&sample_report(true));
        assert!(md.contains("PASS: NBD 4k randread qd32 IOPS, 1 conn"));
        assert!(md.contains("SKIP: NBD 4k randread qd32 IOPS, 4 conns"));
        assert!(md.contains("| randread-4k-qd32 | ringstor | 300.0k (300.0k–300.0k) |"));
        assert!(md.contains("| 1.50x |"));
        assert!(md.contains("| page-cache | randread-4k-qd32 | qsd | 1.50x | 0.67x |"));
        assert!(md.contains("### null:"));
        // QSD's row: 1.2 s server and 2.4 s fio CPU over 600k I/Os.
        assert!(md.contains("| fio CPU s/M I/O |"));
        assert!(md.contains("| 2.00 (2.00–2.00) | 4.00 (4.00–4.00) |"));
    }

    #[test]
    fn rows_that_re_read_evicted_pages_are_listed() {
        let mut r = sample_report(true);
        assert!(markdown(&r).contains("## Refaults") && markdown(&r).contains("None."));
        let row = r
            .rows
            .iter_mut()
            .find(|x| x.server == ServerKind::Qsd)
            .unwrap();
        // QSD's three repeats are 3 s each (600k I/Os at 200k IOPS).
        row.samples[1].refaults = Some(600);
        row.samples[2].refaults = Some(300);
        let md = markdown(&r);
        assert!(
            md.contains("- page-cache randread-4k-qd32 qsd: 100/s, 900 in 9 s"),
            "{md}"
        );
        assert!(!md.contains("randread-4k-qd32 ringstor: "));
    }

    #[test]
    fn markdown_without_ringstor_says_so() {
        let md = markdown(&sample_report(false));
        assert!(md.contains("ringstor was not measured in this run."));
        assert!(md.contains("- SKIP ringstor: binary not found"));
        assert!(md.contains("| randread-4k-qd32 | nbdkit | 100.0k (100.0k–100.0k) |"));
        assert!(md.contains("| 0.50x |"));
    }

    #[test]
    fn json_round_trips_through_serde_json() {
        let v = serde_json::to_value(sample_report(true)).unwrap();
        assert_eq!(v["rows"][0]["server"], "ringstor");
        assert!(v["rows"][0]["summary"]["iops"]["median"].as_f64().is_some());
        assert_eq!(v["targets"][0]["status"], "PASS");
    }
}
