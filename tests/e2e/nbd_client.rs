//! `driver=nbd` (the NBD client node) chained behind ringstor's NBD export,
//! against nbdkit and QSD as the remote: what the chained export reads and
//! writes is the source, block status (`base:allocation`,
//! `qemu:allocation-depth`) passes through, and a remote that goes away
//! is reconnected within `reconnect-delay` with the requests retried;
//! past it requests fail with EIO (never hang) and the exporting
//! connection stays up. `x-dirty-bitmap` reads a remote bitmap as
//! allocation, as QSD's node does. (TLS: `nbd_client_tls.rs`.)

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ringstor_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// nbdkit's `file` plugin on `img`, listening on `sock`, in the foreground.
struct Nbdkit {
    child: Child,
}

impl Nbdkit {
    fn start(img: &Path, sock: &Path) -> Nbdkit {
        let _ = std::fs::remove_file(sock);
        let mut cmd = Command::new("nbdkit");
        cmd.args(["-f", "-U"])
            .arg(sock)
            .arg("file")
            .arg(img)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .expect("nbdkit (run tests/run, which installs it)");
        wait_for(sock);
        Nbdkit { child }
    }
}

impl Drop for Nbdkit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(p: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.exists() {
        assert!(Instant::now() < deadline, "{} did not appear", p.display());
        sleep(Duration::from_millis(10));
    }
}

/// A source image: data at 0..1M and 4M..5M, holes elsewhere.
fn source(dir: &Path, size: u64) -> PathBuf {
    let img = dir.join("src.raw");
    make_sparse(&img, size);
    write_at(&img, 0, &pattern(MIB as usize, 3));
    write_at(&img, 4 * MIB, &pattern(MIB as usize, 4));
    img
}

/// `bin` with an nbd node `n` on `remote_sock`/`export`, exported as `n`.
fn chained(bin: &Path, remote_sock: &Path, export: &str, opts: &str, export_opts: &str) -> Daemon {
    let node = format!(
        "driver=nbd,node-name=n,server.type=unix,server.path={},export={export}{opts}",
        remote_sock.display()
    );
    let exp = format!("type=nbd,id=e0,node-name=n,name=n{export_opts}");
    Daemon::start_bin(
        bin,
        scratch(),
        &[
            "--blockdev",
            &node,
            "--nbd-server",
            "addr.type=unix,addr.path={dir}/nbd.sock",
            "--export",
            &exp,
        ],
    )
}

fn map(uri: &str, ctx: &str) -> String {
    run("nbdinfo", &[&format!("--map={ctx}"), uri], TOOL_TIMEOUT)
        .success("nbdinfo --map")
        .stdout
}

fn qsd_export(img: &Path) -> Daemon {
    let node = format!("driver=file,node-name=f,filename={}", img.display());
    Daemon::start_bin(
        Path::new(daemon::QSD_BIN),
        scratch(),
        &[
            "--blockdev",
            &node,
            "--nbd-server",
            "addr.type=unix,addr.path={dir}/nbd.sock",
            "--export",
            "type=nbd,id=e0,node-name=f,name=src,writable=on",
        ],
    )
}

#[test]
fn nbd_client_chained_export_equals_the_source() {
    if skip_on_qsd("ringstor's nbd node behind ringstor's export") {
        return;
    }
    let dir = scratch();
    let img = source(dir.path(), 8 * MIB);
    let kit_sock = dir.path().join("kit.sock");
    let _kit = Nbdkit::start(&img, &kit_sock);
    let qsd = (!skip_unless_comparing("QSD as the remote")).then(|| qsd_export(&img));
    let mut remotes = vec![("nbdkit", kit_sock.clone(), "")];
    if let Some(q) = &qsd {
        remotes.push(("qsd", q.path("nbd.sock"), "src"));
    }
    for (i, (who, sock, export)) in remotes.iter().enumerate() {
        let d = chained(&binary(), sock, export, "", ",writable=on");
        let u = nbd_uri("n", &d.path("nbd.sock"));
        let direct = nbd_uri(export, sock);
        // Reads: the chained export is the source.
        let copy = d.path("copy.raw");
        run("nbdcopy", &[&u, copy.to_str().expect("path")], TOOL_TIMEOUT).success("nbdcopy");
        assert_eq!(file_sha256(&copy), file_sha256(&img), "{who}: read");
        // Writes land in the source file.
        let off = 2 * MIB + i as u64 * MIB;
        run(
            "qemu-io",
            &[
                "-f",
                "raw",
                "-c",
                &format!("write -P 0x{:02x} {off} 64k", 0x40 + i),
                "-c",
                "flush",
                &u,
            ],
            TOOL_TIMEOUT,
        )
        .success("qemu-io write");
        assert!(
            read_region(&img, off, 65536)
                .iter()
                .all(|&b| b == 0x40 + i as u8),
            "{who}: write"
        );
        // Block status passes through.
        assert_eq!(
            map(&u, "base:allocation"),
            map(&direct, "base:allocation"),
            "{who}: map"
        );
        // qemu-img sees the same image through both.
        run(
            "qemu-img",
            &["compare", "-f", "raw", "-F", "raw", &u, &direct],
            TOOL_TIMEOUT,
        )
        .success("qemu-img compare");
    }
}

