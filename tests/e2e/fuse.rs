//! FUSE exports with real kernel mounts: the file's attributes and data
//! (stat, cmp, dd buffered and O_DIRECT, fallocate, SEEK_DATA/SEEK_HOLE),
//! growable, read-only, allow-other against another user, removal and
//! unmount on every way the daemon can end, fio with verification on two
//! iothreads, and QSD's answers where they are errors. Both transports:
//! `/dev/fuse` (`io-uring=off`) and FUSE over io_uring, which needs
//! `/sys/module/fuse/parameters/enable_uring`: the tests that use it set it
//! under [`uring_enabled`] (one at a time) and restore it.

#[path = "fuse/lifecycle.rs"]
mod lifecycle;
#[path = "fuse/qsd.rs"]
mod qsd;

use ringstor_tests::*;
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// Serialises the tests that need `enable_uring`, and restores it.
pub struct UringGuard {
    old: String,
    _lock: MutexGuard<'static, ()>,
}

static URING_LOCK: Mutex<()> = Mutex::new(());

/// Turns FUSE over io_uring on for the guard's life; `None` (and a SKIP
/// note) when this kernel has no such parameter.
pub fn uring_enabled(what: &str) -> Option<UringGuard> {
    let lock = URING_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let Ok(old) = fs::read_to_string(ENABLE_URING) else {
        eprintln!("SKIP (no {ENABLE_URING}): {what}");
        return None;
    };
    fs::write(ENABLE_URING, "Y").expect("enable FUSE over io_uring");
    Some(UringGuard {
        old: old.trim().to_string(),
        _lock: lock,
    })
}

impl Drop for UringGuard {
    fn drop(&mut self) {
        let _ = fs::write(ENABLE_URING, &self.old);
    }
}

/// Which transport a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Dev,
    Uring,
}

impl Transport {
    pub fn opt(self) -> bool {
        self == Transport::Uring
    }
}

/// A daemon (info logging, so the transport shows) with `disk0` on
/// `{dir}/disk.img`, iothreads `io0` and `io1`, an empty `{dir}/mnt`, and
/// the scratch directory open to other users (for the allow-other test).
pub struct FuseDaemon {
    pub d: Daemon,
    pub img: PathBuf,
    pub mnt: PathBuf,
}

pub fn fuse_daemon(size: u64, fill: Fill, blockdev_extra: &str) -> FuseDaemon {
    let dir = scratch();
    let img = dir.path().join("disk.img");
    match fill {
        Fill::Sparse => make_sparse(&img, size),
        Fill::Pattern(seed) => make_filled(&img, size, seed),
    }
    let mnt = dir.path().join("mnt");
    fs::write(&mnt, b"").expect("create mountpoint");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod scratch");
    let qmp = dir.path().join("qmp.sock");
    let bin = binary();
    let args = vec![
        "RINGSTOR_LOG=info".to_string(),
        bin.to_string_lossy().into_owned(),
        "--object".into(),
        "iothread,id=io0".into(),
        "--object".into(),
        "iothread,id=io1".into(),
        "--blockdev".into(),
        format!(
            "driver=file,node-name=disk0,filename={}{blockdev_extra}",
            img.display()
        ),
        "--chardev".into(),
        format!("socket,id=mon,path={},server=on,wait=off", qmp.display()),
        "--monitor".into(),
        "chardev=mon".into(),
    ];
    let d = Daemon::spawn(Path::new("/usr/bin/env"), dir, args, qmp)
        .unwrap_or_else(|e| panic!("daemon exited early: {}\n{}", e.status, e.stderr));
    FuseDaemon { d, img, mnt }
}

impl FuseDaemon {
    /// `block-export-add` of a fuse export `e0` on `mnt` plus `extra` members.
    pub fn add(&self, q: &mut Qmp, t: Transport, extra: Value) {
        let mut args = json!({
            "type": "fuse", "id": "e0", "node-name": "disk0",
            "mountpoint": self.mnt, "io-uring": t.opt(),
        });
        if let (Some(a), Some(e)) = (args.as_object_mut(), extra.as_object()) {
            a.extend(e.clone());
        }
        q.ok("block-export-add", args);
        assert!(mounted(&self.mnt), "{} not mounted", self.mnt.display());
    }

