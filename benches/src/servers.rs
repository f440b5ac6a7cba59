//! The servers under test: where their binaries are, their versions, and a
//! running server as a guard that is killed (and reaped) when dropped, so
//! no server outlives the harness even when a job fails.

use crate::error::{Context, Error, Result};
use crate::transport::LaunchSpec;
use serde::Serialize;
use std::fs::File;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The servers compared. ringstor takes QSD's command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerKind {
    /// This project.
    Ringstor,
    /// `qemu-storage-daemon`.
    Qsd,
    /// `nbdkit` (`file`, `null` plugins).
    Nbdkit,
    /// `qemu-nbd`.
    QemuNbd,
    /// ringstor with statistics recording off (`RINGSTOR_STATS=off`): its
    /// rows against ringstor's measure what recording costs. Only on
    /// request (`--servers ringstor,ringstor-nostats`).
    RingstorNoStats,
}

impl ServerKind {
    /// Every server, ringstor first.
    pub const ALL: [ServerKind; 4] = [
        ServerKind::Ringstor,
        ServerKind::Qsd,
        ServerKind::Nbdkit,
        ServerKind::QemuNbd,
    ];

    /// Short name used in tables, file names and `--servers`.
    pub fn id(self) -> &'static str {
        match self {
            ServerKind::Ringstor => "ringstor",
            ServerKind::Qsd => "qsd",
            ServerKind::Nbdkit => "nbdkit",
            ServerKind::QemuNbd => "qemu-nbd",
            ServerKind::RingstorNoStats => "ringstor-nostats",
        }
    }

    /// Parse a `--servers` entry.
    pub fn from_id(id: &str) -> Option<ServerKind> {
        Self::ALL
            .into_iter()
            .chain([ServerKind::RingstorNoStats])
            .find(|k| k.id() == id)
    }

    /// ringstor, with or without recording: never a server compared with.
    pub fn is_ringstor(self) -> bool {
        matches!(self, ServerKind::Ringstor | ServerKind::RingstorNoStats)
    }

    fn program(self) -> &'static str {
        match self {
            ServerKind::Ringstor => "ringstor",
            ServerKind::Qsd => "qemu-storage-daemon",
            ServerKind::Nbdkit => "nbdkit",
            ServerKind::QemuNbd => "qemu-nbd",
            ServerKind::RingstorNoStats => "ringstor",
        }
    }
}

/// Find `name` on `$PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Where the binary of `kind` should be. ringstor: `ringstor_bin`
/// (`--ringstor-bin`), else `$RINGSTOR_BIN`, else `target/release/ringstor`
/// of this workspace; the others from `$PATH`.
pub fn expected_binary(kind: ServerKind, ringstor_bin: Option<&Path>) -> PathBuf {
    match kind {
        ServerKind::Ringstor | ServerKind::RingstorNoStats => ringstor_bin
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("RINGSTOR_BIN").map(PathBuf::from))
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/ringstor")
            }),
        _ => which(kind.program()).unwrap_or_else(|| PathBuf::from(kind.program())),
    }
}

/// First line of `bin --version`, or a note why there is none.
pub fn version(bin: &Path) -> String {
    match Command::new(bin).arg("--version").output() {
        Ok(o) => {
            let out = String::from_utf8_lossy(&o.stdout);
            let err = String::from_utf8_lossy(&o.stderr);
            let line = out
                .lines()
                .chain(err.lines())
                .find(|l| !l.trim().is_empty());
            match (o.status.success(), line) {
                (true, Some(l)) => l.trim().to_string(),
                _ => "unknown (--version failed)".to_string(),
            }
        }
        Err(e) => format!("unknown ({e})"),
    }
}

/// A started server; killed and reaped on drop.
#[derive(Debug)]
pub struct RunningServer {
    child: Child,
    log: PathBuf,
    name: String,
}

/// How long a server may take to accept connections on its socket.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

impl RunningServer {
    /// Start `bin` with the spec's arguments (under `taskset -c pin` when
    /// given), stdout/stderr to `log`, and wait until its socket accepts.
    pub fn start(
        name: &str,
        bin: &Path,
        spec: &LaunchSpec,
        pin: Option<&str>,
        log: &Path,
    ) -> Result<RunningServer> {
        // A server killed earlier may have left its socket behind (nbdkit
        // does not unlink on SIGKILL), which would make bind fail.
        let _ = std::fs::remove_file(&spec.ready_socket);
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = match pin {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", bin.display()))?;
        let mut server = RunningServer {
            child,
            log: log.to_path_buf(),
            name: name.to_string(),
        };
        server.wait_ready(spec)?;
        Ok(server)
    }

    fn wait_ready(&mut self, spec: &LaunchSpec) -> Result<()> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            let up = match spec.ready_tcp {
                Some(port) => TcpStream::connect(("127.0.0.1", port)).is_ok(),
                None => UnixStream::connect(&spec.ready_socket).is_ok(),
            };
            if up {
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                let what = match spec.ready_tcp {
                    Some(port) => format!("127.0.0.1:{port}"),
                    None => spec.ready_socket.display().to_string(),
                };
                return Err(Error::msg(format!(
                    "{}: socket {what} not accepting after {:?}; log: {}",
                    self.name,
                    READY_TIMEOUT,
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's pid (for CPU sampling).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Error (with the log tail) if the server has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(Error::msg(format!(
                "{} exited ({status}); log: {}",
                self.name,
                self.log_tail()
            ))),
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        if tail.is_empty() {
            "(empty)".to_string()
        } else {
            tail
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // SIGKILL: nothing to flush that matters (the image is scratch).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for k in ServerKind::ALL {
            assert_eq!(ServerKind::from_id(k.id()), Some(k));
        }
        assert_eq!(ServerKind::from_id("nope"), None);
    }

    #[test]
    fn explicit_ringstor_binary_wins() {
        let p = expected_binary(ServerKind::Ringstor, Some(Path::new("/x/ringstor")));
        assert_eq!(p, PathBuf::from("/x/ringstor"));
    }
}
