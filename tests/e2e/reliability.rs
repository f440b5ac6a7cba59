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
    assert_eq!(
        go.last().map(|r| r.rtype),
        Some(REP_ACK),
        "cycle {i}: {go:?}"
    );
    assert_eq!(c.size, 4 * MIB, "cycle {i}");
    if i.is_multiple_of(500) {
        let off = (i as u64 * 4096) % (4 * MIB);
        let data = c.read_at(i as u64, off, 4096).expect("churn READ");
        assert_eq!(data, pattern(4 * MIB as usize, 7)[off as usize..][..4096]);
    }
    // Alternate a polite NBD_CMD_DISC with an abrupt close.
    if i.is_multiple_of(2) {
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

/// The "closers" that turn a truncated JSON prefix into a complete text:
/// an open string is closed, then every open object/array.
fn closers(prefix: &str) -> String {
    let (mut in_str, mut stack) = (false, Vec::new());
    for c in prefix.chars() {
        match c {
            '"' => in_str = !in_str,
            '{' | '[' if !in_str => stack.push(if c == '{' { '}' } else { ']' }),
            '}' | ']' if !in_str => {
                stack.pop();
            }
            _ => {}
        }
    }
    let mut out = if in_str {
        "\"".to_string()
    } else {
        String::new()
    };
    out.extend(stack.iter().rev());
    out
}

/// Known commands with wrong-typed or unexpected arguments: all must fail.
const WRONG_TYPES: &[&str] = &[
    r#"{"execute":"block-export-add","arguments":{"type":"nbd","id":5,"node-name":"d0"}}"#,
    r#"{"execute":"block-export-add","arguments":{"type":7}}"#,
    r#"{"execute":"block-export-del","arguments":{"id":["e0"]}}"#,
    r#"{"execute":"block-export-del","arguments":{"id":"e0","mode":5}}"#,
    r#"{"execute":"nbd-server-start","arguments":{"addr":"x"}}"#,
    r#"{"execute":"nbd-server-start","arguments":{"addr":{"type":"unix","data":{"path":1}}}}"#,
    r#"{"execute":"blockdev-add","arguments":{"driver":12,"node-name":"n"}}"#,
    r#"{"execute":"blockdev-add","arguments":{"driver":"file","node-name":true,"filename":"/x"}}"#,
    r#"{"execute":"blockdev-del","arguments":{"node-name":{}}}"#,
    r#"{"execute":"query-version","arguments":{"x":1}}"#,
    r#"{"execute":"query-version","arguments":[]}"#,
    r#"{"execute":"object-add","arguments":{"qom-type":"iothread","id":3}}"#,
    r#"{"execute":"nbd-server-add","arguments":{"device":1}}"#,
    r#"{"execute":"query-named-block-nodes","arguments":{"flat":"yes"}}"#,
    r#"{"execute":1}"#,
    r#"{"arguments":{}}"#,
    r#"{"execute":"query-version","bogus":1}"#,
    r#"42"#,
    r#"[]"#,
    r#""just a string""#,
    r#"null"#,
];

/// Valid commands whose truncations make the malformed inputs.
const TRUNCATE: &[&str] = &[
    r#"{"execute":"query-block-exports","arguments":{}}"#,
    r#"{"execute":"block-export-add","arguments":{"type":"nbd","id":"t","node-name":"nonode","name":"t"}}"#,
    r#"{"execute":"nbd-server-start","arguments":{"addr":{"type":"unix","data":{"path":"/nonexistent/s"}}}}"#,
];

/// One malformed input and whether it must draw at least one error reply.
fn malformed(rng: &mut Rng, i: usize) -> (Vec<u8>, bool) {
    match (i % 200, rng.below(5)) {
        (17, _) => {
            let mut v = vec![b'['; 10_000];
            v.extend(std::iter::repeat_n(b']', 10_000));
            (v, true)
        }
        (99, _) => {
            // One 1 MiB string (QSD's lexer needs ~8 s for it), else 64 KiB.
            let huge = "A".repeat(if i == 99 { 1 << 20 } else { 64 << 10 });
            let cmd = if i % 400 == 99 {
                format!(r#"{{"execute":"{huge}"}}"#)
            } else {
                format!(r#"{{"execute":"query-version","arguments":{{"s":"{huge}"}}}}"#)
            };
            (cmd.into_bytes(), true)
        }
        (_, 0) => {
            // Random bytes that cannot open a string, object or array (those
            // would swallow the sync command that follows).
            let n = 1 + rng.below(200) as usize;
            let bytes = (0..n)
                .map(|_| rng.below(256) as u8)
                .filter(|b| !b"\"'{[".contains(b))
                .collect();
            (bytes, false)
        }
        (_, 1) => {
            let cmd = TRUNCATE[rng.below(TRUNCATE.len() as u64) as usize];
            let cut = 1 + rng.below(cmd.len() as u64 - 2) as usize;
            let prefix = &cmd[..cut];
            (format!("{prefix}{}", closers(prefix)).into_bytes(), true)
        }
        (_, 2) => (
            format!(r#"{{"execute":"no-such-command-{i}"}}"#).into_bytes(),
            true,
        ),
        _ => {
            let t = WRONG_TYPES[rng.below(WRONG_TYPES.len() as u64) as usize];
            (t.as_bytes().to_vec(), true)
        }
    }
}

/// Assert `msg` is a well-formed reply: a `return`, or an `error` with a
/// string class and desc.
fn assert_reply_shape(msg: &Value, input: &[u8]) {
    let shown = String::from_utf8_lossy(&input[..input.len().min(120)]);
    if msg.get("return").is_some() {
        return;
    }
    let e = &msg["error"];
    assert!(
        e["class"].is_string() && e["desc"].as_str().is_some_and(|d| !d.is_empty()),
        "bad reply {msg} to {shown:?}"
    );
}

#[test]
fn qmp_survives_1000_malformed_commands() {
    let d = two_exports(&[]);
    let mut q = d.qmp();
    let before = q.ok("query-block-exports", json!({}));
    let mut rng = Rng::new(0x5eed);
    let (mut replies, t0) = (0usize, Instant::now());
    for i in 0..1000 {
        let (input, must_fail) = malformed(&mut rng, i);
        q.send_raw(&input);
        q.send_raw(format!("\n{{\"execute\":\"query-version\",\"id\":\"sync-{i}\"}}\n").as_bytes());
        let mut got = 0;
        loop {
            let msg = q.read_reply();
            if let Some(id) = msg.get("id") {
                assert_eq!(id, &json!(format!("sync-{i}")), "out of order reply");
                assert!(msg["return"]["qemu"].is_object(), "sync reply {msg}");
                break;
            }
            assert_reply_shape(&msg, &input);
            got += 1;
        }
        if must_fail {
            let shown = String::from_utf8_lossy(&input[..input.len().min(120)]);
            assert!(got >= 1, "no reply to malformed input {shown:?}");
        }
        replies += got;
    }
    eprintln!(
        "qmp abuse: 1000 inputs, {replies} error/return replies, {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let v = q.ok("query-version", json!({}));
    assert!(v["qemu"]["major"].is_number(), "{v}");
    assert_eq!(
        q.ok("query-block-exports", json!({})),
        before,
        "state changed"
    );
}

#[test]
fn monitor_dropped_mid_command_leaves_others_alone() {
    let d = two_exports(&[]);
    let mut other = Qmp::connect(&d.path("qmp2.sock"));
    let full = format!(
        r#"{{"execute":"blockdev-add","arguments":{{"driver":"file","node-name":"half","filename":"{}"}}}}"#,
        d.path("a.img").display()
    );
    let mut rng = Rng::new(3);
    for round in 0..20 {
        let mut q = d.qmp();
        // Cut anywhere before the final brace, even inside a string.
        let cut = 1 + rng.below(full.len() as u64 - 2) as usize;
        q.send_raw(&full.as_bytes()[..cut]);
        drop(q);
        let v = other.ok("query-version", json!({}));
        assert!(v["qemu"].is_object(), "round {round}");
        let nodes = other.ok("query-named-block-nodes", json!({"flat": true}));
        assert!(
            !nodes.to_string().contains("\"half\""),
            "round {round}: half-sent blockdev-add ran: {nodes}"
        );
    }
    // A complete command whose sender vanishes before the reply.
    let mut q = d.qmp();
    q.send_raw(b"{\"execute\":\"query-named-block-nodes\"}\n");
    drop(q);
    // The dropped monitor's socket takes a new client with a fresh parser.
    let mut q = d.qmp();
    q.ok("query-version", json!({}));
    other.ok("query-block-exports", json!({}));
}

/// Alternate add/del of export `x` `rounds` times; returns the monitor and
/// the counts of successful adds and dels.
fn add_del_loop(mut q: Qmp, start_with_del: bool, rounds: usize) -> (Qmp, usize, usize) {
    let (mut adds, mut dels) = (0, 0);
    for i in 0..rounds {
        let r = if (i % 2 == 0) != start_with_del {
            let args = json!({"type": "nbd", "id": "x", "node-name": "d0", "name": "x"});
            q.execute("block-export-add", args).map(|_| adds += 1)
        } else {
            q.execute("block-export-del", json!({"id": "x"}))
                .map(|_| dels += 1)
        };
        if let Err(e) = r {
            assert_eq!(e.class, "GenericError", "round {i}: {e:?}");
            assert!(!e.desc.is_empty());
        }
    }
    (q, adds, dels)
}

#[test]
fn two_monitors_race_export_add_del() {
    let d = two_exports(&[]);
    let a = d.qmp();
    let b = Qmp::connect(&d.path("qmp2.sock"));
    let ta = thread::spawn(move || add_del_loop(a, false, 100));
    let tb = thread::spawn(move || add_del_loop(b, true, 100));
    let (mut a, adds_a, dels_a) = ta.join().expect("monitor A thread");
    let (_b, adds_b, dels_b) = tb.join().expect("monitor B thread");
    let (adds, dels) = (adds_a + adds_b, dels_a + dels_b);
    // Every successful del ends in exactly one BLOCK_EXPORT_DELETED (events
    // go to every monitor; count them on A).
    let events = a
        .collect_events("BLOCK_EXPORT_DELETED", Duration::from_secs(2))
        .into_iter()
        .filter(|e| e["data"]["id"] == "x")
        .count();
    let list = a.ok("query-block-exports", json!({}));
    let xs: Vec<&Value> = list
        .as_array()
        .expect("array")
        .iter()
        .filter(|e| e["id"] == "x")
        .collect();
    eprintln!("race: {adds} adds ok, {dels} dels ok, {events} deleted events, now {xs:?}");
    assert!(adds >= 1 && dels >= 1, "some operations must succeed");
    assert_eq!(events, dels, "one deleted event per successful del");
    assert_eq!(adds - dels, xs.len(), "exports present = adds - dels");
    assert!(xs.iter().all(|e| e["shutting-down"] == false), "{xs:?}");
    // The survivor's state is real: the export is (not) served accordingly.
    let r = run(
        "nbdinfo",
        &["--size", &nbd_uri("x", &d.path("nbd.sock"))],
        TOOL_TIMEOUT,
    );
    assert_eq!(r.status.success(), xs.len() == 1, "nbdinfo: {}", r.stderr);
    // And the last state can be flipped cleanly.
    if xs.len() == 1 {
        a.ok("block-export-del", json!({"id": "x"}));
        a.wait_event("BLOCK_EXPORT_DELETED", Duration::from_secs(5))
            .expect("deleted");
    } else {
        a.ok(
            "block-export-add",
            json!({"type": "nbd", "id": "x", "node-name": "d0", "name": "x"}),
        );
    }
    let others: Vec<Value> = a
        .ok("query-block-exports", json!({}))
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(others.len(), 2 + 1 - xs.len(), "{others:?}");
}
