//! How the daemon ends: `kill -9` right after acknowledged writes (FUA,
//! write+FLUSH, and `writethrough=on` exports; `cache.direct` on and off)
//! must lose none of them, checked on the file and through a fresh daemon;
//! and SIGTERM / `quit` with NBD I/O in flight must shut down cleanly.

use crate::reliability::two_exports;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ringstor_tests::nbdraw::{self, RawNbd};
use ringstor_tests::*;
use serde_json::{json, Value};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// Image size: 512 slots of 64 KiB.
const IMG: u64 = 32 * MIB;
/// Daemon lives per cache mode, writes per life.
const LIVES: u64 = 25;
const WRITES: usize = 16;

/// One daemon life: verify the previous life's acknowledged writes through
/// this (fresh) daemon, then issue WRITES writes (4-64 KiB at distinct
/// 64 KiB slots, all in flight at once) and SIGKILL the daemon right after
/// the `kill_at`-th acknowledgement (after a FLUSH in mode "flush").
/// Prints {"bad": [...], "acked": [[seed, i, off, len], ...]}.
const LIFE_PY: &str = r#"
import nbd, sys, json, os, signal, random, struct
uri, pid, mode, seed, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
prev = json.loads(sys.argv[6])
def data(s, i, ln):
    return struct.pack(">QQ", s, i) * (ln // 16)
h = nbd.NBD()
h.connect_uri(uri)
bad = [w for w in prev if h.pread(w[3], w[2]) != data(w[0], w[1], w[3])]
acked = []
if n:
    rng = random.Random(seed)
    slots = rng.sample(range(h.get_size() // 65536), n)
    kill_at = n if mode == "flush" else rng.randint(n // 2, n)
    flags = nbd.CMD_FLAG_FUA if mode == "fua" else 0
    pending, bufs = {}, []
    for i, slot in enumerate(slots):
        ln = 4096 * rng.randint(1, 16)
        b = nbd.Buffer.from_bytearray(bytearray(data(seed, i, ln)))
        bufs.append(b)
        pending[h.aio_pwrite(b, slot * 65536, flags=flags)] = [seed, i, slot * 65536, ln]
    while len(acked) < kill_at:
        h.poll(-1)
        for c in list(pending):
            if h.aio_command_completed(c):
                acked.append(pending.pop(c))
    if mode == "flush":
        h.flush()
    os.kill(pid, signal.SIGKILL)
print(json.dumps({"bad": bad, "acked": acked}))
"#;

/// The expected bytes of write `i` of life `seed` (as LIFE_PY makes them).
fn write_data(seed: u64, i: u64, len: usize) -> Vec<u8> {
    let mut unit = seed.to_be_bytes().to_vec();
    unit.extend_from_slice(&i.to_be_bytes());
    unit.repeat(len / 16)
}

fn start_on(img: &Path, direct: bool, export_opts: &str) -> Daemon {
    let blockdev = format!(
        "driver=file,node-name=disk0,filename={},cache.direct={}",
        img.display(),
        if direct { "on" } else { "off" }
    );
    let export = format!("type=nbd,id=e0,node-name=disk0,name=disk0,writable=on{export_opts}");
    let args = [
        "--blockdev",
        &blockdev,
        "--nbd-server",
        "addr.type=unix,addr.path={dir}/nbd.sock",
        "--export",
        &export,
    ];
    Daemon::start(scratch(), &args)
}

/// Run LIVES daemon lives per cache mode in `mode`; returns acked writes.
fn crash_loop(mode: &str, export_opts: &str) -> usize {
    let t0 = Instant::now();
    let mut total = 0;
    for direct in [false, true] {
        let keep = scratch();
        let img = keep.path().join("disk.img");
        make_sparse(&img, IMG);
        let mut prev = Value::Array(vec![]);
        for life in 0..=LIVES {
            let mut d = start_on(&img, direct, export_opts);
            let uri = nbd_uri("disk0", &d.path("nbd.sock"));
            let n = if life == LIVES { 0 } else { WRITES };
            let seed = life + 1000 * u64::from(direct);
            let argv = [
                uri.as_str(),
                &d.pid().to_string(),
                mode,
                &seed.to_string(),
                &n.to_string(),
                &prev.to_string(),
            ];
            let out = run_python(LIFE_PY, &argv).success("crash life");
            let v: Value = serde_json::from_str(out.stdout.trim()).expect("life JSON");
            let what = format!("{mode} direct={direct} life {life}");
            assert_eq!(
                v["bad"],
                json!([]),
                "{what}: acked writes lost: {}",
                v["bad"]
            );
            if n == 0 {
                break;
            }
            let status = d.wait_exit(Duration::from_secs(10)).expect("killed");
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(9),
                "{what}"
            );
            let acked = v["acked"].as_array().expect("acked").clone();
            assert!(acked.len() >= WRITES / 2, "{what}: {acked:?}");
            for w in &acked {
                let f = |k: usize| w[k].as_u64().expect("write field");
                let got = read_region(&img, f(2), f(3) as usize);
                assert!(
                    got == write_data(f(0), f(1), f(3) as usize),
                    "{what}: acked write {w} not in the file"
                );
            }
            total += acked.len();
            prev = Value::Array(acked);
        }
    }
    eprintln!(
        "crash {mode}{export_opts}: {} lives, {total} acked writes verified in {:.1}s",
        2 * LIVES,
        t0.elapsed().as_secs_f64()
    );
    total
}

#[test]
fn sigkill_after_fua_writes_loses_nothing() {
    assert!(crash_loop("fua", "") > 0);
}

#[test]
fn sigkill_after_flush_loses_nothing() {
    assert!(crash_loop("flush", "") > 0);
}

#[test]
fn sigkill_writethrough_export_loses_nothing() {
    assert!(crash_loop("plain", ",writethrough=on") > 0);
}

/// Bytes of a cut-short payload that did arrive.
fn closed_len(c: nbdraw::Closed) -> usize {
    match c {
        nbdraw::Closed::Boundary => 0,
        nbdraw::Closed::Partial(n) => n,
    }
}

/// How the clean-shutdown test asks the daemon to stop.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Sigterm,
    Quit,
}

fn clean_shutdown(how: Stop) {
    let mut d = two_exports(&["--pidfile", "{dir}/pid"]);
    let pid = d.pid();
    let mut a = d.qmp();
    let mut watcher = Qmp::connect(&d.path("qmp2.sock"));
    let mut c = RawNbd::greet(&d.path("nbd.sock"), Duration::from_secs(10)).expect("greet");
    c.go("fio");
    // 16 requests in flight: WRITEs (even handles) and READs (odd) of 1 MiB.
    let data = pattern(MIB as usize, 77);
    let mut w = c.sock.try_clone().expect("clone");
    let writer = thread::spawn(move || {
        for h in 0..16u64 {
            let ty = if h % 2 == 0 { 1 } else { 0 };
            let payload = if ty == 1 { &data[..] } else { &[][..] };
            if RawNbd::simple_request(0, ty, h, h * MIB, MIB as u32)
                .into_iter()
                .chain(payload.iter().copied())
                .collect::<Vec<u8>>()
                .chunks(1 << 16)
                .any(|chunk| std::io::Write::write_all(&mut w, chunk).is_err())
            {
                return; // the server closed: fine, replies decide
            }
        }
    });
    thread::sleep(Duration::from_millis(5));
    match how {
        Stop::Sigterm => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        Stop::Quit => {
            // QSD may exit before its reply to quit is flushed: a reply, if
            // any, must be a success.
            a.send_raw(b"{\"execute\":\"quit\"}\n");
            match a.read_message(Duration::from_secs(10)) {
                Some(r) => assert!(r.get("return").is_some() || r.get("event").is_some(), "{r}"),
                None => eprintln!("quit: monitor closed before the reply"),
            }
        }
    }
    // Every reply that comes is whole; the stream ends at a reply boundary.
    let mut replies = 0;
    let end = loop {
        match c.read_simple_reply() {
            Ok((err, h)) => {
                assert!(h < 16, "handle {h}");
                if err == 0 && h % 2 == 1 {
                    let mut buf = vec![0; MIB as usize];
                    if let Err(closed) = c.read_or_closed(&mut buf) {
                        break nbdraw::Closed::Partial(16 + closed_len(closed));
                    }
                }
                replies += 1;
            }
            Err(closed) => break closed,
        }
    };
    writer.join().expect("writer");
    let mut deleted = Vec::new();
    while let Some(m) = watcher.read_message(Duration::from_secs(10)) {
        if m["event"] == "BLOCK_EXPORT_DELETED" {
            deleted.push(m["data"]["id"].as_str().unwrap_or_default().to_string());
        }
    }
    let status = d.wait_exit(Duration::from_secs(10)).expect("daemon exited");
    deleted.sort();
    assert_eq!(
        deleted,
        ["e0", "e1"],
        "BLOCK_EXPORT_DELETED for each export"
    );
    assert_eq!(status.code(), Some(0), "exit status");
    let left: Vec<&str> = ["pid", "nbd.sock", "qmp.sock", "qmp2.sock"]
        .into_iter()
        .filter(|f| d.path(f).exists())
        .collect();
    eprintln!(
        "{how:?}: {replies} replies before close ({end:?}); deleted {deleted:?}; \
         {status}; left {left:?}"
    );
    // QSD 10.0 lacks two of these behaviours: it may cut a reply in the
    // middle when it exits, and it leaves the NBD server's unix socket file
    // behind. Both are checked for ringstor only; on QSD they are noted.
    if is_qsd() {
        eprintln!("NOTE (QSD): {how:?} ended the NBD stream with {end:?}, left {left:?}");
        assert!(!left.contains(&"pid"), "pid file left behind");
        return;
    }
    assert_eq!(end, nbdraw::Closed::Boundary, "closed mid-reply");
    assert!(left.is_empty(), "{left:?} left behind after {how:?}");
}

#[test]
fn sigterm_with_io_in_flight_is_clean() {
    clean_shutdown(Stop::Sigterm);
}

#[test]
fn quit_with_io_in_flight_is_clean() {
    clean_shutdown(Stop::Quit);
}
