//! vduse-blk exports on a kernel without VDUSE (no `/dev/vduse`, as on
//! every machine this suite runs on): `block-export-add` and `--export`
//! fail with one GenericError that names the missing node, nothing is
//! left behind, and the daemon keeps serving its other exports. Option
//! errors are compared with qemu-storage-daemon's. The device logic
//! itself is tested in-crate against a stand-in kernel
//! (`drivers/src/vduse_blk/tests.rs`); the real kernel path is not
//! exercised here.

use ringstor_tests::daemon::{EarlyExit, QSD_BIN};
use ringstor_tests::qmp::reply_to_result;
use ringstor_tests::*;
use serde_json::{json, Value};
use std::path::Path;

const MIB: u64 = 1 << 20;
const CONTROL: &str = "/dev/vduse/control";
/// QSD's whole message once its checks pass and the kernel says no.
const QSD_CREATE_FAILED: &str = "failed to create vduse device";

fn no_vduse(what: &str) -> bool {
    if Path::new(CONTROL).exists() {
        eprintln!("SKIP ({CONTROL} exists; this test is about kernels without VDUSE): {what}");
        return false;
    }
    true
}

fn daemon_on(bin: &Path) -> Daemon {
    let dir = scratch();
    make_sparse(&dir.path().join("disk.img"), 4 * MIB);
    Daemon::start_bin(
        bin,
        dir,
        &[
            "--blockdev",
            "driver=file,node-name=disk0,filename={dir}/disk.img",
            "--object",
            "iothread,id=io0",
            "--nbd-server",
            "addr.type=unix,addr.path={dir}/nbd.sock",
        ],
    )
}

fn vd(id: &str, extra: Value) -> Value {
    let mut v = json!({"type": "vduse-blk", "id": id, "node-name": "disk0", "name": "vd0"});
    for (k, x) in extra.as_object().expect("object").clone() {
        v[k] = x;
    }
    v
}

#[test]
fn vduse_blk_add_fails_clearly_and_the_daemon_keeps_serving() {
    if !no_vduse("vduse-blk error path") || skip_on_qsd("ringstor's error text") {
        return;
    }
    let d = daemon_on(&binary());
    let mut q = d.qmp();
    q.ok(
        "block-export-add",
        json!({"type": "nbd", "id": "n0", "node-name": "disk0", "writable": true}),
    );
    let before = q.ok("query-block-exports", json!({}));
    for attempt in 0..2 {
        let e = q.err(
            "block-export-add",
            vd(
                "v0",
                json!({"writable": true, "iothread": "io0", "num-queues": 2}),
            ),
        );
        assert_eq!(e.class, "GenericError", "attempt {attempt}");
        assert!(
            e.desc.starts_with(&format!(
                "{QSD_CREATE_FAILED}: {CONTROL} does not exist: this kernel has no VDUSE support"
            )),
            "{}",
            e.desc
        );
        // Nothing was registered: the id is free and the list unchanged.
        assert_eq!(q.ok("query-block-exports", json!({})), before);
    }
    // No permission is held: a second writable export of the node works,
    // and the first still serves reads and writes.
    q.ok(
        "block-export-add",
        json!({"type": "nbd", "id": "n1", "node-name": "disk0", "name": "again", "writable": true}),
    );
    let sock = d.path("nbd.sock");
    run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x6b 0 65536",
            &nbd_uri("disk0", &sock),
        ],
        TOOL_TIMEOUT,
    )
    .success("qemu-io write");
    let r = run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "read -P 0x6b 0 65536",
            &nbd_uri("again", &sock),
        ],
        TOOL_TIMEOUT,
    )
    .success("qemu-io read");
    assert!(
        !r.stdout.contains("Pattern verification failed"),
        "{}",
        r.stdout
    );
    assert_eq!(
        region_sha256(&d.path("disk.img"), 0, 65536),
        sha256(&vec![0x6b; 65536])
    );
    q.ok("block-export-del", json!({"id": "n1"}));
    assert!(
        d.stderr().lines().all(|l| !l.contains("panicked")),
        "{}",
        d.stderr()
    );
}

