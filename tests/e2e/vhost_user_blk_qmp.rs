//! vhost-user-blk exports over QMP: add, query, safe and hard removal with
//! a frontend connected, BLOCK_EXPORT_DELETED once, nbd-server-stop leaving
//! them alone; every error text compared with qemu-storage-daemon's.

use crate::blkio_client::Client;
use ringstor_tests::qmp::reply_to_result;
use ringstor_tests::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const MIB: u64 = 1 << 20;

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
        ],
    )
}

fn vu(id: &str, extra: Value) -> Value {
    let mut v = json!({
        "type": "vhost-user-blk", "id": id, "node-name": "disk0",
        "addr": {"type": "unix", "path": "vhost.sock"},
    });
    for (k, x) in extra.as_object().expect("object").clone() {
        v[k] = x;
    }
    v
}

/// Bad `block-export-add` arguments, answered the same by QSD and us
/// (paths are relative to the daemon's directory).
fn bad_adds() -> Vec<Value> {
    vec![
        vu(
            "v1",
            json!({"addr": {"type": "inet", "host": "127.0.0.1", "port": "0"}}),
        ),
        vu("v1", json!({"logical-block-size": 1000})),
        vu("v1", json!({"logical-block-size": 256})),
        vu("v1", json!({"logical-block-size": 4 * MIB})),
        vu("v1", json!({"num-queues": 0})),
        vu("v1", json!({"num-queues": 70000})),
        vu("v1", json!({"num-queues": "two"})),
        vu("v1", json!({"bogus": 1})),
        vu(
            "v1",
            json!({"addr": {"type": "unix", "path": "nonexistent/v.sock"}}),
        ),
        vu("v1", json!({"node-name": "nope"})),
        vu("v1", json!({"iothread": "nope"})),
        vu(
            "v1",
            json!({"logical-block-size": 1000, "node-name": "nope"}),
        ),
        json!({"type": "vhost-user-blk", "id": "v1", "node-name": "disk0"}),
    ]
}

#[test]
fn vhost_user_blk_errors_match_qsd() {
    if skip_unless_comparing("vhost-user-blk QMP errors compared with QSD") {
        return;
    }
    let answers = |bin: &Path| -> Vec<Value> {
        let d = daemon_on(bin);
        let mut q = d.qmp();
        bad_adds()
            .into_iter()
            .map(|a| q.send(&json!({"execute": "block-export-add", "arguments": a})))
            .collect()
    };
    let ours = answers(&binary());
    let qsd = answers(Path::new(daemon::QSD_BIN));
    for ((a, o), r) in bad_adds().iter().zip(&ours).zip(&qsd) {
        assert!(r.get("error").is_some(), "QSD accepted {a}: {r}");
        assert_eq!(o["error"], r["error"], "block-export-add {a}");
    }
}

#[test]
fn vhost_user_blk_add_query_del_event() {
    let d = daemon_on(&binary());
    let mut q = d.qmp();
    q.ok(
        "block-export-add",
        vu(
            "v0",
            json!({"writable": true, "iothread": "io0", "num-queues": 2}),
        ),
    );
    let e = q.err("block-export-add", vu("v0", json!({})));
    assert_eq!(e.desc, "Block export id 'v0' is already in use");
    assert_eq!(
        q.ok("query-block-exports", json!({})),
        json!([{"type": "vhost-user-blk", "id": "v0", "node-name": "disk0", "shutting-down": false}])
    );
    let sock = d.path("vhost.sock");
    let mut c = Client::connect(&sock, 2, false).expect("blkio connects");
    c.queues[1].write(0, &pattern(4096, 3)).expect("write");
    // Safe removal refuses while the frontend is connected, and it keeps working.
    let e = q.err("block-export-del", json!({"id": "v0"}));
    assert_eq!(
        (e.class.as_str(), e.desc.as_str()),
        ("GenericError", "export 'v0' still in use")
    );
    assert_eq!(
        c.queues[0].read(0, 4096).expect("still served"),
        pattern(4096, 3)
    );
    // Hard removal drops it; the event comes once, the socket goes.
    q.ok("block-export-del", json!({"id": "v0", "mode": "hard"}));
    let ev = q
        .wait_event("BLOCK_EXPORT_DELETED", Duration::from_secs(5))
        .expect("BLOCK_EXPORT_DELETED");
    assert_eq!(ev["data"], json!({"id": "v0"}));
    assert!(q
        .collect_events("BLOCK_EXPORT_DELETED", Duration::from_millis(500))
        .is_empty());
    assert_eq!(q.ok("query-block-exports", json!({})), json!([]));
    assert!(!sock.exists(), "socket removed with the export");
    assert!(
        Client::connect(&sock, 1, false).is_err(),
        "nobody listens any more"
    );
    // (libblkio does not watch the socket: the dropped client would only
    // notice on its own timeout, so it is not asked to do I/O here.)
    drop(c);
    // The id is free again; a safe removal with no frontend succeeds at once.
    q.ok("block-export-add", vu("v0", json!({})));
    q.ok("block-export-del", json!({"id": "v0"}));
    q.wait_event("BLOCK_EXPORT_DELETED", Duration::from_secs(5))
        .expect("second BLOCK_EXPORT_DELETED");
}

