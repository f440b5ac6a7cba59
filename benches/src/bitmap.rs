//! The dirty-bitmap scenario: 4k random writes at qd32 to a null node
//! carrying a dirty bitmap, with the bitmap disabled
//! (`null-randwrite-4k-qd32`) and enabled (`null-randwrite-4k-qd32-bitmap`),
//! in one server process, repeat by repeat in turn (off, on, off, on, ...).
//! The cost of tracking writes is the second job's IOPS over the first's
//! (target: at least 0.95).
//!
//! The null backend keeps the kernel's page-cache writeback out of the
//! measure (page-cache randwrite here is writeback-bound and swings by a
//! third between runs), so what is left is the server's own work per
//! write, of which marking is part. Taking the repeats in turn matters on
//! these machines: run one after the other, the two jobs of the same
//! server differed by up to 30 % either way with nothing changed.
//!
//! Bitmaps are made over QMP (neither QSD nor ringstor has a command-line
//! option for them): the QSD-style servers get a monitor socket, the
//! bitmap is added right after start (default 64 KiB granularity, as
//! libvirt uses) and enabled or disabled before each job. nbdkit and
//! qemu-nbd have no bitmaps and skip the scenario.

use crate::error::{Context, Error, Result};
use crate::fio;
use crate::jobs::{BackendKind, Job, Primary, Scenario, TransportKind};
use crate::qsd;
use crate::results::{Row, Sample};
use crate::runner::Plan;
use crate::servers::{RunningServer, ServerKind};
use crate::transport::LaunchSpec;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Scenario id.
pub const SCENARIO: &str = "null-write-bitmap";
/// The job with the bitmap disabled (the baseline).
pub const BASELINE_JOB: &str = "null-randwrite-4k-qd32";
/// The job with the bitmap enabled.
pub const JOB: &str = "null-randwrite-4k-qd32-bitmap";
/// Name of the bitmap.
const BITMAP: &str = "bench";

fn job(id: &'static str) -> Job {
    Job {
        id,
        rw: "randwrite",
        bs: "4k",
        iodepth: 32,
        numjobs: 1,
        rwmixread: None,
        primary: Primary::Iops,
        short_direct: false,
        named_only: false,
    }
}

/// The scenario: baseline job first.
pub fn scenario() -> Scenario {
    Scenario {
        id: SCENARIO,
        backend: BackendKind::Null,
        transport: TransportKind::Unix,
        jobs: vec![job(BASELINE_JOB), job(JOB)],
        in_short: false,
    }
}

/// Whether a `--short` run without `--scenarios` includes scenario `id`:
/// not this one (it would break the short run's ten-minute budget); ask
/// for it with `--scenarios null-write-bitmap`.
pub fn in_default_short(id: &str) -> bool {
    id != SCENARIO
}

fn monitor(dir: &Path, server: ServerKind) -> PathBuf {
    dir.join(format!("qmp-{}.sock", server.id()))
}

/// `spec` as the scenario needs it: other scenarios unchanged; here a QMP
/// monitor added for ringstor and QSD, `None` (skip) for the others.
pub fn prepare(
    scenario: &str,
    server: ServerKind,
    mut spec: LaunchSpec,
    dir: &Path,
) -> Option<LaunchSpec> {
    if scenario != SCENARIO {
        return Some(spec);
    }
    if !matches!(server, ServerKind::Ringstor | ServerKind::Qsd) {
        return None;
    }
    let path = monitor(dir, server);
    let _ = std::fs::remove_file(&path);
    spec.args.extend([
        "--chardev".to_string(),
        format!(
            "socket,id=bench-mon,path={},server=on,wait=off",
            qsd::escape(&path.to_string_lossy())
        ),
        "--monitor".to_string(),
        "chardev=bench-mon".to_string(),
    ]);
    Some(spec)
}

/// Runs QMP commands (after `qmp_capabilities`) on the server's monitor;
/// each must succeed.
fn qmp(dir: &Path, server: ServerKind, commands: &[String]) -> Result<()> {
    let path = monitor(dir, server);
    let sock = UnixStream::connect(&path).with_context(|| format!("QMP {}", path.display()))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut w = sock.try_clone()?;
    let mut r = BufReader::new(sock);
    let mut line = String::new();
    r.read_line(&mut line).context("QMP greeting")?;
    let caps = r#"{"execute": "qmp_capabilities"}"#.to_string();
    for cmd in std::iter::once(&caps).chain(commands) {
        writeln!(w, "{cmd}")?;
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Err(Error::msg("QMP closed"));
            }
            let v: serde_json::Value = serde_json::from_str(&line)?;
            if v.get("event").is_some() {
                continue;
            }
            if v.get("return").is_none() {
                return Err(Error::msg(format!("QMP {cmd}: {line}")));
            }
            break;
        }
    }
    Ok(())
}

fn bitmap_command(execute: &str, extra: &str) -> String {
    format!(
        r#"{{"execute": "{execute}", "arguments": {{"node": "{}", "name": "{BITMAP}"{extra}}}}}"#,
        qsd::NODE
    )
}

