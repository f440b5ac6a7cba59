//! Reliability under churn and abuse: thousands of NBD connect/handshake/
//! disconnect cycles next to a verifying fio job (fds and RSS must return to
//! their baseline), QMP abuse (malformed input, a monitor dying
//! mid-command, two monitors racing add/del of one export) and clean
//! shutdown (SIGTERM and `quit`) with a client's I/O in flight.

use ringstor_tests::nbdraw::{RawNbd, REP_ACK};
use ringstor_tests::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// Connect/handshake/disconnect cycles of the churn test.
const CHURN_CYCLES: usize = 10_000;

/// A daemon with two exports: `churn` (read-only, 4 MiB of pattern 7 on
/// node d0) and `fio` (writable, 40 MiB sparse on node d1), and a second
/// monitor on `{dir}/qmp2.sock`.
pub(crate) fn two_exports(extra: &[&str]) -> Daemon {
    let dir = scratch();
    make_filled(&dir.path().join("a.img"), 4 * MIB, 7);
    make_sparse(&dir.path().join("b.img"), 40 * MIB);
    let mut args = vec![
        "--blockdev",
        "driver=file,node-name=d0,filename={dir}/a.img",
        "--blockdev",
        "driver=file,node-name=d1,filename={dir}/b.img",
        "--nbd-server",
        "addr.type=unix,addr.path={dir}/nbd.sock",
        "--export",
        "type=nbd,id=e0,node-name=d0,name=churn",
        "--export",
        "type=nbd,id=e1,node-name=d1,name=fio,writable=on",
        "--chardev",
        "socket,id=mon2,path={dir}/qmp2.sock,server=on,wait=off",
        "--monitor",
        "chardev=mon2",
    ];
    args.extend_from_slice(extra);
    Daemon::start(dir, &args)
}

/// One handshake cycle; every 500th also reads and checks 4 KiB.
fn churn_cycle(sock: &Path, i: usize) {
    let mut c = RawNbd::greet(sock, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("cycle {i}: greeting: {e}"));
    let go = c.go("churn");
    assert_eq!(go.last().map(|r| r.rtype), Some(REP_ACK), "cycle {i}: {go:?}");
    assert_eq!(c.size, 4 * MIB, "cycle {i}");
    if i % 500 == 0 {
        let off = (i as u64 * 4096) % (4 * MIB);
        let data = c.read_at(i as u64, off, 4096).expect("churn READ");
        assert_eq!(data, pattern(4 * MIB as usize, 7)[off as usize..][..4096]);
    }
    // Alternate a polite NBD_CMD_DISC with an abrupt close.
    if i % 2 == 0 {
        c.disconnect();
    }
}

/// Peak fd count and RSS of `pid`, sampled until `stop` is set.
fn sample_peaks(pid: u32, stop: Arc<AtomicBool>) -> thread::JoinHandle<(usize, u64)> {
    thread::spawn(move || {
        let (mut fds, mut rss) = (0, 0);
        while !stop.load(Ordering::Relaxed) && alive(pid) {
            fds = fds.max(fd_count(pid));
            rss = rss.max(rss_kib(pid));
            thread::sleep(Duration::from_millis(20));
        }
        (fds, rss)
    })
}

#[test]
fn churn_10k_handshakes_with_fio_verify() {
    let d = two_exports(&[]);
    let pid = d.pid();
    let sock = d.path("nbd.sock");
    // Warm up (first-connection allocations), then take the baseline.
    for i in 1..=100 {
        churn_cycle(&sock, i);
    }
    thread::sleep(Duration::from_millis(300));
    let (base_fds, base_rss) = (fd_count(pid), rss_kib(pid));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_peaks(pid, stop.clone());
    let uri = format!("--uri={}", nbd_uri("fio", &sock));
    let fio = thread::spawn(move || {
        let args = [
            "--name=churn",
            "--ioengine=nbd",
            uri.as_str(),
            "--rw=randwrite",
            "--bs=4k",
            "--size=32M",
            "--iodepth=8",
            "--verify=crc32c",
            "--verify_state_save=0",
        ];
        let w = run("fio", &args, Duration::from_secs(150)).success("fio randwrite+verify");
        let mut v = args.to_vec();
        v.push("--verify_only");
        let r = run("fio", &v, Duration::from_secs(60)).success("fio verify pass");
        (w, r)
    });
    let t0 = Instant::now();
    for i in 1..=CHURN_CYCLES {
        churn_cycle(&sock, i);
    }
    let churn_time = t0.elapsed();
    let (w, r) = fio.join().expect("fio thread");
    for (what, out) in [("write", &w), ("verify", &r)] {
        assert!(
            out.stdout.contains("err= 0") && !out.stderr.contains("verify"),
            "fio {what}: errors\n{}\n{}",
            out.stdout,
            out.stderr
        );
    }
    stop.store(true, Ordering::Relaxed);
    let (peak_fds, peak_rss) = sampler.join().expect("sampler");
    // Closing is asynchronous in the daemon: give it a moment to settle.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fd_count(pid) != base_fds && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let (after_fds, after_rss) = (fd_count(pid), rss_kib(pid));
    eprintln!(
        "churn: {CHURN_CYCLES} cycles in {:.1}s ({:.0}/s); fds base {base_fds} peak {peak_fds} \
         after {after_fds}; RSS KiB base {base_rss} peak {peak_rss} after {after_rss}",
        churn_time.as_secs_f64(),
        CHURN_CYCLES as f64 / churn_time.as_secs_f64()
    );
    assert_eq!(after_fds, base_fds, "fd leak after churn");
    assert!(
        after_rss < base_rss + 16 * 1024,
        "RSS grew from {base_rss} to {after_rss} KiB"
    );
    // Still serving.
    churn_cycle(&sock, 0);
}
