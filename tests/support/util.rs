//! Images, checksums, external tools and common daemon setups.

use crate::daemon::{scratch, Daemon};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Default timeout for an external tool.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Interpreter that can `import nbd` (pyenv's python3 on PATH cannot).
pub const PYTHON: &str = "/usr/bin/python3";

/// Arms `cmd` so that its child gets SIGKILL when the spawning thread
/// exits (`PR_SET_PDEATHSIG`): a test that fails leaves no server behind.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Waits up to 5 s for `cond`, polling every 20 ms; panics naming `what`.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        sleep(Duration::from_millis(20));
    }
}

/// Waits up to 10 s for a daemon's listening socket (or any path) to
/// appear; panics naming it.
pub fn wait_for_socket(p: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        sleep(Duration::from_millis(10));
    }
}

/// The `query-iothreads` entry of iothread `id` (ringstor's; QSD has no
/// `query-iothreads`).
pub fn query_iothread(q: &mut crate::qmp::Qmp, id: &str) -> serde_json::Value {
    let threads = q.ok("query-iothreads", serde_json::json!({}));
    threads
        .as_array()
        .expect("query-iothreads returns an array")
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("{id} missing: {threads}"))
        .clone()
}

/// The `Cpus_allowed_list` of thread `tid` of process `pid`, e.g. `0-1`.
pub fn thread_cpus_allowed(pid: u32, tid: u64) -> String {
    let status =
        fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).expect("read thread status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list line")
        .trim()
        .to_string()
}

/// Create a sparse file of `size` bytes.
pub fn make_sparse(path: &Path, size: u64) {
    let f = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.set_len(size).expect("set image length");
}

/// Deterministic pseudo-random bytes (xorshift64) for `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Create a file of `size` bytes filled with [`pattern`] data.
pub fn make_filled(path: &Path, size: u64, seed: u64) {
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(&pattern(size as usize, seed))
        .expect("write image pattern");
}

/// Write `data` at `offset` into an existing file.
pub fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all_at(data, offset).expect("write_at");
}

/// Read `len` bytes at `offset` of a file.
pub fn read_region(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.seek(SeekFrom::Start(offset)).expect("seek");
    let mut buf = vec![0; len];
    f.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("read {len} at {offset} of {}: {e}", path.display()));
    buf
}

