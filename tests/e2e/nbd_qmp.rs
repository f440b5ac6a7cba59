//! NBD protocol details (libnbd via /usr/bin/python3, raw extended headers)
//! and the NBD/export QMP lifecycle.

use ringstor_tests::nbdraw::{RawNbd, OPT_EXTENDED_HEADERS, REP_ACK};
use ringstor_tests::*;
use serde_json::{json, Value};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

const MIB: u64 = 1 << 20;
const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// libnbd checks, printing one JSON object.
const PROTOCOL_PY: &str = r#"
import nbd, json, sys, errno
uri = sys.argv[1]
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(uri)
out = {"structured": h.get_structured_replies_negotiated(),
       "meta": h.can_meta_context("base:allocation"),
       "multi_conn": h.can_multi_conn(), "size": h.get_size()}
ext = []
def cb(ctx, off, entries, err):
    ext.append([ctx, off, list(entries)])
    return 0
h.block_status(4 * 1048576, 0, cb)
out["extents"] = ext
one = []
def cb1(ctx, off, entries, err):
    one.append(list(entries))
    return 0
h.block_status(4 * 1048576, 0, cb1, nbd.CMD_FLAG_REQ_ONE)
out["req_one"] = one
try:
    h.pread(4096, h.get_size() - 1024)
    out["past_end"] = "ok"
except nbd.Error as e:
    out["past_end"] = e.errnum
out["data"] = h.pread(4096, 1048576).hex()
h.shutdown()
print(json.dumps(out))
"#;

#[test]
fn libnbd_structured_block_status_req_one_past_end() {
    for dd in [
        cli_export(4 * MIB, Fill::Sparse, ""),
        qmp_export(4 * MIB, Fill::Sparse, json!({})),
    ] {
        let data = pattern(4096, 21);
        write_at(&dd.img, MIB, &data);
        let r = run_python(PROTOCOL_PY, &[&dd.uri("disk0")]).success("libnbd script");
        let v: Value = serde_json::from_str(r.stdout.trim()).expect("script JSON");
        assert_eq!(v["structured"], true);
        assert_eq!(v["meta"], true);
        assert_eq!(v["multi_conn"], true);
        assert_eq!(v["size"], json!(4 * MIB));
        // entries are (length, flags) pairs; 3 = HOLE|ZERO, 0 = data.
        let mut entries = Vec::new();
        for chunk in v["extents"].as_array().expect("extents") {
            assert_eq!(chunk[0], "base:allocation");
            entries.extend(chunk[2].as_array().expect("entries").iter().cloned());
        }
        assert_eq!(
            entries,
            [
                json!(MIB),
                json!(3),
                json!(4096),
                json!(0),
                json!(3 * MIB - 4096),
                json!(3)
            ]
        );
        let one = v["req_one"].as_array().expect("req_one");
        assert_eq!(one.len(), 1, "REQ_ONE gives one reply chunk: {one:?}");
        assert_eq!(one[0], json!([MIB, 3]), "REQ_ONE gives one extent");
        assert_eq!(v["past_end"], json!(libc::EINVAL), "pread past end fails");
        let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(v["data"], json!(hex));
    }
}

const WRITE_PY: &str = r#"
import nbd, sys, json
h = nbd.NBD()
h.set_strict_mode(0)
h.connect_uri(sys.argv[1])
out = {"ro": h.is_read_only()}
try:
    h.pwrite(b"x" * 512, 0)
    out["write"] = "ok"
except nbd.Error as e:
    out["write"] = e.errnum
print(json.dumps(out))
"#;

