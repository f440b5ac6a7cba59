//! The measurement loop: for each scenario, each server in turn on the same
//! backend (page cache warmed or evicted first), each job: one discarded
//! warm-up fio run, then the repeats, sampling the server's CPU around each.

use crate::cpu::process_cpu_seconds;
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
            BackendKind::Qcow2(_) => Backend::Qcow2 {
                path: dirs.work.join("image.qcow2"),
            },
        };
        for (kind, bin) in &plan.servers {
            let transport = transports.get(sc.transport);
            let client = transport.and_then(|t| t.client());
            let client = client.as_deref().unwrap_or(&plan.fio);
            let spec = transport
                .and_then(|t| t.launch(*kind, &backend, &dirs.work))
                .and_then(|spec| crate::bitmap::prepare(sc.id, *kind, spec, &dirs.work));
            let Some(spec) = spec else {
                let line = format!(
                    "SKIP {} on {}: not supported by this server over {}",
                    kind.id(),
                    sc.id,
                    transport.map_or(sc.transport.id(), |t| t.id())
                );
                println!("{line}");
                skipped.push(line);
                continue;
            };
            let fail_all = |rows: &mut Vec<Row>, e: &Error| {
                println!("ERROR {} {}: {e}", sc.id, kind.id());
                for j in &sc.jobs {
                    rows.push(Row::new(
                        sc.id,
                        j.id,
                        j.primary,
                        *kind,
                        vec![],
                        Some(e.to_string()),
                    ));
                }
            };
            let qcow2 = dirs.work.join("image.qcow2");
            if let Err(e) = prepare_cache(&sc.backend, &image, &qcow2, size) {
                fail_all(&mut rows, &e);
                continue;
            }
            let log = dirs.work.join(format!("{}-{}.log", sc.id, kind.id()));
            let name = format!("{} ({})", kind.id(), sc.id);
            let mut server =
                match RunningServer::start(&name, bin, &spec, plan.pin_server.as_deref(), &log) {
                    Ok(s) => s,
                    Err(e) => {
                        fail_all(&mut rows, &e);
                        continue;
                    }
                };
            if let Err(e) = crate::bitmap::setup(sc.id, *kind, &dirs.work) {
                fail_all(&mut rows, &e);
                continue;
            }
            let raw = dirs.out.join("raw").join(sc.id).join(kind.id());
            if crate::bitmap::interleaves(sc.id) {
                let rs = crate::bitmap::run_interleaved(
                    plan,
                    &mut server,
                    *kind,
                    &spec.fio_args,
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
                let row = run_job(plan, client, &mut server, &spec, job, &raw);
                let (samples, error) = match row {
                    Ok(s) => (s, None),
                    Err((s, e)) => {
                        println!("ERROR {} {} {}: {e}", sc.id, job.id, kind.id());
                        (s, Some(e.to_string()))
                    }
                };
                let row = Row::new(sc.id, job.id, job.primary, *kind, samples, error);
                print_progress(&row);
                rows.push(row);
            }
            // `server` dropped here: killed and reaped before the next one.
        }
    }
    (rows, skipped)
}

/// Puts the backend in the same state for each server: the raw image warm
/// or evicted, the qcow2 image made anew (so every server allocates into
/// the same fresh image).
fn prepare_cache(backend: &BackendKind, image: &Path, qcow2: &Path, size: u64) -> Result<()> {
    match backend {
        BackendKind::File(CacheMode::PageCache) => image::warm(image),
        BackendKind::File(CacheMode::Direct) => image::evict(image),
        BackendKind::Null => Ok(()),
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
            let before = process_cpu_seconds(server.pid(), plan.ticks)?;
            let fio = fio::run(client, &args, &out, pin, &spec.fio_prefix)?;
            let after = process_cpu_seconds(server.pid(), plan.ticks)?;
            samples.push(Sample {
                fio,
                server_cpu_s: after - before,
            });
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
