//! What is measured: the fio jobs, the scenarios (page cache, O_DIRECT,
//! null backend), run timing per mode, and the time budget of a run.

use serde::Serialize;

/// Which number a job is judged by in the ratio column and the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Primary {
    /// I/Os per second (small-block jobs).
    Iops,
    /// Bytes per second (large sequential jobs).
    Bandwidth,
}

/// One fio workload, independent of server and transport.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// Stable identifier used in JSON, file names and targets.
    pub id: &'static str,
    /// fio `rw=`.
    pub rw: &'static str,
    /// fio `bs=`.
    pub bs: &'static str,
    /// fio `iodepth=` (per connection).
    pub iodepth: u32,
    /// fio `numjobs=`; each job opens its own connection.
    pub numjobs: u32,
    /// fio `rwmixread=` for mixed jobs.
    pub rwmixread: Option<u32>,
    /// Ratio/chart metric.
    pub primary: Primary,
    /// Also run in the O_DIRECT scenario of a `--short` run (budget).
    pub short_direct: bool,
    /// Run only when named with `--jobs` (rows for a question of their own).
    pub named_only: bool,
}

impl Job {
    const fn new(id: &'static str, rw: &'static str, bs: &'static str, iodepth: u32) -> Job {
        Job {
            id,
            rw,
            bs,
            iodepth,
            numjobs: 1,
            rwmixread: None,
            primary: Primary::Iops,
            short_direct: false,
            named_only: false,
        }
    }
}

/// Jobs on a file-backed export (page-cache and O_DIRECT scenarios).
pub fn file_jobs() -> Vec<Job> {
    vec![
        Job::new("randread-4k-qd1", "randread", "4k", 1),
        Job {
            short_direct: true,
            ..Job::new("randread-4k-qd32", "randread", "4k", 32)
        },
        Job {
            numjobs: 4,
            ..Job::new("randread-4k-qd32-4conn", "randread", "4k", 32)
        },
        // Scaling past one ring: run with `--transport nbd-2t`, which gives
        // ringstor's export an iothread list of two.
        Job {
            numjobs: 16,
            named_only: true,
            ..Job::new("randread-4k-qd32-16conn", "randread", "4k", 32)
        },
        Job::new("randwrite-4k-qd1", "randwrite", "4k", 1),
        Job {
            short_direct: true,
            ..Job::new("randwrite-4k-qd32", "randwrite", "4k", 32)
        },
        Job {
            rwmixread: Some(70),
            ..Job::new("randrw70-4k-qd32", "randrw", "4k", 32)
        },
        Job {
            primary: Primary::Bandwidth,
            ..Job::new("seqread-1m-qd8", "read", "1m", 8)
        },
        Job {
            primary: Primary::Bandwidth,
            ..Job::new("seqwrite-1m-qd8", "write", "1m", 8)
        },
    ]
}

/// Jobs on the rbd backend: 4k random I/O at qd32.
pub fn rbd_jobs() -> Vec<Job> {
    vec![
        Job::new("randread-4k-qd32", "randread", "4k", 32),
        Job::new("randwrite-4k-qd32", "randwrite", "4k", 32),
    ]
}

/// Jobs on a qcow2 image: the cost of the format layer on small I/O.
pub fn qcow2_jobs() -> Vec<Job> {
    vec![
        Job::new("randread-4k-qd32", "randread", "4k", 32),
        Job::new("randwrite-4k-qd32", "randwrite", "4k", 32),
    ]
}

/// Jobs on the null backend (protocol + server overhead only).
pub fn null_jobs() -> Vec<Job> {
    vec![
        Job::new("null-randread-4k-qd32", "randread", "4k", 32),
        Job {
            numjobs: 4,
            named_only: true,
            ..Job::new("null-randread-4k-qd32-4conn", "randread", "4k", 32)
        },
    ]
}

/// How the file backend treats the host page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CacheMode {
    /// Buffered I/O; the image is read into the page cache beforehand.
    PageCache,
    /// O_DIRECT (nbdkit 1.32 has no O_DIRECT: `cache=none` is its closest).
    Direct,
}