/// sha256 (hex) of a byte slice, via coreutils' `sha256sum`.
pub fn sha256(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    let mut stdin = child.stdin.take().expect("sha256sum stdin");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("sha256sum output");
    writer
        .join()
        .expect("sha256sum writer thread")
        .expect("feed sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// sha256 of a file region.
pub fn region_sha256(path: &Path, offset: u64, len: usize) -> String {
    sha256(&read_region(path, offset, len))
}

/// sha256 of a whole file.
pub fn file_sha256(path: &Path) -> String {
    sha256(&fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

/// The NBD URI of export `name` on unix socket `sock`.
pub fn nbd_uri(name: &str, sock: &Path) -> String {
    format!("nbd+unix:///{name}?socket={}", sock.display())
}

/// The result of an external command.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// Fail the test unless the command exited 0.
    pub fn success(self, what: &str) -> Ran {
        assert!(
            self.status.success(),
            "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Run `prog args` with a timeout; panics clearly if the tool is missing.
pub fn run(prog: &str, args: &[&str], timeout: Duration) -> Ran {
    let dir = scratch();
    let out_path = dir.path().join("out");
    let err_path = dir.path().join("err");
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("stdout file"))
        .stderr(fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                panic!("tool `{prog}` is not installed; run tests/run, which installs it")
            }
            panic!("spawn {prog}: {e}")
        });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for tool") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{prog} {args:?}` timed out after {timeout:?}; stderr:\n{}",
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        sleep(Duration::from_millis(10));
    };
    Ran {
        status,
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// Run a Python script with Debian's python3 (which has the `nbd` module).
/// `argv` is available as `sys.argv[1:]`.
pub fn run_python(script: &str, argv: &[&str]) -> Ran {
    let mut args = vec!["-c", script];
    args.extend_from_slice(argv);
    run(PYTHON, &args, TOOL_TIMEOUT)
}

/// A daemon serving a fresh image file as node `disk0`.
pub struct DiskDaemon {
    pub d: Daemon,
    pub img: PathBuf,
}

impl DiskDaemon {
    /// The NBD socket path used by the setups here (`{dir}/nbd.sock`).
    pub fn nbd_sock(&self) -> PathBuf {
        self.d.path("nbd.sock")
    }

    /// URI of the export named `name`.
    pub fn uri(&self, name: &str) -> String {
        nbd_uri(name, &self.nbd_sock())
    }
}

/// How to fill the image of a [`DiskDaemon`].
#[derive(Clone, Copy, Debug)]
pub enum Fill {
    Sparse,
    Pattern(u64),
}

/// Start the binary under test with `disk0` on `{dir}/disk.img` of `size`
/// bytes, an iothread `io0` and `extra` args.
pub fn disk_daemon(size: u64, fill: Fill, extra: &[&str]) -> DiskDaemon {
    let dir = scratch();
    let img = dir.path().join("disk.img");
    match fill {
        Fill::Sparse => make_sparse(&img, size),
        Fill::Pattern(seed) => make_filled(&img, size, seed),
    }
    let mut args = vec![
        "--object",
        "iothread,id=io0",
        "--blockdev",
        "driver=file,node-name=disk0,filename={dir}/disk.img",
    ];
    args.extend_from_slice(extra);
    DiskDaemon {
        d: Daemon::start(dir, &args),
        img,
    }
}

/// Command-line args for an NBD server on `{dir}/nbd.sock` exporting `disk0`
/// as writable export `disk0` (id `e0`), plus `opts` appended to --export.
pub fn cli_export_args(opts: &str) -> Vec<String> {
    let mut export = "type=nbd,id=e0,node-name=disk0,name=disk0,writable=on".to_string();
    if !opts.is_empty() {
        export.push(',');
        export.push_str(opts);
    }
    vec![
        "--nbd-server".into(),
        "addr.type=unix,addr.path={dir}/nbd.sock".into(),
        "--export".into(),
        export,
    ]
}

/// A writable NBD export of `disk0` named `disk0`, set up on the command line.
pub fn cli_export(size: u64, fill: Fill, opts: &str) -> DiskDaemon {
    let args = cli_export_args(opts);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    disk_daemon(size, fill, &refs)
}

/// The same export set up over QMP (`nbd-server-start` + `block-export-add`).
pub fn qmp_export(size: u64, fill: Fill, extra: serde_json::Value) -> DiskDaemon {
    let dd = disk_daemon(size, fill, &[]);
    let mut q = dd.d.qmp();
    let sock = dd.nbd_sock();
    q.ok(
        "nbd-server-start",
        serde_json::json!({"addr": {"type": "unix", "data": {"path": sock}}}),
    );
    let mut args = serde_json::json!({
        "type": "nbd", "id": "e0", "node-name": "disk0", "name": "disk0", "writable": true
    });
    if let (Some(a), Some(e)) = (args.as_object_mut(), extra.as_object()) {
        a.extend(e.clone());
    }
    q.ok("block-export-add", args);
    dd
}

/// Run `conversation` (full QMP command objects) on the binary under test and
/// on QSD, each started with `args` (`{dir}` holds a 1 MiB `disk.img`), and
/// compare: same success/failure, same error class, QSD's reply keys present
/// in ours. Differing desc strings are printed as notes.
pub fn compare_with_qsd(args: &[&str], conversation: &[serde_json::Value]) {
    use crate::qmp::{shape, shape_covers};
    let run_on = |bin: &Path| -> Vec<serde_json::Value> {
        let dir = scratch();
        make_sparse(&dir.path().join("disk.img"), 1 << 20);
        let d = Daemon::start_bin(bin, dir, args);
        let mut q = d.qmp();
        conversation.iter().map(|m| q.send(m)).collect()
    };
    let ours = run_on(&crate::binary());
    let qsd = run_on(Path::new(crate::daemon::QSD_BIN));
    for ((m, o), r) in conversation.iter().zip(&ours).zip(&qsd) {
        match (o.get("return"), r.get("return")) {
            (Some(o), Some(r)) => assert!(
                shape_covers(&shape(o), &shape(r)),
                "{m}: reply shape differs from QSD\nours: {o}\nqsd:  {r}"
            ),
            (None, None) => {
                assert_eq!(o["error"]["class"], r["error"]["class"], "{m}: error class");
                if o["error"]["desc"] != r["error"]["desc"] {
                    eprintln!(
                        "NOTE {m}: desc {} vs QSD {}",
                        o["error"]["desc"], r["error"]["desc"]
                    );
                }
            }
            _ => panic!("{m}: ours {o} but QSD {r}"),
        }
    }
}

/// Number of open file descriptors of process `pid`.
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("list /proc/{pid}/fd: {e}"))
        .count()
}

/// Resident set size of process `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// True while process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// Small deterministic PRNG (xorshift64*) for reproducible random tests.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
