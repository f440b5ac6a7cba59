//! Starting and stopping the daemon under test (ringstor, or QSD itself).
//!
//! Every daemon gets its own temporary directory holding its QMP socket,
//! its captured stderr and whatever images/sockets the test puts there.
//! Argument strings may contain `{dir}`, replaced by that directory's path.

use crate::qmp::Qmp;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a daemon may take to create its monitor socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The QSD binary used for comparison tests.
pub const QSD_BIN: &str = "/usr/bin/qemu-storage-daemon";

/// The binary under test: `RINGSTOR_BIN`, else the workspace's release or
/// debug `ringstor`.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("RINGSTOR_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let release = root.join("target/release/ringstor");
    if release.exists() {
        return release;
    }
    root.join("target/debug/ringstor")
}

/// True when the binary under test is QEMU's qemu-storage-daemon itself.
pub fn is_qsd() -> bool {
    binary()
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("qemu-storage-daemon"))
}

/// Print a skip note; returns true when a ringstor-only test must be skipped.
pub fn skip_on_qsd(what: &str) -> bool {
    if is_qsd() {
        eprintln!("SKIP (ringstor-only extension, binary is QSD): {what}");
        return true;
    }
    false
}

/// Print a skip note; returns true when a comparison-with-QSD test must be skipped.
pub fn skip_unless_comparing(what: &str) -> bool {
    if is_qsd() {
        eprintln!("SKIP (comparison with QSD; binary under test is QSD): {what}");
        return true;
    }
    if !Path::new(QSD_BIN).exists() {
        eprintln!("SKIP ({QSD_BIN} not installed): {what}");
        return true;
    }
    false
}

/// A fresh temporary directory for one test.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("rs-e2e.")
        .tempdir()
        .expect("create temp dir")
}

/// Replace `{dir}` in each argument.
pub fn expand(dir: &Path, args: &[&str]) -> Vec<String> {
    let d = dir.to_string_lossy();
    args.iter().map(|a| a.replace("{dir}", &d)).collect()
}

/// How a daemon that exited early ended.
#[derive(Debug)]
pub struct EarlyExit {
    pub status: ExitStatus,
    pub stderr: String,
}

/// A running daemon; killed (SIGTERM, then SIGKILL) on drop.
pub struct Daemon {
    child: Option<Child>,
    /// Pid of a daemonized process, killed on drop too.
    daemon_pid: Option<i32>,
    stderr_path: PathBuf,
    qmp_path: PathBuf,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Start `bin` in `dir` with `args` (`{dir}` expanded) plus a QMP monitor on
    /// `{dir}/qmp.sock`; wait for the socket. `Err` if the process exits first.
    pub fn try_start_bin(
        bin: &Path,
        dir: tempfile::TempDir,
        args: &[&str],
    ) -> Result<Daemon, EarlyExit> {
        Daemon::try_start_bin_with(bin, dir, args, |_| {})
    }

    /// Like [`Daemon::try_start_bin`], with `prepare` adjusting the command
    /// first (environment, inherited descriptors).
    pub fn try_start_bin_with(
        bin: &Path,
        dir: tempfile::TempDir,
        args: &[&str],
        prepare: impl FnOnce(&mut Command),
    ) -> Result<Daemon, EarlyExit> {
        let qmp_path = dir.path().join("qmp.sock");
        let mut full = expand(dir.path(), args);
        full.push("--chardev".into());
        full.push(format!(
            "socket,id=mon,path={},server=on,wait=off",
            qmp_path.display()
        ));
        full.push("--monitor".into());
        full.push("chardev=mon".into());
        Daemon::spawn_with(bin, dir, full, qmp_path, prepare)
    }

    /// Like [`Daemon::try_start_bin`] with exactly `args`: no monitor is added;
    /// `wait_for` is the socket whose appearance means "started".
    pub fn spawn(
        bin: &Path,
        dir: tempfile::TempDir,
        args: Vec<String>,
        wait_for: PathBuf,
    ) -> Result<Daemon, EarlyExit> {
        Daemon::spawn_with(bin, dir, args, wait_for, |_| {})
    }

