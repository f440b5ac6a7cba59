//! The measurement loop: for each scenario, each job, each server in turn
//! on the same backend (page cache synced and warmed or evicted before each
//! start): one discarded warm-up fio run, then the repeats, sampling the
//! server's CPU around each.

use crate::error::{Error, Result};
use crate::fio;
use crate::image;
use crate::jobs::{BackendKind, CacheMode, Job, Scenario, Timing};
use crate::results::{Row, Sample};
use crate::servers::{RunningServer, ServerKind};
use crate::transport::{Backend, LaunchSpec, Transports};
use std::path::{Path, PathBuf};

/// What to run and with which tools.
#[derive(Debug)]
pub struct Plan {
    /// Scenarios, in order.
    pub scenarios: Vec<Scenario>,
    /// Servers present, with their binaries, in order.
    pub servers: Vec<(ServerKind, PathBuf)>,
    /// Run lengths.
    pub timing: Timing,
    /// fio binary.
    pub fio: PathBuf,
    /// taskset CPU list for servers.
    pub pin_server: Option<String>,
    /// taskset CPU list for fio.
    pub pin_fio: Option<String>,
    /// Clock ticks per second for `/proc` CPU times.
    pub ticks: f64,
}

/// Where a run keeps its files.
#[derive(Debug)]
pub struct Dirs {
    /// Scratch (image, sockets, server logs); removed by its guard.
    pub work: PathBuf,
    /// Results directory; raw fio JSON goes to `raw/` below it.
    pub out: PathBuf,
}

/// Run the plan; failures of one server or job become rows with an error,
/// the rest of the run goes on. Returns rows and "skipped" lines.
///
/// Scenarios on a file or the null node run job by job, every server in
/// turn on each job, started anew on an image synced and read whole just
/// before: one job's rows are a few minutes apart, not a scenario's length
/// (the ratios compare rows, and this shared machine's speed moves), and
/// every server meets the image in the same state, not in the state the
/// previous server's other jobs left. qcow2 scenarios (a fresh image per
/// server lifetime) and the interleaved bitmap scenario keep one server
/// lifetime for all their jobs. While a server runs on a cached image, the
/// image is held mapped ([`image::Resident`]).
pub fn run(plan: &Plan, transports: &Transports, dirs: &Dirs) -> (Vec<Row>, Vec<String>) {
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    let image = dirs.work.join("image.raw");
    let size = plan.timing.image_mib * 1024 * 1024;
    for sc in &plan.scenarios {
        let backend = match sc.backend {
            BackendKind::File(cache) => Backend::File {
                path: image.clone(),
                cache,
            },
            BackendKind::Null => Backend::Null { size },
            BackendKind::Rbd => match crate::rbd::RbdImage::prepare(plan.timing.image_mib) {
                Ok(img) => Backend::Rbd(img),
                Err(e) => {
                    let line = format!("SKIP scenario {}: {e}", sc.id);
                    println!("{line}");
                    skipped.push(line);
                    continue;
                }
            },
            BackendKind::Qcow2(_) => Backend::Qcow2 {
                path: dirs.work.join("image.qcow2"),
            },
        };
        let cx = Cx {
            plan,
            transports,
            dirs,
            sc,
            backend: &backend,
            image: &image,
            size,
        };
        if job_major(sc) {
            for (i, job) in sc.jobs.iter().enumerate() {
                for (kind, bin) in &plan.servers {
                    let mut up = match cx.launch(*kind, bin) {
                        Launch::Up(up) => up,
                        Launch::Skip(line) => {
                            if i == 0 {
                                println!("{line}");
                                skipped.push(line);
                            }
                            continue;
                        }
                        Launch::Failed(e) => {
                            println!("ERROR {} {} {}: {e}", sc.id, job.id, kind.id());
                            let e = Some(e.to_string());
                            rows.push(Row::new(sc.id, job.id, job.primary, *kind, vec![], e));
                            continue;
                        }
                    };
                    rows.push(cx.measure(&mut up.server, *kind, &up.spec, job));
                    // `up` dropped here: the server killed and reaped before the next one.
                }
            }
            continue;
        }
        for (kind, bin) in &plan.servers {
            let mut up = match cx.launch(*kind, bin) {
                Launch::Up(up) => up,
                Launch::Skip(line) => {
                    println!("{line}");
                    skipped.push(line);
                    continue;
                }
                Launch::Failed(e) => {
                    println!("ERROR {} {}: {e}", sc.id, kind.id());
                    for j in &sc.jobs {
                        let e = Some(e.to_string());
                        rows.push(Row::new(sc.id, j.id, j.primary, *kind, vec![], e));
                    }
                    continue;
                }
            };
            if crate::bitmap::interleaves(sc.id) {
                let raw = dirs.out.join("raw").join(sc.id).join(kind.id());
                let rs = crate::bitmap::run_interleaved(
                    plan,
                    &mut up.server,
                    *kind,
                    &up.spec.fio_args,
                    sc,
                    &dirs.work,
                    &raw,
                );
                for row in rs {
                    print_progress(&row);
                    rows.push(row);
                }
                continue;
            }
            for job in &sc.jobs {
                rows.push(cx.measure(&mut up.server, *kind, &up.spec, job));
            }
            // `up` dropped here: the server killed and reaped before the next one.
        }
    }
    (rows, skipped)
}