#[test]
fn nbd_client_passes_allocation_depth_of_a_backing_chain_through() {
    if skip_on_qsd("ringstor's nbd node") || skip_unless_comparing("QSD serves the qcow2 chain") {
        return;
    }
    let dir = scratch();
    let base = dir.path().join("base.raw");
    make_sparse(&base, 8 * MIB);
    write_at(&base, 0, &pattern(2 * MIB as usize, 5));
    let top = dir.path().join("top.qcow2");
    let (b, t) = (base.to_str().expect("path"), top.to_str().expect("path"));
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "-b", b, "-F", "raw", t],
        TOOL_TIMEOUT,
    )
    .success("qemu-img create");
    run(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 7 1M 2M",
            "-c",
            "write -z 6M 1M",
            t,
        ],
        TOOL_TIMEOUT,
    )
    .success("qemu-io on the overlay");
    let args = [
        format!("driver=file,node-name=bf,filename={b}"),
        "driver=raw,node-name=base,file=bf".to_string(),
        format!("driver=file,node-name=tf,filename={t}"),
        "driver=qcow2,node-name=top,file=tf,backing=base".to_string(),
    ];
    let mut full = Vec::new();
    for a in &args {
        full.push("--blockdev");
        full.push(a.as_str());
    }
    full.extend([
        "--nbd-server",
        "addr.type=unix,addr.path={dir}/nbd.sock",
        "--export",
        "type=nbd,id=e0,node-name=top,name=top,allocation-depth=on",
    ]);
    let q = Daemon::start_bin(Path::new(daemon::QSD_BIN), scratch(), &full);
    let remote = q.path("nbd.sock");
    // QSD's export is read-only, so the node must be (as with QSD's own nbd node).
    let d = chained(
        &binary(),
        &remote,
        "top",
        ",read-only=on",
        ",allocation-depth=on",
    );
    let ours = nbd_uri("n", &d.path("nbd.sock"));
    let theirs = nbd_uri("top", &remote);
    let depth = map(&theirs, "qemu:allocation-depth");
    assert!(
        depth.contains("backing depth 2"),
        "the chain has depth: {depth}"
    );
    assert_eq!(map(&ours, "qemu:allocation-depth"), depth);
    assert_eq!(
        map(&ours, "base:allocation"),
        map(&theirs, "base:allocation")
    );
}

/// Submits 32 writes of 1 MiB on one connection, kills the remote while
/// they are in flight, restarts it after `restart_after` seconds (`sys.argv`
/// carries the commands), then waits for every write; reads back.
const RECONNECT_PY: &str = r#"
import json, os, subprocess, sys, time, nbd
uri, kit_pid, restart_after = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
restart = sys.argv[4:]
h = nbd.NBD()
h.connect_uri(uri)
bufs = [nbd.Buffer.from_bytearray(bytearray([i + 1]) * 1048576) for i in range(32)]
cookies = [h.aio_pwrite(bufs[i], i * 1048576) for i in range(32)]
os.kill(kit_pid, 9)
t0 = time.monotonic()
time.sleep(restart_after)
kit = subprocess.Popen(restart, stdin=subprocess.DEVNULL)
errors = []
while h.aio_in_flight() > 0:
    if time.monotonic() - t0 > 60:
        errors.append("hang")
        break
    h.poll(1000)
