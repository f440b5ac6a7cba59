//! `ringstor-bench`: runs the same fio jobs against ringstor,
//! qemu-storage-daemon, nbdkit and qemu-nbd over one transport (NBD on unix
//! sockets) and writes a Markdown table, a JSON file and an SVG chart of the
//! results, with PASS/FAIL lines for the project's targets.
//! See `benches/README.md`.

mod bitmap;
mod cli;
mod cpu;
mod error;
mod fio;
mod fuse;
mod hog;
mod image;
mod jobs;
mod machine;
mod nbd;
mod nbd_multi;
mod qsd;
mod rbd;
mod recording;
mod report;
mod results;
mod runner;
mod servers;
mod stats;
mod svg;
mod targets;
mod tcp;
mod transport;
mod vhost_user_blk;
mod vmstat;
mod workdir;

use error::{Context, Error, Result};
use jobs::{estimate_seconds, BackendKind, TransportKind};
use report::{RunReport, ServerInfo};
use servers::ServerKind;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use transport::{Transport, Transports};

fn main() {
    if let Err(e) = real_main() {
        eprintln!("ringstor-bench: error: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let opts = cli::parse(std::env::args().skip(1))?;
    if opts.help {
        print!("{}", cli::USAGE);
        return Ok(());
    }
    let started = Instant::now();
    let started_utc = utc_timestamp(SystemTime::now());
    let bench_dir = Path::new(env!("CARGO_MANIFEST_DIR"));

    let mut timing = opts.mode.timing();
    timing.repeats = opts.repeats.unwrap_or(timing.repeats).max(1);
    timing.runtime_s = opts.runtime.unwrap_or(timing.runtime_s).max(1);
    timing.ramp_s = opts.ramp.unwrap_or(timing.ramp_s);
    timing.image_mib = opts.image_mib.unwrap_or(timing.image_mib).max(1);

    let mut scenarios = if opts.transport == "fuse" {
        fuse::VARIANTS.iter().map(|v| v.scenario()).collect()
    } else {
        jobs::scenarios(opts.mode)
    };
    if let Some(f) = &opts.scenarios {
        // The TCP and TLS scenarios run only when asked for by name.
        scenarios.extend(jobs::transport_scenarios());
        scenarios.retain(|s| f.iter().any(|x| x == s.id));
    } else if opts.mode == jobs::Mode::Short {
        scenarios.retain(|s| s.in_short && bitmap::in_default_short(s.id));
    }
    if let Some(f) = &opts.jobs {
        for s in &mut scenarios {
            s.jobs.retain(|j| f.iter().any(|x| x == j.id));
        }
    } else {
        for s in &mut scenarios {
            s.jobs.retain(|j| !j.named_only);
        }
    }
    jobs::keep_single_client(&mut scenarios, &opts.transport);
    scenarios.retain(|s| !s.jobs.is_empty());
    if scenarios.is_empty() {
        return Err(Error::msg("no scenario/job left after --scenarios/--jobs"));
    }

    let fio = servers::which("fio").ok_or_else(|| Error::msg("fio not found on PATH"))?;
    let machine = machine::Machine::probe(servers::version(&fio));

    // Servers: present ones run, missing ones get a clear SKIP line.
    let mut skipped = Vec::new();
    let mut present = Vec::new();
    let mut infos = Vec::new();
    for kind in &opts.servers {
        let bin = servers::expected_binary(*kind, opts.ringstor_bin.as_deref());
        let found = bin.is_file();
        let version = if found {
            servers::version(&bin)
        } else {
            let line = format!(
                "SKIP {}: binary not found at {}; its rows are skipped{}",
                kind.id(),
                bin.display(),
                if *kind == ServerKind::Ringstor {
                    " (build it with cargo build --release -p ringstor-control, or set RINGSTOR_BIN)"
                } else {
                    ""
                }
            );
            println!("{line}");
            skipped.push(line);
            "not found".to_string()
        };
        infos.push(ServerInfo {
            kind: *kind,
            binary: bin.display().to_string(),
            version,
            present: found,
        });
        if found {
            present.push((*kind, bin));
        }
    }
    if present.is_empty() {
        return Err(Error::msg("no server binary found"));
    }

    let vu_client = || {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("ringstor-vu-load")))
            .unwrap_or_default()
    };
    // `--transport` serves the unix-socket scenarios; `tcp` and `tls` bring
    // their own (NBD over TCP loopback).
    let transport: Box<dyn Transport> = match opts.transport.as_str() {
        "nbd" => Box::new(nbd::Nbd),
        "nbd-2t" => Box::new(nbd_multi::NbdTwoIothreads),
        "vhost-user-blk" | "vhost-user-blk-2q" => Box::new(vhost_user_blk::VhostUserBlk {
            queues: if opts.transport.ends_with("2q") { 2 } else { 1 },
            client: vu_client(),
        }),
        // Each FUSE scenario runs with its own configuration (fuse::run_all);
        // this one only names the transport.
        "fuse" => Box::new(fuse::VARIANTS[0]),
        other => return Err(Error::msg(format!("unknown transport {other}"))),
    };
    let _hog = match &opts.hog {
        Some(cpus) => {
            println!("ringstor-bench: CPU hog pinned to {cpus} for the whole run");
            Some(hog::Hog::start(cpus)?)
        }
        None => None,
    };
    let mut used: Vec<&str> = Vec::new();
    for s in &scenarios {
        let id = match s.transport {
            TransportKind::Unix => transport.id(),
            other => other.id(),
        };
        if !used.contains(&id) {
            used.push(id);
        }
    }
    let transport_ids = used.join(", ");
    let cells: usize = scenarios.iter().map(|s| s.jobs.len() * present.len()).sum();
    let starts: usize = scenarios
        .iter()
        .map(|s| runner::server_lifetimes(s) * present.len())
        .sum();
    let estimate = estimate_seconds(&timing, cells, starts);
    println!(
        "ringstor-bench: {:?} mode, transport {}, {} scenarios, {} servers ({}), {} (server, job) cells x {} repeats of {} s: about {:.0} min",
        opts.mode,
        transport_ids,
        scenarios.len(),
        present.len(),
        present.iter().map(|(k, _)| k.id()).collect::<Vec<_>>().join(", "),
        cells,
        timing.repeats,
        timing.runtime_s,
        estimate / 60.0
    );

    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| started_utc.replace(':', ""));
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| bench_dir.join("results").join(&name));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let tmp_base = opts
        .tmp
        .clone()
        .unwrap_or_else(|| bench_dir.join("results/tmp"));
    let work = workdir::TempDir::new_in(&tmp_base)?;

    if scenarios
        .iter()
        .any(|s| matches!(s.backend, BackendKind::File(_)))
    {
        println!(
            "creating {} MiB image (preallocated, written with data)",
            timing.image_mib
        );
        image::create(&work.path().join("image.raw"), timing.image_mib)?;
    }

    let placement = match (&opts.pin_server, &opts.pin_fio) {
        (None, None) => "no pinning (servers and fio share all CPUs)".to_string(),
        (s, f) => format!(
            "servers on CPUs {}, fio on CPUs {}",
            s.as_deref().unwrap_or("any"),
            f.as_deref().unwrap_or("any")
        ),
    };
    let plan = runner::Plan {
        scenarios,
        servers: present,
        timing,
        fio,
        pin_server: opts.pin_server.clone(),
        pin_fio: opts.pin_fio.clone(),
        ticks: cpu::clock_ticks_per_sec(),
    };
    let dirs = runner::Dirs {
        work: work.path().to_path_buf(),
        out: out.clone(),
    };
    let tcp = tcp::NbdTcp::plain();
    let tls = if plan
        .scenarios
        .iter()
        .any(|s| s.transport == TransportKind::Tls)
    {
        Some(tcp::NbdTcp::tls()?)
    } else {
        None
    };
    let transports = Transports {
        unix: transport.as_ref(),
        tcp: &tcp,
        tls: tls.as_ref().map(|t| t as &dyn Transport),
    };
    let (rows, more_skipped) = if opts.transport == "fuse" {
        fuse::run_all(&plan, &transports, &dirs)
    } else {
        runner::run(&plan, &transports, &dirs)
    };
    drop(work);
    skipped.extend(more_skipped);

    let comparisons = results::comparisons(&rows);
    let targets = targets::evaluate_for(transport.id(), &comparisons, &rows);
    let recording = recording::costs(&rows);
    let report = RunReport {
        name: name.clone(),
        started_utc,
        duration_s: started.elapsed().as_secs_f64(),
        mode: opts.mode,
        transport: transport_ids,
        timing,
        placement,
        machine,
        servers: infos,
        skipped,
        rows,
        comparisons,
        targets,
        recording,
    };
    write_outputs(&report, &out)?;
    Ok(())
}

fn write_outputs(report: &RunReport, out: &Path) -> Result<()> {
    let md = report::markdown(report);
    let write = |file: &str, text: &str| -> Result<PathBuf> {
        let p = out.join(file);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    };
    write("results.json", &serde_json::to_string_pretty(report)?)?;
    let title = format!(
        "{}: throughput relative to the best of QSD/nbdkit/qemu-nbd",
        report.name
    );
    write("ratios.svg", &svg::chart(&title, &report.rows))?;
    let md_path = write("results.md", &md)?;
    println!("\n{md}");
    for t in &report.targets {
        println!("{}", t.line());
    }
    if report
        .rows
        .iter()
        .any(|r| r.server == ServerKind::RingstorNoStats)
    {
        for l in recording::lines(&report.recording) {
            println!("{l}");
        }
    }
    println!("\nresults: {}", md_path.display());
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a system time (UTC, proleptic Gregorian).
fn utc_timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_timestamps() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // 2024-02-29 12:34:56
        assert_eq!(utc_timestamp(t), "2024-02-29T12:34:56Z");
    }
}