/// After the server of the scenario started: adds the bitmap, disabled.
pub fn setup(scenario: &str, server: ServerKind, dir: &Path) -> Result<()> {
    if scenario != SCENARIO {
        return Ok(());
    }
    let add = bitmap_command("block-dirty-bitmap-add", r#", "disabled": true"#);
    qmp(dir, server, &[add])
}

/// Before a run of a job of the scenario: the bitmap records only for
/// [`JOB`].
fn before_job(job: &str, server: ServerKind, dir: &Path) -> Result<()> {
    let cmd = if job == JOB {
        "block-dirty-bitmap-enable"
    } else {
        "block-dirty-bitmap-disable"
    };
    qmp(dir, server, &[bitmap_command(cmd, "")])
}

/// Whether the runner hands scenario `id` to [`run_interleaved`].
pub fn interleaves(id: &str) -> bool {
    id == SCENARIO
}

/// What every run of the scenario on one server shares.
struct Runs<'a> {
    plan: &'a Plan,
    kind: ServerKind,
    fio_args: &'a [String],
    dir: &'a Path,
}

impl Runs<'_> {
    /// One fio run of `job` (the bitmap set for it first).
    fn one(&self, server: &mut RunningServer, job: &Job, out: &Path, secs: u32) -> Result<Sample> {
        server.check_alive()?;
        before_job(job.id, self.kind, self.dir)?;
        let args = fio::args(job, secs, self.fio_args);
        Sample::measure(server.pid(), self.plan.ticks, || {
            fio::run(
                &self.plan.fio,
                &args,
                out,
                self.plan.pin_fio.as_deref(),
                &[],
            )
        })
    }
}

/// The scenario's jobs on a started server: one discarded warm-up each,
/// then the repeats taken in turn. One row per job; an error ends both.
pub fn run_interleaved(
    plan: &Plan,
    server: &mut RunningServer,
    kind: ServerKind,
    fio_args: &[String],
    sc: &Scenario,
    dir: &Path,
    raw: &Path,
) -> Vec<Row> {
    let runs = Runs {
        plan,
        kind,
        fio_args,
        dir,
    };
    let t = plan.timing;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); sc.jobs.len()];
    let mut go = || -> Result<()> {
        std::fs::create_dir_all(raw)?;
        if t.ramp_s > 0 {
            for job in &sc.jobs {
                let out = raw.join(format!("{}-warmup.json", job.id));
                runs.one(server, job, &out, t.ramp_s)
                    .map_err(|e| Error::msg(format!("warm-up: {e}")))?;
            }
        }
        for i in 1..=t.repeats {
            for (j, job) in sc.jobs.iter().enumerate() {
                let out = raw.join(format!("{}-{i}.json", job.id));
                samples[j].push(runs.one(server, job, &out, t.runtime_s)?);
            }
        }
        Ok(())
    };
    let error = go().err().map(|e| {
        println!("ERROR {} {}: {e}", sc.id, kind.id());
        e.to_string()
    });
    sc.jobs
        .iter()
        .zip(samples)
        .map(|(job, s)| Row::new(sc.id, job.id, job.primary, kind, s, error.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            args: vec!["--x".into()],
            ready_socket: "/t/s".into(),
            ready_tcp: None,
            fio_args: vec![],
            fio_prefix: vec![],
            env: vec![],
        }
    }

    #[test]
    fn monitor_only_for_qsd_style_servers_in_this_scenario() {
        let d = Path::new("/t");
        let same = prepare("page-cache", ServerKind::Nbdkit, spec(), d).unwrap();
        assert_eq!(same.args, ["--x"]);
        assert!(prepare(SCENARIO, ServerKind::Nbdkit, spec(), d).is_none());
        assert!(prepare(SCENARIO, ServerKind::QemuNbd, spec(), d).is_none());
        let r = prepare(SCENARIO, ServerKind::Ringstor, spec(), d).unwrap();
        assert_eq!(
            r.args[1..],
            [
                "--chardev",
                "socket,id=bench-mon,path=/t/qmp-ringstor.sock,server=on,wait=off",
                "--monitor",
                "chardev=bench-mon"
            ]
        );
        let ids: Vec<&str> = scenario().jobs.iter().map(|j| j.id).collect();
        assert_eq!(ids, [BASELINE_JOB, JOB]);
        assert!(!in_default_short(SCENARIO) && in_default_short("null"));
    }

    #[test]
    fn commands_name_the_node_and_bitmap() {
        assert_eq!(
            bitmap_command("block-dirty-bitmap-enable", ""),
            r#"{"execute": "block-dirty-bitmap-enable", "arguments": {"node": "disk0", "name": "bench"}}"#
        );
        let add = bitmap_command("block-dirty-bitmap-add", r#", "disabled": true"#);
        assert!(
            add.ends_with(r#""name": "bench", "disabled": true}}"#),
            "{add}"
        );
    }
}