    pub fn mnt_str(&self) -> String {
        self.mnt.to_string_lossy().into_owned()
    }
}

/// Whether a FUSE file system is mounted at `path`.
pub fn mounted(path: &Path) -> bool {
    let p = path.to_string_lossy();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&p) && l.contains(" - fuse "))
}

/// Waits up to `t` for `path` to be unmounted.
pub fn wait_unmounted(path: &Path, t: Duration) -> bool {
    let deadline = Instant::now() + t;
    while Instant::now() < deadline {
        if !mounted(path) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !mounted(path)
}

/// Requests served over io_uring, summed from the daemon's closing lines.
pub fn ring_requests(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter_map(|l| l.split(": ").nth(3))
        .filter_map(|l| l.strip_suffix(" over /dev/fuse on this iothread"))
        .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Runs a Python snippet (`sys.argv[1]` is the mountpoint) and returns stdout.
pub fn py(script: &str, mnt: &str) -> String {
    run("python3", &["-c", script, mnt], TOOL_TIMEOUT)
        .success("python3")
        .stdout
}

fn dd(args: &[&str]) -> Ran {
    run("dd", args, TOOL_TIMEOUT)
}

/// Attributes, data and every file operation on one transport.
fn file_io(t: Transport) {
    let size = 16 * MIB;
    let fd = fuse_daemon(size, Fill::Pattern(3), "");
    let mut q = fd.d.qmp();
    fd.add(&mut q, t, json!({"writable": true}));
    let m = fs::metadata(&fd.mnt).expect("stat the mountpoint");
    assert_eq!(m.len(), size);
    assert_eq!(m.mode(), 0o100600, "mode");
    assert_eq!((m.uid(), m.gid()), (0, 0), "owner");
    assert_eq!(m.nlink(), 1);
    run(
        "cmp",
        &[&fd.img.to_string_lossy(), &fd.mnt_str()],
        TOOL_TIMEOUT,
    )
    .success("cmp");

    // Buffered and O_DIRECT writes land in the image.
    let src = fd.d.path("src");
    fs::write(&src, pattern(256 << 10, 9)).expect("write source");
    let of = format!("of={}", fd.mnt_str());
    let iff = format!("if={}", src.display());
    dd(&[
        &iff,
        &of,
        "bs=64k",
        "seek=16",
        "conv=notrunc,fsync",
        "status=none",
    ])
    .success("dd buffered");
    dd(&[
        &iff,
        &of,
        "bs=64k",
        "seek=64",
        "oflag=direct",
        "conv=notrunc",
        "status=none",
    ])
    .success("dd O_DIRECT");
    let want = pattern(256 << 10, 9);
    assert!(
        read_region(&fd.img, MIB, 256 << 10) == want,
        "buffered dd data"
    );
    assert!(
        read_region(&fd.img, 4 * MIB, 256 << 10) == want,
        "O_DIRECT dd data"
    );
    // And read back through the mount with O_DIRECT.
    let back = fd.d.path("back");
    dd(&[
        &format!("if={}", fd.mnt_str()),
        &format!("of={}", back.display()),
        "bs=64k",
        "skip=64",
        "count=4",
        "iflag=direct",
        "status=none",
    ])
    .success("dd read back");
    assert!(
        fs::read(&back).expect("read back") == want,
        "O_DIRECT read back"
    );

    // fallocate: punch hole and zero range, seen on the image.
    let mnt = fd.mnt_str();
    run(
        "fallocate",
        &["--punch-hole", "-o", "8M", "-l", "1M", &mnt],
        TOOL_TIMEOUT,
    )
    .success("punch");
    run(
        "fallocate",
        &["--zero-range", "-o", "10M", "-l", "64k", &mnt],
        TOOL_TIMEOUT,
    )
    .success("zero");
    assert!(
        read_region(&fd.img, 8 * MIB, MIB as usize)
            .iter()
            .all(|&b| b == 0),
        "punched range"
    );
    assert!(
        read_region(&fd.img, 10 * MIB, 64 << 10)
            .iter()
            .all(|&b| b == 0),
        "zeroed range"
    );
    assert!(
        read_region(&fd.img, 10 * MIB + (64 << 10), 4096)
            .iter()
            .any(|&b| b != 0),
        "past the zeroed range"
    );
    let img_blocks = fs::metadata(&fd.img).expect("stat image").blocks();
    assert!(
        img_blocks < size / 512,
        "punching freed blocks ({img_blocks})"
    );

    // SEEK_DATA / SEEK_HOLE through the mount: the punched hole is a hole.
    let out = py(
        "import os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\n\
         print(os.lseek(fd,0,os.SEEK_DATA),os.lseek(fd,0,os.SEEK_HOLE),os.lseek(fd,8<<20,os.SEEK_DATA),os.lseek(fd,16<<20,os.SEEK_HOLE))\n\
         try:\n os.lseek(fd,16<<20,os.SEEK_DATA)\nexcept OSError as e:\n print(e.errno)",
        &mnt,
    );
    assert_eq!(
        out,
        format!("0 {} {} {}\n{}\n", 8 * MIB, 9 * MIB, 16 * MIB, libc::ENXIO),
        "lseek"
    );

    // fsync, then a plain allocation inside the file.
    py("import os,sys\nfd=os.open(sys.argv[1],os.O_RDWR)\nos.fsync(fd)\nos.posix_fallocate(fd,8<<20,4096)", &mnt);
    assert!(
        read_region(&fd.img, 8 * MIB, 4096).iter().all(|&b| b == 0),
        "allocate keeps zeroes"
    );

    // The I/O shows in the export's statistics.
    let st = q.ok("x-query-export-stats", json!({"id": "e0"}));
    let st = &st[0]["stats"];
    assert!(st["write"]["bytes"].as_u64() >= Some(512 << 10), "{st}");
    assert!(st["read"]["operations"].as_u64() > Some(0), "{st}");
    assert!(st["discard"]["operations"].as_u64() >= Some(1), "{st}");
    assert!(st["block-status"]["operations"].as_u64() >= Some(4), "{st}");

    q.ok("quit", json!({}));
    let mut d = fd.d;
    assert!(
        d.wait_exit(Duration::from_secs(10)).is_some(),
        "daemon exits on quit"
    );
    assert!(
        wait_unmounted(&fd.mnt, Duration::from_secs(2)),
        "unmounted at exit"
    );
    let err = d.stderr();
    let via_ring = ring_requests(&err);
    match t {
        Transport::Uring => {
            assert!(err.contains("FUSE over io_uring on 1 iothread"), "{err}");
            assert!(via_ring > 100, "requests over io_uring: {via_ring}\n{err}");
        }
        Transport::Dev => {
            assert!(err.contains("/dev/fuse on 1 iothread"), "{err}");
            assert_eq!(via_ring, 0, "{err}");
        }
    }
}

#[test]
fn fuse_file_io_over_dev_fuse() {
    if skip_on_qsd("io-uring option") {
        return;
    }
    file_io(Transport::Dev);
}

#[test]
fn fuse_file_io_over_io_uring() {
    if skip_on_qsd("io-uring option") {
        return;
    }
    let Some(_g) = uring_enabled("FUSE over io_uring") else {
        return;
    };
    file_io(Transport::Uring);
}

#[test]
fn fuse_growable_read_only_and_truncate() {
    if skip_on_qsd("io-uring option") {
        return;
    }
    let size = 4 * MIB;
    // Not growable: a write past the end fails and the image keeps its size.
    let fd = fuse_daemon(size, Fill::Sparse, "");
    let mut q = fd.d.qmp();
    fd.add(&mut q, Transport::Dev, json!({"writable": true}));
    let of = format!("of={}", fd.mnt_str());
    let r = dd(&[
        "if=/dev/zero",
        &of,
        "bs=64k",
        "count=1",
        "seek=64",
        "conv=notrunc",
        "status=none",
    ]);
    assert!(
        !r.status.success(),
        "write past the end of a non-growable export"
    );
    assert_eq!(fs::metadata(&fd.img).unwrap().len(), size);
    // truncate is allowed on a writable export, as in QSD.
    run("truncate", &["-s", "6M", &fd.mnt_str()], TOOL_TIMEOUT).success("truncate");
    assert_eq!(fs::metadata(&fd.img).unwrap().len(), 6 * MIB);
    drop(q);
    drop(fd);

    // Growable: the write grows the node and the image.
    let fd = fuse_daemon(size, Fill::Sparse, "");
    let mut q = fd.d.qmp();
    fd.add(
        &mut q,
        Transport::Dev,
        json!({"writable": true, "growable": true}),
    );
    let src = fd.d.path("src");
    fs::write(&src, pattern(64 << 10, 5)).unwrap();
    let of = format!("of={}", fd.mnt_str());
    dd(&[
        &format!("if={}", src.display()),
        &of,
        "bs=64k",
        "seek=80",
        "conv=notrunc",
        "status=none",
    ])
    .success("dd past the end of a growable export");
    assert_eq!(fs::metadata(&fd.img).unwrap().len(), 5 * MIB + (64 << 10));
    assert_eq!(fs::metadata(&fd.mnt).unwrap().len(), 5 * MIB + (64 << 10));
    assert!(read_region(&fd.img, 5 * MIB, 64 << 10) == pattern(64 << 10, 5));
    run(
        "fallocate",
        &["-o", "6M", "-l", "1M", &fd.mnt_str()],
        TOOL_TIMEOUT,
    )
    .success("fallocate grows");
    assert_eq!(fs::metadata(&fd.img).unwrap().len(), 7 * MIB);
    drop(q);
    drop(fd);

    // Read-only: mode 0400, writes and fallocate refused, data readable.
    let fd = fuse_daemon(size, Fill::Pattern(1), "");
    let mut q = fd.d.qmp();
    fd.add(&mut q, Transport::Dev, json!({}));
    let m = fs::metadata(&fd.mnt).unwrap();
    assert_eq!(m.mode(), 0o100400);
    let of = format!("of={}", fd.mnt_str());
    let r = dd(&[
        "if=/dev/zero",
        &of,
        "bs=4k",
        "count=1",
        "conv=notrunc",
        "status=none",
    ]);
    assert!(!r.status.success(), "write to a read-only export");
    assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
    let r = run(
        "fallocate",
        &["--punch-hole", "-o", "0", "-l", "4096", &fd.mnt_str()],
        TOOL_TIMEOUT,
    );
    assert!(!r.status.success(), "punch on a read-only export");
    let r = run("chmod", &["0600", &fd.mnt_str()], TOOL_TIMEOUT);
    assert!(
        r.stderr.contains("Read-only file system"),
        "chmod +w: {}",
        r.stderr
    );
    run(
        "cmp",
        &[&fd.img.to_string_lossy(), &fd.mnt_str()],
        TOOL_TIMEOUT,
    )
    .success("cmp read-only");
}

#[test]
fn fuse_allow_other_off_keeps_other_users_out() {
    if skip_on_qsd("io-uring option") {
        return;
    }
    let as_nobody = |mnt: &str| run("runuser", &["-u", "nobody", "--", "cat", mnt], TOOL_TIMEOUT);
    let fd = fuse_daemon(MIB, Fill::Pattern(2), "");
    let mut q = fd.d.qmp();
    fd.add(
        &mut q,
        Transport::Dev,
        json!({"writable": true, "allow-other": "off"}),
    );
    let r = run("chmod", &["0666", &fd.mnt_str()], TOOL_TIMEOUT);
    assert!(
        r.stderr.contains("Operation not permitted"),
        "chmod 0666: {}",
        r.stderr
    );
    let r = as_nobody(&fd.mnt_str());
    assert!(
        !r.status.success() && r.stderr.contains("Permission denied"),
        "nobody read: {r:?}"
    );
    let r = run(
        "runuser",
        &["-u", "nobody", "--", "stat", &fd.mnt_str()],
        TOOL_TIMEOUT,
    );
    assert!(!r.status.success(), "nobody stat: {r:?}");
    run("cat", &[&fd.mnt_str()], TOOL_TIMEOUT).success("root reads");
    q.ok("block-export-del", json!({"id": "e0"}));
    assert!(wait_unmounted(&fd.mnt, Duration::from_secs(5)));
    // The control: with allow-other and a mode that lets them, they can.
    fd.add(
        &mut q,
        Transport::Dev,
        json!({"id": "e1", "writable": true, "allow-other": "on"}),
    );
    run("chmod", &["0644", &fd.mnt_str()], TOOL_TIMEOUT).success("chmod 0644 with allow-other");
    let r = as_nobody(&fd.mnt_str());
    assert!(r.status.success(), "nobody reads with allow-other: {r:?}");
}