for c in cookies:
    try:
        h.aio_command_completed(c)
    except nbd.Error as e:
        errors.append(e.errnum)
took = time.monotonic() - t0
ok = all(h.pread(1048576, i * 1048576) == bytes([i + 1]) * 1048576 for i in range(32))
print(json.dumps({"errors": errors, "took": took, "readback": ok, "kit": kit.pid}))
"#;

#[test]
fn nbd_client_reconnects_within_reconnect_delay_and_retries() {
    if skip_on_qsd("ringstor's nbd node") {
        return;
    }
    let dir = scratch();
    let img = dir.path().join("remote.raw");
    make_sparse(&img, 64 * MIB);
    let sock = dir.path().join("kit.sock");
    let kit = Nbdkit::start(&img, &sock);
    let kit_pid = kit.child.id();
    let d = chained(&binary(), &sock, "", ",reconnect-delay=10", ",writable=on");
    let u = nbd_uri("n", &d.path("nbd.sock"));
    let restart = [
        "nbdkit".to_string(),
        "-f".into(),
        "-U".into(),
        sock.display().to_string(),
        "file".into(),
        img.display().to_string(),
    ];
    // nbdkit leaves its socket behind when killed: the restart needs it gone.
    let _ = std::fs::remove_file(&sock);
    let mut argv = vec![u.clone(), kit_pid.to_string(), "1.5".into()];
    argv.extend(restart);
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    // The script kills it; dropping `kit` at the end reaps the zombie.
    let r = run_python(RECONNECT_PY, &args);
    let v: Value = serde_json::from_str(r.success("reconnect script").stdout.trim()).expect("JSON");
    if let Some(pid) = v["kit"].as_i64() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    assert_eq!(v["errors"], serde_json::json!([]), "{v}\n{}", d.stderr());
    assert_eq!(v["readback"], true, "{v}");
    assert!(v["took"].as_f64().unwrap_or(99.0) < 10.0, "{v}");
    // And the data is in the remote's file.
    for i in [0u64, 17, 31] {
        assert!(read_region(&img, i * MIB, 4096)
            .iter()
            .all(|&b| b == i as u8 + 1));
    }
}

/// One connection: a read works; the remote goes; a read fails with EIO
/// after about `reconnect-delay`; the remote returns; reads work again on
/// the same connection.
const EIO_PY: &str = r#"
import errno, json, os, subprocess, sys, time, nbd
uri, kit_pid = sys.argv[1], int(sys.argv[2])
restart = sys.argv[3:]
h = nbd.NBD()
h.connect_uri(uri)
out = {"first": len(h.pread(4096, 0))}
os.kill(kit_pid, 9)
t0 = time.monotonic()
try:
    h.pread(4096, 0)
    out["gone"] = "ok"
except nbd.Error as e:
    out["gone"] = errno.errorcode.get(e.errnum, str(e.errnum))
out["failed_after"] = time.monotonic() - t0
kit = subprocess.Popen(restart, stdin=subprocess.DEVNULL)
out["kit"] = kit.pid
deadline = time.monotonic() + 15
out["back"] = None
while time.monotonic() < deadline:
    try:
        out["back"] = len(h.pread(4096, 0))
        break
    except nbd.Error as e:
        time.sleep(0.2)
print(json.dumps(out))
"#;

fn eio_after_delay(bin: &Path, who: &str) -> Value {
    let dir = scratch();
    let img = dir.path().join("remote.raw");
    make_sparse(&img, 8 * MIB);
    let sock = dir.path().join("kit.sock");
    let kit = Nbdkit::start(&img, &sock);
    let kit_pid = kit.child.id();
    let d = chained(bin, &sock, "", ",reconnect-delay=2", ",writable=on");
    let u = nbd_uri("n", &d.path("nbd.sock"));
    // The script kills it; dropping `kit` at the end reaps the zombie.
    let _ = std::fs::remove_file(&sock);
    let argv = [
        u.as_str(),
        &kit_pid.to_string(),
        "nbdkit",
        "-f",
        "-U",
        sock.to_str().expect("path"),
        "file",
        img.to_str().expect("path"),
    ];
    let r = run_python(EIO_PY, &argv);
    let v: Value = serde_json::from_str(r.success(who).stdout.trim()).expect("JSON");
    if let Some(pid) = v["kit"].as_i64() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    v
}

