//! FUSE: the server mounts the image on a regular file, and fio drives the
//! mounted file with its `io_uring` engine and `direct=1`.
//!
//! ringstor runs in four configurations, each a scenario of its own with
//! QSD measured beside it: FUSE over io_uring or `/dev/fuse`, on one or
//! two iothreads (`fuse-uring-1io`, `fuse-uring-2io`, `fuse-dev-1io`,
//! `fuse-dev-2io`). QSD 10.0's FUSE export has one thread and no
//! io_uring; it gets the same image, node options and `iothread=io0`.
//! FUSE over io_uring needs `/sys/module/fuse/parameters/enable_uring`:
//! [`UringParam`] sets it for the run and puts the old value back.
//!
//! QSD leaves its mount behind when killed, so each server mounts its own
//! file and stale mounts are detached before a server starts and after
//! the last one ([`Fuse::cleanup`]).

use crate::jobs::{BackendKind, CacheMode, Job, Primary, Scenario, TransportKind};
use crate::qsd;
use crate::results::Row;
use crate::runner::{self, Dirs, Plan};
use crate::servers::ServerKind;
use crate::transport::{Backend, LaunchSpec, Transport, Transports};
use std::path::{Path, PathBuf};

const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// One ringstor configuration.
#[derive(Debug, Clone, Copy)]
pub struct Fuse {
    /// FUSE over io_uring (else `/dev/fuse`).
    pub uring: bool,
    /// Iothreads the export is spread over.
    pub iothreads: usize,
}

/// The configurations, in run order.
pub const VARIANTS: [Fuse; 4] = [
    Fuse {
        uring: true,
        iothreads: 1,
    },
    Fuse {
        uring: true,
        iothreads: 2,
    },
    Fuse {
        uring: false,
        iothreads: 1,
    },
    Fuse {
        uring: false,
        iothreads: 2,
    },
];

impl Fuse {
    /// The scenario id of this configuration.
    pub fn scenario_id(self) -> &'static str {
        match (self.uring, self.iothreads) {
            (true, 1) => "fuse-uring-1io",
            (true, _) => "fuse-uring-2io",
            (false, 1) => "fuse-dev-1io",
            (false, _) => "fuse-dev-2io",
        }
    }

    /// Its scenario: the page-cache image, the FUSE jobs.
    pub fn scenario(self) -> Scenario {
        let j = |id, rw, bs, iodepth, primary| Job {
            id,
            rw,
            bs,
            iodepth,
            numjobs: 1,
            rwmixread: None,
            primary,
            short_direct: false,
            named_only: false,
        };
        Scenario {
            id: self.scenario_id(),
            backend: BackendKind::File(CacheMode::PageCache),
            jobs: vec![
                j("randread-4k-qd32", "randread", "4k", 32, Primary::Iops),
                j("randread-4k-qd1", "randread", "4k", 1, Primary::Iops),
                j("randwrite-4k-qd32", "randwrite", "4k", 32, Primary::Iops),
                j("randwrite-4k-qd1", "randwrite", "4k", 1, Primary::Iops),
                j("seqread-1m-qd8", "read", "1m", 8, Primary::Bandwidth),
            ],
            in_short: true,
            transport: TransportKind::Unix,
        }
    }

    fn mountpoint(server: ServerKind, dir: &Path) -> PathBuf {
        dir.join(format!("{}.mnt", server.id()))
    }

    /// Detaches what a killed server left mounted in `dir`.
    pub fn cleanup(dir: &Path) {
        for kind in ServerKind::ALL
            .into_iter()
            .chain([ServerKind::RingstorNoStats])
        {
            let m = Self::mountpoint(kind, dir);
            if is_mounted(&m) {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&m)
                    .status();
            }
        }
    }
}

fn is_mounted(path: &Path) -> bool {
    let p = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&p))
}