/// How a qcow2 scenario's image is laid out when a server starts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Qcow2Layout {
    /// `preallocation=metadata`: every cluster mapped, data areas holes.
    Metadata,
    /// Fresh and sparse: writes allocate clusters as they land.
    Sparse,
}

/// What an export is backed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BackendKind {
    /// The shared preallocated image file.
    File(CacheMode),
    /// A qcow2 image (page cache), made anew for each server.
    Qcow2(Qcow2Layout),
    /// A null device that reads zeroes (null-co, nbdkit null).
    Null,
    /// An RBD image on a single-node Ceph cluster the harness starts
    /// (ringstor and QSD only: both through librbd).
    Rbd,
}

/// How the export is reached (see `crate::transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    /// NBD on a unix socket.
    Unix,
    /// NBD over TCP loopback, plaintext.
    Tcp,
    /// NBD over TCP loopback with TLS (x509, client certificate).
    Tls,
}

impl TransportKind {
    /// Name in reports.
    pub fn id(self) -> &'static str {
        match self {
            TransportKind::Unix => "nbd",
            TransportKind::Tcp => "nbd-tcp",
            TransportKind::Tls => "nbds-tcp",
        }
    }
}

/// A set of jobs run against every server with one backend configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// Identifier: `page-cache`, `direct`, `null`, `rbd`, `tcp`, `tls`, ...
    pub id: &'static str,
    /// Backend of the export.
    pub backend: BackendKind,
    /// How fio reaches the export.
    pub transport: TransportKind,
    /// Jobs, in run order.
    pub jobs: Vec<Job>,
    /// Part of a `--short` run without `--scenarios` (the qcow2 ones are
    /// not, to keep it within its budget, nor rbd, which needs its own
    /// cluster: select them by name).
    pub in_short: bool,
}

/// Run length of each fio measurement.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timing {
    /// Measured fio runs per (server, job).
    pub repeats: u32,
    /// Seconds of each measured run.
    pub runtime_s: u32,
    /// Seconds of the discarded warm-up run before the repeats.
    pub ramp_s: u32,
    /// Image size in MiB.
    pub image_mib: u64,
}

/// `--short` or `--full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// 3 × 3 s, 1 GiB image, O_DIRECT subset: fits 10 minutes on 2 cores.
    Short,
    /// 5 × 10 s, 4 GiB image, every job in every scenario.
    Full,
}

impl Mode {
    /// Default timing of the mode.
    pub fn timing(self) -> Timing {
        match self {
            Mode::Short => Timing {
                repeats: 3,
                runtime_s: 3,
                ramp_s: 1,
                image_mib: 1024,
            },
            Mode::Full => Timing {
                repeats: 5,
                runtime_s: 10,
                ramp_s: 2,
                image_mib: 4096,
            },
        }
    }
}

/// The scenarios of a run in order: page cache, O_DIRECT, null, rbd, null
/// writes with a dirty bitmap.
pub fn scenarios(mode: Mode) -> Vec<Scenario> {
    let direct = file_jobs()
        .into_iter()
        .filter(|j| mode == Mode::Full || j.short_direct)
        .collect();
    let mut all = vec![
        Scenario {
            id: "page-cache",
            backend: BackendKind::File(CacheMode::PageCache),
            transport: TransportKind::Unix,
            jobs: file_jobs(),
            in_short: true,
        },
        Scenario {
            id: "direct",
            backend: BackendKind::File(CacheMode::Direct),
            transport: TransportKind::Unix,
            jobs: direct,
            in_short: true,
        },
        Scenario {
            id: "null",
            backend: BackendKind::Null,
            transport: TransportKind::Unix,
            jobs: null_jobs(),
            in_short: true,
        },
        Scenario {
            id: "qcow2-prealloc",
            backend: BackendKind::Qcow2(Qcow2Layout::Metadata),
            transport: TransportKind::Unix,
            jobs: qcow2_jobs(),
            in_short: false,
        },
        Scenario {
            id: "qcow2-sparse",
            backend: BackendKind::Qcow2(Qcow2Layout::Sparse),
            transport: TransportKind::Unix,
            // Writes first, so they allocate into the fresh image.
            jobs: qcow2_jobs().into_iter().rev().collect(),
            in_short: false,
        },
        Scenario {
            id: "rbd",
            backend: BackendKind::Rbd,
            transport: TransportKind::Unix,
            jobs: rbd_jobs(),
            in_short: false,
        },
    ];
    all.push(crate::bitmap::scenario());
    all
}