/// Whether scenario `sc` runs job by job, each server started anew per job.
fn job_major(sc: &Scenario) -> bool {
    matches!(sc.backend, BackendKind::File(_) | BackendKind::Null)
        && !crate::bitmap::interleaves(sc.id)
}

/// How many times each server is started for scenario `sc`.
pub fn server_lifetimes(sc: &Scenario) -> usize {
    if job_major(sc) {
        sc.jobs.len()
    } else {
        1
    }
}

/// One scenario's setting, shared by its server launches.
struct Cx<'a> {
    plan: &'a Plan,
    transports: &'a Transports<'a>,
    dirs: &'a Dirs,
    sc: &'a Scenario,
    backend: &'a Backend,
    image: &'a Path,
    size: u64,
}

/// A server started for a scenario: how fio reaches it, the process, and
/// the cached image held mapped ([`image::Resident`]) for its lifetime.
struct Up {
    spec: LaunchSpec,
    server: RunningServer,
    _resident: Option<image::Resident>,
}

/// A server started for a scenario, or why not.
enum Launch {
    /// Started.
    Up(Box<Up>),
    /// The server cannot serve this scenario (a "SKIP" line).
    Skip(String),
    /// Preparing the backend or starting the server failed.
    Failed(Error),
}

impl Cx<'_> {
    /// Backend in its starting state, then `kind` started on it.
    fn launch(&self, kind: ServerKind, bin: &Path) -> Launch {
        let (plan, dirs, sc) = (self.plan, self.dirs, self.sc);
        let transport = self.transports.get(sc.transport);
        let spec = transport
            .and_then(|t| t.launch(kind, self.backend, &dirs.work))
            .and_then(|spec| crate::bitmap::prepare(sc.id, kind, spec, &dirs.work));
        let Some(spec) = spec else {
            return Launch::Skip(format!(
                "SKIP {} on {}: not supported by this server over {}",
                kind.id(),
                sc.id,
                transport.map_or(sc.transport.id(), |t| t.id())
            ));
        };
        let qcow2 = dirs.work.join("image.qcow2");
        if let Err(e) = prepare_cache(&sc.backend, self.image, &qcow2, self.size) {
            return Launch::Failed(e);
        }
        let cached = match sc.backend {
            BackendKind::File(CacheMode::PageCache) => Some(self.image),
            BackendKind::Qcow2(_) => Some(qcow2.as_path()),
            _ => None,
        };
        let resident = match cached.map(image::Resident::map).transpose() {
            Ok(r) => r,
            Err(e) => return Launch::Failed(e),
        };
        let log = dirs.work.join(format!("{}-{}.log", sc.id, kind.id()));
        let name = format!("{} ({})", kind.id(), sc.id);
        let server = match RunningServer::start(&name, bin, &spec, plan.pin_server.as_deref(), &log)
        {
            Ok(s) => s,
            Err(e) => return Launch::Failed(e),
        };
        if let Err(e) = crate::bitmap::setup(sc.id, kind, &dirs.work) {
            return Launch::Failed(e);
        }
        Launch::Up(Box::new(Up {
            spec,
            server,
            _resident: resident,
        }))
    }

    /// One job's row on a started server.
    fn measure(
        &self,
        server: &mut RunningServer,
        kind: ServerKind,
        spec: &LaunchSpec,
        job: &Job,
    ) -> Row {
        let (plan, sc) = (self.plan, self.sc);
        let client = self.transports.get(sc.transport).and_then(|t| t.client());
        let client = client.as_deref().unwrap_or(&plan.fio);
        let raw = self.dirs.out.join("raw").join(sc.id).join(kind.id());
        let (samples, error) = match run_job(plan, client, server, spec, job, &raw) {
            Ok(s) => (s, None),
            Err((s, e)) => {
                println!("ERROR {} {} {}: {e}", sc.id, job.id, kind.id());
                (s, Some(e.to_string()))
            }
        };
        let row = Row::new(sc.id, job.id, job.primary, kind, samples, error);
        print_progress(&row);
        row
    }
}