    /// Like [`Daemon::spawn`], with `prepare` adjusting the command first
    /// (inherited descriptors, environment).
    pub fn spawn_with(
        bin: &Path,
        dir: tempfile::TempDir,
        args: Vec<String>,
        wait_for: PathBuf,
        prepare: impl FnOnce(&mut Command),
    ) -> Result<Daemon, EarlyExit> {
        let stderr_path = dir.path().join("stderr.log");
        let stderr = fs::File::create(&stderr_path).expect("create stderr log");
        let mut cmd = Command::new(bin);
        cmd.args(&args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        prepare(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} {args:?}: {e}", bin.display()));
        let mut d = Daemon {
            child: Some(child),
            daemon_pid: None,
            stderr_path,
            qmp_path: wait_for,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if d.qmp_path.exists() {
                return Ok(d);
            }
            if let Some(status) = d.try_wait() {
                return Err(EarlyExit {
                    status,
                    stderr: d.stderr(),
                });
            }
            assert!(
                Instant::now() < deadline,
                "{} did not create {} within {START_TIMEOUT:?}; stderr:\n{}",
                bin.display(),
                d.qmp_path.display(),
                d.stderr()
            );
            sleep(Duration::from_millis(20));
        }
    }

    /// Start the binary under test; panic with its stderr if it exits early.
    pub fn start(dir: tempfile::TempDir, args: &[&str]) -> Daemon {
        Daemon::start_bin(&binary(), dir, args)
    }

    /// Start a given binary; panic with its stderr if it exits early.
    pub fn start_bin(bin: &Path, dir: tempfile::TempDir, args: &[&str]) -> Daemon {
        Daemon::try_start_bin(bin, dir, args).unwrap_or_else(|e| {
            panic!(
                "{} {args:?} exited early with {}; stderr:\n{}",
                bin.display(),
                e.status,
                e.stderr
            )
        })
    }

    /// Start the binary under test expecting it to fail.
    pub fn try_start(dir: tempfile::TempDir, args: &[&str]) -> Result<Daemon, EarlyExit> {
        Daemon::try_start_bin(&binary(), dir, args)
    }

    /// The test's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The QMP socket path.
    pub fn qmp_path(&self) -> &Path {
        &self.qmp_path
    }

    /// A new QMP connection with capabilities negotiated.
    pub fn qmp(&self) -> Qmp {
        Qmp::connect(&self.qmp_path)
    }

    /// The pid of the daemon process.
    pub fn pid(&self) -> u32 {
        match (&self.child, self.daemon_pid) {
            (_, Some(p)) => p as u32,
            (Some(c), None) => c.id(),
            (None, None) => panic!("daemon has no process"),
        }
    }

    /// Sends `sig` to the daemon (a daemon that already exited is no error).
    pub fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.pid() as i32), sig);
    }

    /// Remember a daemonized pid so that drop kills it.
    pub fn adopt_daemon_pid(&mut self, pid: i32) {
        self.daemon_pid = Some(pid);
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Exit status if the started process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("wait for daemon"))
    }

    /// Wait up to `timeout` for the started process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            sleep(Duration::from_millis(20));
        }
        None
    }
}

fn kill_pid(pid: i32, alive: impl Fn() -> bool) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while alive() && Instant::now() < deadline {
        sleep(Duration::from_millis(10));
    }
    if alive() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon_pid {
            let proc_dir = PathBuf::from(format!("/proc/{pid}"));
            kill_pid(pid, || {
                fs::read_to_string(proc_dir.join("stat"))
                    .map(|s| !s.contains(") Z "))
                    .unwrap_or(false)
            });
        }
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                let pid = child.id() as i32;
                let proc_dir = PathBuf::from(format!("/proc/{pid}"));
                kill_pid(pid, || {
                    fs::read_to_string(proc_dir.join("stat"))
                        .map(|s| !s.contains(") Z "))
                        .unwrap_or(false)
                });
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- daemon stderr ({}) ---\n{}",
                self.stderr_path.display(),
                self.stderr()
            );
        }
    }
}