impl Transport for Fuse {
    fn id(&self) -> &'static str {
        "fuse"
    }

    fn launch(&self, server: ServerKind, backend: &Backend, dir: &Path) -> Option<LaunchSpec> {
        if !(server.is_ringstor() || server == ServerKind::Qsd) {
            return None;
        }
        if let Backend::Null { .. } = backend {
            return None;
        }
        Self::cleanup(dir);
        let mnt = Self::mountpoint(server, dir);
        if std::fs::write(&mnt, b"").is_err() {
            return None;
        }
        let qmp = dir.join(format!("{}-fuse-qmp.sock", server.id()));
        let mut args = qsd::base_args(backend);
        let mut export = serde_json::json!({
            "type": "fuse", "id": "exp0", "node-name": qsd::NODE,
            "mountpoint": mnt, "writable": true, "iothread": qsd::IOTHREAD,
        });
        if server.is_ringstor() {
            export["io-uring"] = self.uring.into();
            if self.iothreads > 1 {
                let ids: Vec<String> = (0..self.iothreads).map(|i| format!("io{i}")).collect();
                for id in &ids[1..] {
                    args.push("--object".into());
                    args.push(format!("iothread,id={id}"));
                }
                export["iothread"] = ids.into();
            }
        }
        args.push("--export".into());
        args.push(export.to_string());
        args.push("--chardev".into());
        args.push(format!(
            "socket,id=mon,path={},server=on,wait=off",
            qsd::escape(&qmp.to_string_lossy())
        ));
        args.push("--monitor".into());
        args.push("chardev=mon".into());
        Some(LaunchSpec {
            args,
            // The monitor comes after the export on the command line, so
            // once it accepts, the file is mounted.
            ready_socket: qmp,
            ready_tcp: None,
            fio_args: vec![
                "--ioengine=io_uring".into(),
                "--direct=1".into(),
                format!("--filename={}", mnt.display()),
            ],
            fio_prefix: Vec::new(),
            env: match server {
                ServerKind::RingstorNoStats => vec![("RINGSTOR_STATS".into(), "off".into())],
                _ => Vec::new(),
            },
        })
    }
}

/// Runs each scenario of `plan` with the ringstor configuration it names,
/// FUSE over io_uring enabled for the run; returns rows and skip lines.
pub fn run_all(plan: &Plan, base: &Transports, dirs: &Dirs) -> (Vec<Row>, Vec<String>) {
    let _uring = UringParam::enable();
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for sc in &plan.scenarios {
        let Some(v) = VARIANTS.iter().find(|v| v.scenario_id() == sc.id) else {
            continue;
        };
        let one = Plan {
            scenarios: vec![sc.clone()],
            servers: plan.servers.clone(),
            timing: plan.timing,
            fio: plan.fio.clone(),
            pin_server: plan.pin_server.clone(),
            pin_fio: plan.pin_fio.clone(),
            ticks: plan.ticks,
        };
        let transports = Transports {
            unix: v,
            tcp: base.tcp,
            tls: base.tls,
        };
        let (r, s) = runner::run(&one, &transports, dirs);
        rows.extend(r);
        skipped.extend(s);
        Fuse::cleanup(&dirs.work);
    }
    (rows, skipped)
}

/// `enable_uring` on for the guard's life (FUSE over io_uring rows).
#[derive(Debug)]
pub struct UringParam {
    old: Option<String>,
}

impl UringParam {
    /// Turns it on; a note when this kernel has none (the io_uring rows
    /// then measure the `/dev/fuse` fallback, which ringstor logs).
    pub fn enable() -> UringParam {
        let old = std::fs::read_to_string(ENABLE_URING).ok();
        match &old {
            Some(_) => {
                if let Err(e) = std::fs::write(ENABLE_URING, "Y") {
                    println!("NOTE: cannot enable FUSE over io_uring ({ENABLE_URING}: {e})");
                }
            }
            None => println!("NOTE: no {ENABLE_URING}: FUSE over io_uring unavailable"),
        }
        UringParam { old }
    }
}

impl Drop for UringParam {
    fn drop(&mut self) {
        if let Some(old) = &self.old {
            let _ = std::fs::write(ENABLE_URING, old.trim());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Backend {
        Backend::File {
            path: "/t/img".into(),
            cache: CacheMode::PageCache,
        }
    }

    #[test]
    fn ringstor_variants_and_qsd_share_the_command_line() {
        let d = std::env::temp_dir().join(format!("fuse-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let q = VARIANTS[1].launch(ServerKind::Qsd, &file(), &d).unwrap();
        let r = VARIANTS[1]
            .launch(ServerKind::Ringstor, &file(), &d)
            .unwrap();
        let qe = &q.args[q.args.iter().position(|a| a == "--export").unwrap() + 1];
        let re = &r.args[r.args.iter().position(|a| a == "--export").unwrap() + 1];
        assert!(
            !qe.contains("io-uring") && qe.contains("\"iothread\":\"io0\""),
            "{qe}"
        );
        assert!(
            re.contains("\"io-uring\":true") && re.contains("[\"io0\",\"io1\"]"),
            "{re}"
        );
        assert!(r.args.contains(&"iothread,id=io1".to_string()));
        assert!(q.fio_args.contains(&"--direct=1".to_string()));
        assert!(VARIANTS[0]
            .launch(ServerKind::Nbdkit, &file(), &d)
            .is_none());
        let ids: Vec<&str> = VARIANTS.iter().map(|v| v.scenario_id()).collect();
        assert_eq!(
            ids,
            [
                "fuse-uring-1io",
                "fuse-uring-2io",
                "fuse-dev-1io",
                "fuse-dev-2io"
            ]
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