/// Puts the backend in the same state for each server: the raw image
/// written back (the previous server's dirty pages would otherwise be
/// written back during this one's run), for O_DIRECT also evicted, the
/// qcow2 image made anew (so every server allocates into the same fresh
/// image). A cached image is read whole by [`image::Resident::map`] next.
fn prepare_cache(backend: &BackendKind, image: &Path, qcow2: &Path, size: u64) -> Result<()> {
    match backend {
        BackendKind::File(CacheMode::PageCache) => image::sync(image),
        BackendKind::File(CacheMode::Direct) => image::evict(image),
        BackendKind::Null | BackendKind::Rbd => Ok(()),
        BackendKind::Qcow2(layout) => image::create_qcow2(qcow2, size, *layout),
    }
}

/// Warm-up plus repeats; on failure, the samples so far and the error.
fn run_job(
    plan: &Plan,
    client: &Path,
    server: &mut RunningServer,
    spec: &LaunchSpec,
    job: &Job,
    raw: &Path,
) -> std::result::Result<Vec<Sample>, (Vec<Sample>, Error)> {
    let mut samples = Vec::new();
    let go = |samples: &mut Vec<Sample>, server: &mut RunningServer| -> Result<()> {
        std::fs::create_dir_all(raw)?;
        let pin = plan.pin_fio.as_deref();
        if plan.timing.ramp_s > 0 {
            let out = raw.join(format!("{}-warmup.json", job.id));
            let args = fio::args(job, plan.timing.ramp_s, &spec.fio_args);
            fio::run(client, &args, &out, pin, &spec.fio_prefix)
                .map_err(|e| Error::msg(format!("warm-up: {e}")))?;
        }
        for i in 1..=plan.timing.repeats {
            server.check_alive()?;
            let out = raw.join(format!("{}-{i}.json", job.id));
            let args = fio::args(job, plan.timing.runtime_s, &spec.fio_args);
            samples.push(Sample::measure(server.pid(), plan.ticks, || {
                fio::run(client, &args, &out, pin, &spec.fio_prefix)
            })?);
        }
        Ok(())
    };
    match go(&mut samples, server) {
        Ok(()) => Ok(samples),
        Err(e) => Err((samples, e)),
    }
}

fn print_progress(row: &Row) {
    if let Some(s) = row.summary {
        println!(
            "  {:<10} {:<24} {:<9} {:>10.0} IOPS {:>8.1} MiB/s  p50 {:>7.1} µs  p99 {:>8.1} µs  CPU {:>6.2} s/M I/O",
            row.scenario,
            row.job,
            row.server.id(),
            s.iops.median,
            s.bw_mib_s.median,
            s.p50_us.median,
            s.p99_us.median,
            s.cpu_s_per_mio.median
        );
    }
}