#[test]
fn write_to_readonly_export_fails() {
    let cli = disk_daemon(
        MIB,
        Fill::Pattern(1),
        &[
            "--nbd-server",
            "addr.type=unix,addr.path={dir}/nbd.sock",
            "--export",
            "type=nbd,id=e0,node-name=disk0,name=disk0",
        ],
    );
    let qmp = qmp_export(MIB, Fill::Pattern(1), json!({"writable": false}));
    for dd in [cli, qmp] {
        let r = run_python(WRITE_PY, &[&dd.uri("disk0")]).success("write script");
        let v: Value = serde_json::from_str(r.stdout.trim()).expect("JSON");
        assert_eq!(v["ro"], true);
        // The NBD spec says EPERM; QSD 10.0 answers EINVAL. Either is accepted.
        let errno = &v["write"];
        assert!(
            *errno == json!(libc::EPERM) || *errno == json!(libc::EINVAL),
            "write on read-only export must fail with EPERM/EINVAL, got {errno}"
        );
        assert_eq!(
            read_region(&dd.img, 0, 512),
            pattern(512, 1),
            "image unchanged"
        );
    }
}

#[test]
fn extended_headers_read() {
    let dd = cli_export(MIB, Fill::Pattern(4), "");
    let mut c = RawNbd::greet(&dd.nbd_sock(), Duration::from_secs(10)).expect("greeting");
    assert_eq!(c.server_flags & 1, 1, "server is fixed-newstyle");
    c.send_opt(OPT_EXTENDED_HEADERS, &[]);
    let r = c.read_opt_reply();
    assert_eq!(
        (r.option, r.rtype),
        (OPT_EXTENDED_HEADERS, REP_ACK),
        "{r:?}"
    );
    let go = c.go("disk0");
    assert_eq!(go.last().map(|r| r.rtype), Some(REP_ACK), "{go:?}");
    assert_eq!(c.size, MIB);
    let (data, types) = c.ext_read(0x1234_5678_9abc, 4096, 65536);
    assert_eq!(data, pattern(MIB as usize, 4)[4096..4096 + 65536]);
    assert!(!types.is_empty());
    c.ext_disconnect();
}

#[test]
fn max_connections_one() {
    let dd = qmp_export(MIB, Fill::Sparse, json!({}));
    let mut q = dd.d.qmp();
    // Restart the server with a connection limit.
    q.ok("nbd-server-stop", json!({}));
    let sock = dd.nbd_sock();
    let addr = json!({"type": "unix", "data": {"path": sock}});
    q.ok(
        "nbd-server-start",
        json!({"addr": addr, "max-connections": 1}),
    );
    q.ok(
        "block-export-add",
        json!({"type": "nbd", "id": "e0", "node-name": "disk0", "name": "disk0"}),
    );
    let mut first = RawNbd::greet(&sock, Duration::from_secs(10)).expect("first client");
    first.go("disk0");
    assert_eq!(
        first.tflags & FLAG_CAN_MULTI_CONN,
        0,
        "no multi-conn with limit 1"
    );
    // QSD stops accepting: the second client gets no greeting (or is closed).
    assert!(
        RawNbd::greet(&sock, Duration::from_secs(1)).is_err(),
        "second client must not be served"
    );
}

/// Holds an NBD connection open in a child python process until killed.
fn hold_connection(uri: &str) -> std::process::Child {
    let script = "import nbd,sys,time\nh=nbd.NBD()\nh.connect_uri(sys.argv[1])\nprint('up',flush=True)\n\
                  time.sleep(30)\ntry:\n h.pread(512,0); print('alive')\nexcept nbd.Error as e: print('gone')\n";
    let mut c = Command::new(PYTHON)
        .args(["-c", script, uri])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python holder");
    let mut buf = [0u8; 3];
    c.stdout
        .as_mut()
        .expect("stdout")
        .read_exact(&mut buf)
        .expect("holder connected");
    assert_eq!(&buf, b"up\n");
    c
}

