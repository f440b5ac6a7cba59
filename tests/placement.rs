//! Iothread placement under a busy neighbour: an iothread placed round
//! robin leaves a CPU that a hog keeps busy, one pinned with `cpu=` stays.
//!
//! A test binary of its own (cargo runs test binaries one after another):
//! the thread moves only to a CPU that was idle at least as long as it
//! waited, and the e2e tests running in parallel kept the other CPU busy
//! for the test's whole minute in some runs.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use ringstor_tests::bitmaps::qemu_io;
use ringstor_tests::*;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long the moving iothread may take to leave the hog's CPU: it needs
/// ~0.4 s of contended serving, and a free moment on another CPU, which a
/// CI machine busy with other tests may take a while to offer.
const MOVE_TIMEOUT: Duration = Duration::from_secs(60);

/// A busy loop pinned to `cpu`, stopped when dropped.
struct Hog {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hog {
    fn start(cpu: usize) -> Hog {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut set = CpuSet::new();
            set.set(cpu).expect("CPU number in range");
            sched_setaffinity(Pid::from_raw(0), &set).expect("pinning the hog");
            while !flag.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        Hog {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads 4k at queue depth 1 from `uri` with libnbd's blocking calls
/// until killed, so the readers themselves leave the other CPU mostly idle.
fn reader(uri: &str) -> Child {
    let mut cmd = Command::new(PYTHON);
    cmd.args([
        "-c",
        "import nbd, sys\nh = nbd.NBD()\nh.connect_uri(sys.argv[1])\nwhile True:\n    h.pread(4096, 0)",
        uri,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    die_with_parent(&mut cmd);
    cmd.spawn().expect("spawn the libnbd reader")
}

fn cpu_of(t: &Value) -> usize {
    t["cpu"].as_u64().expect("cpu field") as usize
}

#[test]
fn round_robin_iothread_leaves_a_hogged_cpu_pinned_one_stays() {
    if skip_on_qsd("iothreads moving off a contended CPU (ringstor placement)") {
        return;
    }
    let cpus = sched_getaffinity(Pid::from_raw(0)).expect("affinity");
    let allowed_cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&c| cpus.is_set(c).unwrap_or(false))
        .collect();
    if allowed_cpus.len() < 2 {
        eprintln!("SKIP (one CPU: nowhere to move to): iothread placement under a hog");
        return;
    }
    // Round robin puts the default iothread on the first allowed CPU and
    // `moving` on the second; `fixed` is pinned there by hand.
    let busy = allowed_cpus[1];
    let fixed = format!("iothread,id=fixed,cpu={busy}");
    let d = Daemon::try_start_bin_with(
        &binary(),
        scratch(),
        &[
            "--object",
            "iothread,id=moving",
            "--object",
            &fixed,
            "--blockdev",
            "driver=null-co,node-name=n1,size=67108864,read-zeroes=on",
            "--blockdev",
            "driver=null-co,node-name=n2,size=67108864,read-zeroes=on",
            "--nbd-server",
            "addr.type=unix,addr.path={dir}/nbd.sock",
            "--export",
            "type=nbd,id=e1,node-name=n1,writable=on,iothread=moving",
            "--export",
            "type=nbd,id=e2,node-name=n2,iothread=fixed",
        ],
        |c| {
            c.env("RINGSTOR_LOG", "info");
        },
    )
    .unwrap_or_else(|e| panic!("daemon exited early: {}", e.stderr));
    let mut q = d.qmp();
    let before = query_iothread(&mut q, "moving");
    assert_eq!(
        cpu_of(&before),
        busy,
        "round robin placed `moving`: {before}"
    );
    let moving_tid = before["thread-id"].as_u64().expect("thread-id");
    let fixed_tid = query_iothread(&mut q, "fixed")["thread-id"]
        .as_u64()
        .expect("thread-id");
    assert_eq!(thread_cpus_allowed(d.pid(), moving_tid), busy.to_string());

    let sock = d.path("nbd.sock");
    let hog = Hog::start(busy);
    let mut readers = [reader(&nbd_uri("n1", &sock)), reader(&nbd_uri("n2", &sock))];
    let deadline = Instant::now() + MOVE_TIMEOUT;
    let moved = loop {
        let t = query_iothread(&mut q, "moving");
        if cpu_of(&t) != busy {
            break t;
        }
        for r in &mut readers {
            if let Some(status) = r.try_wait().expect("wait for the reader") {
                panic!("a reader stopped early: {status}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "`moving` stayed on the hogged CPU {busy} for {MOVE_TIMEOUT:?}; stderr:\n{}",
            d.stderr()
        );
        sleep(Duration::from_millis(100));
    };
    // Both exports served throughout, the pinned one behind the hog.
    sleep(Duration::from_millis(500));
    for r in &mut readers {
        assert!(
            r.try_wait().expect("wait for the reader").is_none(),
            "a reader stopped while its iothread was contended"
        );
        let _ = r.kill();
        let _ = r.wait();
    }
    drop(hog);

    let to = cpu_of(&moved);
    assert!(
        allowed_cpus.contains(&to),
        "moved to a CPU not allowed: {moved}"
    );
    assert_eq!(
        thread_cpus_allowed(d.pid(), moving_tid),
        to.to_string(),
        "re-pinned to one CPU"
    );
    let fixed_now = query_iothread(&mut q, "fixed");
    assert_eq!(cpu_of(&fixed_now), busy, "`cpu=` pins stay: {fixed_now}");
    assert_eq!(thread_cpus_allowed(d.pid(), fixed_tid), busy.to_string());
    let log = d.stderr();
    assert!(
        log.contains(&format!("iothread moving: CPU {busy} is contended"))
            && log.contains(&format!("moved to CPU {to}")),
        "no move in the log:\n{log}"
    );
    assert!(
        !log.contains("iothread fixed: CPU"),
        "the pinned thread moved:\n{log}"
    );

    // The moved thread still serves its export.
    let read = qemu_io(&nbd_uri("n1", &sock), &["read -P 0 0 64k"]);
    assert!(
        read.stdout.contains("read 65536/65536 bytes"),
        "{}",
        read.stdout
    );
}