#[test]
fn nbd_client_fails_with_eio_past_reconnect_delay_and_the_export_stays_up() {
    if skip_on_qsd("ringstor's nbd node") {
        return;
    }
    let v = eio_after_delay(&binary(), "ringstor");
    assert_eq!(v["first"], 4096, "{v}");
    assert_eq!(v["gone"], "EIO", "{v}");
    let after = v["failed_after"].as_f64().unwrap_or(99.0);
    assert!((1.5..6.0).contains(&after), "EIO after {after} s: {v}");
    assert_eq!(
        v["back"], 4096,
        "the same client connection works again: {v}"
    );
    if !skip_unless_comparing("QSD's nbd node") {
        let q = eio_after_delay(Path::new(daemon::QSD_BIN), "qsd");
        assert_eq!(q["gone"], v["gone"], "QSD: {q}");
        assert_eq!(q["back"], v["back"], "QSD: {q}");
    }
}

/// `bin` with an nbd node reading `bitmap` of export `r` on `sock` through
/// `x-dirty-bitmap`, exported as `n`; nbdinfo's `base:allocation` map of it.
fn x_dirty_bitmap_map(bin: &Path, sock: &Path, bitmap: &str) -> String {
    let node = format!(
        "driver=nbd,node-name=n,server.type=unix,server.path={},export=r,\
         x-dirty-bitmap=qemu:dirty-bitmap:{bitmap},read-only=on",
        sock.display()
    );
    let d = Daemon::start_bin(
        bin,
        scratch(),
        &[
            "--blockdev",
            &node,
            "--nbd-server",
            "addr.type=unix,addr.path={dir}/nbd.sock",
            "--export",
            "type=nbd,id=e0,node-name=n,name=n",
        ],
    );
    map(&nbd_uri("n", &d.path("nbd.sock")), "base:allocation")
}

#[test]
fn nbd_client_x_dirty_bitmap_reads_a_bitmap_as_allocation() {
    let d = disk_daemon(
        4 * MIB,
        Fill::Sparse,
        &cli_export_args("")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let mut q = d.d.qmp();
    q.ok(
        "block-dirty-bitmap-add",
        serde_json::json!({"node": "disk0", "name": "b0"}),
    );
    run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 1 1M 64k",
            "-c",
            "write -P 2 3M 128k",
            &d.uri("disk0"),
        ],
        TOOL_TIMEOUT,
    )
    .success("qemu-io write");
    q.ok(
        "block-dirty-bitmap-disable",
        serde_json::json!({"node": "disk0", "name": "b0"}),
    );
    q.ok(
        "block-export-add",
        serde_json::json!({"type": "nbd", "id": "r", "node-name": "disk0", "name": "r", "bitmaps": ["b0"]}),
    );
    let sock = d.nbd_sock();
    let ours = x_dirty_bitmap_map(&binary(), &sock, "b0");
    // Dirty areas read as holes (QEMU's convention for this option).
    let holes: Vec<(u64, u64)> = ours
        .lines()
        .filter(|l| l.trim_end().ends_with("hole"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.parse().ok()?, f.get(1)?.parse().ok()?))
        })
        .collect();
    assert_eq!(holes, vec![(MIB, 65536), (3 * MIB, 131072)], "{ours}");
    if !skip_unless_comparing("QSD's nbd node with x-dirty-bitmap") {
        assert_eq!(
            x_dirty_bitmap_map(Path::new(daemon::QSD_BIN), &sock, "b0"),
            ours
        );
    }
    // A bitmap the server does not offer fails the open.
    let c = Daemon::start_bin(&binary(), scratch(), &[]);
    let e = c.qmp().err(
        "blockdev-add",
        serde_json::json!({"driver": "nbd", "node-name": "m", "read-only": true,
            "export": "r", "server": {"type": "unix", "path": sock},
            "x-dirty-bitmap": "qemu:dirty-bitmap:zz"}),
    );
    assert_eq!(e.class, "GenericError", "{e:?}");
}