/// Bad `block-export-add` arguments, refused before the kernel is asked.
fn bad_adds() -> Vec<Value> {
    vec![
        json!({"type": "vduse-blk", "id": "v1", "node-name": "disk0"}),
        vd("v1", json!({"num-queues": 0})),
        vd("v1", json!({"num-queues": 70000})),
        vd("v1", json!({"num-queues": -1})),
        vd("v1", json!({"num-queues": "two"})),
        vd("v1", json!({"queue-size": 2})),
        vd("v1", json!({"queue-size": 100})),
        vd("v1", json!({"queue-size": 2048})),
        vd("v1", json!({"queue-size": 70000})),
        vd("v1", json!({"logical-block-size": 1000})),
        vd("v1", json!({"logical-block-size": 4 * MIB})),
        vd(
            "v1",
            json!({"num-queues": 0, "queue-size": 3, "logical-block-size": 3}),
        ),
        vd("v1", json!({"queue-size": 3, "logical-block-size": 3})),
        vd("v1", json!({"name": 5})),
        vd("v1", json!({"serial": 5})),
        vd("v1", json!({"bogus": 1})),
        vd("v1", json!({"node-name": "nope"})),
        vd("v1", json!({"iothread": "nope"})),
    ]
}

#[test]
fn vduse_blk_errors_match_qsd() {
    if !no_vduse("vduse-blk errors against QSD")
        || skip_unless_comparing("vduse-blk QMP errors compared with QSD")
    {
        return;
    }
    let answers = |bin: &Path, adds: &[Value]| -> Vec<Value> {
        let d = daemon_on(bin);
        let mut q = d.qmp();
        adds.iter()
            .map(|a| q.send(&json!({"execute": "block-export-add", "arguments": a})))
            .collect()
    };
    let adds = bad_adds();
    let ours = answers(&binary(), &adds);
    let qsd = answers(Path::new(QSD_BIN), &adds);
    for ((a, o), r) in adds.iter().zip(&ours).zip(&qsd) {
        assert!(r.get("error").is_some(), "QSD accepted {a}: {r}");
        assert_eq!(o["error"], r["error"], "block-export-add {a}");
    }
    // Good options reach the kernel: QSD's words, then which node is missing.
    let good = [
        vd("v1", json!({})),
        vd(
            "v1",
            json!({"num-queues": 4, "queue-size": 4, "logical-block-size": 4096, "serial": "s", "writable": true}),
        ),
    ];
    let ours = answers(&binary(), &good);
    let qsd = answers(Path::new(QSD_BIN), &good);
    for ((a, o), r) in good.iter().zip(ours).zip(qsd) {
        let r = reply_to_result(r).expect_err("QSD fails too");
        let o = reply_to_result(o).expect_err("we fail");
        assert_eq!(
            (r.class.as_str(), r.desc.as_str()),
            ("GenericError", QSD_CREATE_FAILED),
            "{a}"
        );
        assert_eq!(o.class, r.class, "{a}");
        assert!(
            o.desc
                .starts_with(&format!("{QSD_CREATE_FAILED}: {CONTROL}")),
            "{a}: {}",
            o.desc
        );
    }
}

fn cli_fails(bin: &Path) -> EarlyExit {
    let dir = scratch();
    make_sparse(&dir.path().join("disk.img"), MIB);
    let args = [
        "--blockdev",
        "driver=file,node-name=disk0,filename={dir}/disk.img",
        "--export",
        "type=vduse-blk,id=v0,node-name=disk0,name=vd0,writable=on",
    ];
    match Daemon::try_start_bin(bin, dir, &args) {
        Ok(_) => panic!(
            "{} started with a vduse-blk export and no VDUSE",
            bin.display()
        ),
        Err(e) => e,
    }
}

#[test]
fn vduse_blk_cli_export_fails_like_qsd() {
    if !no_vduse("--export type=vduse-blk") || skip_unless_comparing("--export vduse-blk vs QSD") {
        return;
    }
    let ours = cli_fails(&binary());
    let qsd = cli_fails(Path::new(QSD_BIN));
    assert_eq!(ours.status.code(), qsd.status.code());
    assert_eq!(ours.status.code(), Some(1));
    let opt = "--export type=vduse-blk,id=v0,node-name=disk0,name=vd0,writable=on";
    assert!(
        qsd.stderr.contains(&format!("{opt}: {QSD_CREATE_FAILED}")),
        "{}",
        qsd.stderr
    );
    let line = ours.stderr.lines().last().unwrap_or_default();
    assert!(
        line.contains(&format!(
            "{opt}: {QSD_CREATE_FAILED}: {CONTROL} does not exist"
        )),
        "{}",
        ours.stderr
    );
}