#[test]
fn nbd_server_stop_leaves_vhost_user_blk_exports() {
    let d = daemon_on(&binary());
    let mut q = d.qmp();
    q.ok(
        "nbd-server-start",
        json!({"addr": {"type": "unix", "data": {"path": "nbd.sock"}}}),
    );
    q.ok(
        "block-export-add",
        json!({"type": "nbd", "id": "n0", "node-name": "disk0"}),
    );
    q.ok("block-export-add", vu("v0", json!({"writable": true})));
    q.ok("nbd-server-stop", json!({}));
    let ev = q
        .wait_event("BLOCK_EXPORT_DELETED", Duration::from_secs(5))
        .expect("nbd export deleted");
    assert_eq!(ev["data"], json!({"id": "n0"}));
    let list = q.ok("query-block-exports", json!({}));
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["id"], "v0");
    let mut c = Client::connect(&d.path("vhost.sock"), 1, false).expect("still served");
    c.queues[0].write(MIB, &pattern(512, 8)).expect("write");
    assert_eq!(c.queues[0].read(MIB, 512).expect("read"), pattern(512, 8));
    // quit removes it too, after its event.
    drop(c);
    let r = q.send(&json!({"execute": "quit"}));
    assert!(reply_to_result(r).is_ok());
}

#[test]
fn vhost_user_blk_on_the_command_line() {
    let dir = scratch();
    make_sparse(&dir.path().join("disk.img"), 2 * MIB);
    let d = Daemon::start(
        dir,
        &[
            "--blockdev",
            "driver=file,node-name=disk0,filename={dir}/disk.img",
            "--export",
            "type=vhost-user-blk,id=v0,node-name=disk0,addr.type=unix,addr.path={dir}/vu.sock,writable=on,logical-block-size=4k",
        ],
    );
    let mut c = Client::connect(&d.path("vu.sock"), 1, false).expect("blkio connects");
    assert_eq!(c.capacity(), 2 * MIB);
    assert_eq!(c.block_size(), 4096);
    c.queues[0].write(4096, &pattern(4096, 4)).expect("write");
    assert_eq!(
        read_region(&d.path("disk.img"), 4096, 4096),
        pattern(4096, 4)
    );
    // The default queue count is the number of CPUs we may run on.
    if !is_qsd() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        drop(c);
        let c = Client::connect(&d.path("vu.sock"), cpus, false).expect("one queue per CPU");
        assert_eq!(
            c.blkio.get_i32("max-queues").expect("max-queues") as usize,
            cpus
        );
    }
}

#[test]
fn vhost_user_blk_cli_errors_match_qsd() {
    if skip_unless_comparing("vhost-user-blk command-line errors compared with QSD") {
        return;
    }
    let cases = [
        "addr.type=unix,addr.path={dir}/v.sock,logical-block-size=abc",
        "addr.type=unix,addr.path={dir}/v.sock,num-queues=70000",
        "addr.type=unix,addr.path={dir}/v.sock,num-queues=0",
        "addr.type=inet,addr.host=127.0.0.1,addr.port=0",
        "addr.type=unix,addr.path={dir}/v.sock,bogus=1",
    ];
    for case in cases {
        let msg = |bin: &Path| -> String {
            let dir = scratch();
            make_sparse(&dir.path().join("disk.img"), MIB);
            let export = format!("type=vhost-user-blk,id=v0,node-name=disk0,{case}");
            let args = [
                "--blockdev",
                "driver=file,node-name=disk0,filename={dir}/disk.img",
                "--export",
                &export,
            ];
            let d = dir.path().to_path_buf();
            match Daemon::try_start_bin(bin, dir, &args) {
                Ok(_) => panic!("{} accepted {case}", bin.display()),
                Err(e) => {
                    // "prog: --export ...: message": compare the message.
                    let last = e.stderr.lines().last().unwrap_or("").to_string();
                    let msg = last.rsplit(": ").next().unwrap_or("").to_string();
                    msg.replace(&d.to_string_lossy().to_string(), "{dir}")
                }
            }
        };
        assert_eq!(
            msg(&binary()),
            msg(Path::new(daemon::QSD_BIN)),
            "--export {case}"
        );
    }
}

#[test]
fn vhost_user_blk_on_a_socket_handed_with_getfd() {
    if skip_on_qsd("getfd") {
        return;
    }
    let d = daemon_on(&binary());
    let mut q = d.qmp();
    let path = d.path("handed.sock");
    let handed = ringstor_tests::inherit::unix_listener(&path);
    let r = q.send_with_fds(
        &json!({"execute": "getfd", "arguments": {"fdname": "vu"}}),
        &[std::os::fd::AsRawFd::as_raw_fd(&handed)],
    );
    assert_eq!(r["return"], json!({}), "{r}");
    drop(handed);
    q.ok(
        "block-export-add",
        vu(
            "v0",
            json!({"addr": {"type": "fd", "str": "vu"}, "writable": true}),
        ),
    );
    let mut c = Client::connect(&path, 1, false).expect("served on the handed socket");
    c.queues[0].write(0, &pattern(4096, 6)).expect("write");
    assert_eq!(c.queues[0].read(0, 4096).expect("read"), pattern(4096, 6));
    drop(c);
    // An fd name nobody handed over is refused.
    let e = q.err(
        "block-export-add",
        vu("v1", json!({"addr": {"type": "fd", "str": "nope"}})),
    );
    assert_eq!(e.class, "GenericError");
}