#[test]
fn export_del_safe_then_hard() {
    let dd = cli_export(MIB, Fill::Sparse, "");
    let mut q = dd.d.qmp();
    let mut holder = hold_connection(&dd.uri("disk0"));
    for args in [json!({"id": "e0"}), json!({"id": "e0", "mode": "safe"})] {
        let e = q.err("block-export-del", args);
        assert_eq!(e.class, "GenericError");
        assert_eq!(e.desc, "export 'e0' still in use");
    }
    q.ok("block-export-del", json!({"id": "e0", "mode": "hard"}));
    let list = q.ok("query-block-exports", json!({}));
    match list.as_array().expect("array").as_slice() {
        [] => {}
        [e] => assert_eq!(e["shutting-down"], true, "{e}"),
        more => panic!("unexpected exports {more:?}"),
    }
    let evs = q.collect_events("BLOCK_EXPORT_DELETED", Duration::from_secs(2));
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0]["data"], json!({"id": "e0"}));
    // The client was disconnected: a fresh connection finds no export.
    let r = run("nbdinfo", &["--size", &dd.uri("disk0")], TOOL_TIMEOUT);
    assert!(!r.status.success(), "export must be gone");
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn hard_del_disconnects_client() {
    let dd = cli_export(MIB, Fill::Sparse, "");
    let mut q = dd.d.qmp();
    let script = "import nbd,sys,time\nh=nbd.NBD()\nh.connect_uri(sys.argv[1])\nprint('up',flush=True)\n\
                  sys.stdin.readline()\ntry:\n h.pread(512,0); print('alive')\nexcept nbd.Error as e: print('gone')\n";
    let mut c = Command::new(PYTHON)
        .args(["-c", script, &dd.uri("disk0")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python client");
    let mut out = c.stdout.take().expect("stdout");
    let mut buf = [0u8; 3];
    out.read_exact(&mut buf).expect("client up");
    q.ok("block-export-del", json!({"id": "e0", "mode": "hard"}));
    q.wait_event("BLOCK_EXPORT_DELETED", Duration::from_secs(10))
        .expect("export deleted");
    drop(c.stdin.take());
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("client output");
    let _ = c.wait();
    assert_eq!(rest.trim(), "gone", "client must be disconnected");
}

#[test]
fn nbd_qmp_errors() {
    let dd = disk_daemon(MIB, Fill::Sparse, &[]);
    let mut q = dd.d.qmp();
    let sock = dd.nbd_sock();
    let exp = json!({"type": "nbd", "id": "e0", "node-name": "disk0", "name": "disk0"});
    let e = q.err("block-export-add", exp.clone());
    assert_eq!(
        (e.class.as_str(), e.desc.as_str()),
        ("GenericError", "NBD server not running")
    );
    let e = q.err(
        "nbd-server-start",
        json!({"addr": {"type": "unix", "path": sock}}),
    );
    assert_eq!(e.desc, "Parameter 'addr.data' is missing");
    let addr = json!({"type": "unix", "data": {"path": sock}});
    q.ok("nbd-server-start", json!({"addr": addr}));
    let e = q.err("nbd-server-start", json!({"addr": addr}));
    assert_eq!(
        (e.class.as_str(), e.desc.as_str()),
        ("GenericError", "NBD server already running")
    );
    q.ok("block-export-add", exp.clone());
    let e = q.err(
        "block-export-add",
        json!({"type": "nbd", "id": "e0", "node-name": "disk0", "name": "x"}),
    );
    assert_eq!(e.desc, "Block export id 'e0' is already in use");
    let e = q.err(
        "block-export-add",
        json!({"type": "nbd", "id": "e1", "node-name": "disk0", "name": "disk0"}),
    );
    assert_eq!(e.desc, "NBD server already has export named 'disk0'");
    let e = q.err(
        "block-export-add",
        json!({"type": "nbd", "id": "e2", "node-name": "nope", "name": "n"}),
    );
    assert_eq!(e.desc, "Cannot find device='' nor node-name='nope'");
    let e = q.err(
        "block-export-add",
        json!({"type": "nbd", "id": "e3", "node-name": "disk0", "name": "e3", "iothread": "nope"}),
    );
    assert_eq!(e.desc, "iothread \"nope\" not found");
    let e = q.err("block-export-del", json!({"id": "zz"}));
    assert_eq!(
        (e.class.as_str(), e.desc.as_str()),
        ("GenericError", "Export 'zz' is not found")
    );
    let e = q.err("block-export-del", json!({"id": "e0", "mode": "bogus"}));
    assert_eq!(e.desc, "Parameter 'mode' does not accept value 'bogus'");
    let list = q.ok("query-block-exports", json!({}));
    assert_eq!(
        list,
        json!([{"node-name": "disk0", "shutting-down": false, "type": "nbd", "id": "e0"}])
    );
    // Deprecated but supported.
    q.ok(
        "nbd-server-add",
        json!({"device": "disk0", "name": "legacy"}),
    );
    let size =
        run("nbdinfo", &["--size", &dd.uri("legacy")], TOOL_TIMEOUT).success("legacy export");
    assert_eq!(size.stdout.trim(), MIB.to_string());
    let e = q.err(
        "nbd-server-add",
        json!({"device": "disk0", "name": "legacy"}),
    );
    assert_eq!(e.desc, "Block export id 'legacy' is already in use");
    q.ok("nbd-server-remove", json!({"name": "legacy"}));
    let ev = q
        .wait_event("BLOCK_EXPORT_DELETED", Duration::from_secs(5))
        .expect("event");
    assert_eq!(ev["data"], json!({"id": "legacy"}));
    let e = q.err("nbd-server-remove", json!({"name": "legacy"}));
    assert_eq!(e.desc, "Export 'legacy' is not found");
    q.ok("nbd-server-stop", json!({}));
    let ev = q
        .wait_event("BLOCK_EXPORT_DELETED", Duration::from_secs(5))
        .expect("event");
    assert_eq!(ev["data"], json!({"id": "e0"}));
    let e = q.err("nbd-server-stop", json!({}));
    assert_eq!(
        (e.class.as_str(), e.desc.as_str()),
        ("GenericError", "NBD server not running")
    );
    let r = run("nbdinfo", &["--size", &dd.uri("disk0")], TOOL_TIMEOUT);
    assert!(!r.status.success(), "no server after nbd-server-stop");
}

#[test]
fn iothread_list_export_ringstor() {
    if skip_on_qsd("iothread export option given as a list") {
        return;
    }
    let dd = disk_daemon(MIB, Fill::Pattern(2), &["--object", "iothread,id=io1"]);
    let mut q = dd.d.qmp();
    q.ok(
        "nbd-server-start",
        json!({"addr": {"type": "unix", "data": {"path": dd.nbd_sock()}}}),
    );
    q.ok("block-export-add", json!({"type": "nbd", "id": "mq", "node-name": "disk0", "name": "disk0", "iothread": ["io0", "io1"]}));
    let out = run(
        "nbdcopy",
        &[&dd.uri("disk0"), &dd.d.path("out.img").to_string_lossy()],
        TOOL_TIMEOUT,
    )
    .success("nbdcopy out");
    assert!(out.status.success());
    assert_eq!(file_sha256(&dd.d.path("out.img")), file_sha256(&dd.img));
}

#[test]
fn nbd_conversation_as_qsd() {
    if skip_unless_comparing("NBD QMP conversation compared with QSD") {
        return;
    }
    let conv: Vec<Value> = [
        json!({"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e0", "node-name": "disk0", "name": "disk0"}}),
        json!({"execute": "query-block-exports"}),
        json!({"execute": "nbd-server-stop"}),
        json!({"execute": "block-export-del", "arguments": {"id": "e0", "mode": "bogus"}}),
        json!({"execute": "nbd-server-add", "arguments": {"device": "nope", "name": "x"}}),
        json!({"execute": "nbd-server-remove", "arguments": {"name": "x"}}),
    ]
    .to_vec();
    compare_with_qsd(
        &[
            "--blockdev",
            "driver=file,node-name=disk0,filename={dir}/disk.img",
        ],
        &conv,
    );
}