/// Scenarios run only when named with `--scenarios`: NBD over TCP
/// loopback in plaintext (`tcp`) and with TLS (`tls`), page cache, for
/// ringstor and QSD with the same certificates.
pub fn transport_scenarios() -> Vec<Scenario> {
    let jobs = || -> Vec<Job> {
        file_jobs()
            .into_iter()
            .filter(|j| matches!(j.id, "randread-4k-qd32" | "seqread-1m-qd8"))
            .collect()
    };
    vec![
        Scenario {
            id: "tcp",
            backend: BackendKind::File(CacheMode::PageCache),
            transport: TransportKind::Tcp,
            jobs: jobs(),
            in_short: false,
        },
        Scenario {
            id: "tls",
            backend: BackendKind::File(CacheMode::PageCache),
            transport: TransportKind::Tls,
            jobs: jobs(),
            in_short: false,
        },
    ]
}

/// Per-fio-invocation overhead (process start, NBD handshake, JSON) and
/// per-server start/stop overhead, in seconds, for the estimate.
const FIO_OVERHEAD_S: f64 = 0.3;
const SERVER_OVERHEAD_S: f64 = 1.0;

/// Estimated wall time in seconds of `cells` (server, job) pairs over
/// `server_starts` server lifetimes: one warm-up plus the repeats per cell.
pub fn estimate_seconds(timing: &Timing, cells: usize, server_starts: usize) -> f64 {
    let per_cell = timing.ramp_s as f64
        + FIO_OVERHEAD_S
        + timing.repeats as f64 * (timing.runtime_s as f64 + FIO_OVERHEAD_S);
    cells as f64 * per_cell + server_starts as f64 * SERVER_OVERHEAD_S
}

/// Leaves out the jobs of several connections where `transport` takes one
/// client: a vhost-user-blk export serves one frontend at a time (its
/// parallelism is the queues of `vhost-user-blk-2q`), and the load
/// generator refuses such a job.
pub fn keep_single_client(scenarios: &mut [Scenario], transport: &str) {
    if transport.starts_with("vhost-user-blk") {
        for s in scenarios {
            s.jobs.retain(|j| j.numjobs == 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_run_with_four_servers_fits_ten_minutes() {
        let t = Mode::Short.timing();
        let sc: Vec<_> = scenarios(Mode::Short)
            .into_iter()
            .filter(|s| s.in_short)
            .collect();
        // Four NBD servers for file scenarios and four for null (ringstor,
        // QSD, nbdkit null, qemu-nbd null-co); the bitmap scenario is not in
        // a default short run.
        let mut sc: Vec<_> = sc
            .into_iter()
            .filter(|s| crate::bitmap::in_default_short(s.id))
            .collect();
        // Named-only jobs run only when asked for (main drops them).
        for s in &mut sc {
            s.jobs.retain(|j| !j.named_only);
        }
        let cells: usize = sc.iter().map(|s| s.jobs.len() * 4).sum();
        // File and null scenarios start each server once per job.
        let starts: usize = sc
            .iter()
            .map(|s| crate::runner::server_lifetimes(s) * 4)
            .sum();
        // Leave a minute for image creation and reporting.
        let est = estimate_seconds(&t, cells, starts);
        assert!(est < 540.0, "{cells} cells, {starts} starts: {est} s");
    }

    #[test]
    fn ids_are_unique() {
        let mut ids: Vec<_> = file_jobs()
            .iter()
            .chain(&null_jobs())
            .map(|j| j.id)
            .collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }

    #[test]
    fn vhost_user_blk_runs_no_multi_connection_job() {
        let count = |t: &str| {
            let mut sc = scenarios(Mode::Full);
            keep_single_client(&mut sc, t);
            sc.iter()
                .flat_map(|s| &s.jobs)
                .filter(|j| j.numjobs > 1)
                .count()
        };
        assert!(count("nbd") >= 2, "NBD keeps its 4-connection jobs");
        assert_eq!(count("vhost-user-blk"), 0);
        assert_eq!(count("vhost-user-blk-2q"), 0);
    }
}
