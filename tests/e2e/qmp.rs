//! QMP monitor behaviour: negotiation, errors, queries, objects, events, quit.

use ringstor_tests::qmp::reply_to_result;
use ringstor_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn plain() -> DiskDaemon {
    disk_daemon(4 * MIB, Fill::Sparse, &[])
}

/// Commands every QSD-compatible binary must list in `query-commands`.
const SUPPORTED: &[&str] = &[
    "qmp_capabilities",
    "query-version",
    "query-commands",
    "quit",
    "blockdev-add",
    "blockdev-del",
    "query-named-block-nodes",
    "object-add",
    "object-del",
    "nbd-server-start",
    "nbd-server-stop",
    "nbd-server-add",
    "nbd-server-remove",
    "block-export-add",
    "block-export-del",
    "query-block-exports",
];

#[test]
fn iothread_object_is_created() {
    let dd = plain();
    let mut q = dd.d.qmp();
    if is_qsd() {
        // QSD has no query-iothreads; the object shows up in the QOM tree.
        let list = q.ok("qom-list", json!({"path": "/objects"}));
        assert!(
            list.as_array()
                .expect("qom-list array")
                .iter()
                .any(|p| p["name"] == "io0" && p["type"] == "child<iothread>"),
            "io0 not in /objects: {list}"
        );
        return;
    }
    let io0 = query_iothread(&mut q, "io0");
    let tid = io0["thread-id"].as_u64().expect("thread-id is a number");
    assert!(
        std::path::Path::new(&format!("/proc/{}/task/{tid}", dd.d.pid())).exists(),
        "thread-id {tid} is not a thread of the daemon"
    );
}

#[test]
fn iothread_cpu_pinning_ringstor() {
    if skip_on_qsd("iothread cpu property and query-iothreads cpu field") {
        return;
    }
    let dd = disk_daemon(MIB, Fill::Sparse, &["--object", "iothread,id=pin0,cpu=0"]);
    let mut q = dd.d.qmp();
    let t = query_iothread(&mut q, "pin0");
    assert_eq!(t["cpu"], json!(0), "cpu field of pin0: {t}");
    let tid = t["thread-id"].as_u64().expect("thread-id");
    let allowed = thread_cpus_allowed(dd.d.pid(), tid);
    assert_eq!(allowed, "0", "iothread pin0 must be pinned to cpu 0 only");
}

#[test]
fn named_block_nodes_and_blockdev_add_del() {
    let dd = plain();
    let mut q = dd.d.qmp();
    let nodes = q.ok("query-named-block-nodes", json!({}));
    let disk0 = nodes
        .as_array()
        .expect("array")
        .iter()
        .find(|n| n["node-name"] == "disk0")
        .unwrap_or_else(|| panic!("disk0 missing: {nodes}"))
        .clone();
    assert_eq!(disk0["drv"], "file");
    assert_eq!(disk0["ro"], false);
    assert_eq!(disk0["image"]["virtual-size"], json!(4 * MIB));
    assert_eq!(disk0["file"], json!(dd.img.to_string_lossy()));

    let n0 = json!({"driver": "null-co", "node-name": "n0", "size": MIB});
    q.ok("blockdev-add", n0.clone());
    let e = q.err("blockdev-add", n0);
    assert_eq!(e.class, "GenericError");
    assert_eq!(e.desc, "Duplicate nodes with node-name='n0'");
    let nodes = q.ok("query-named-block-nodes", json!({}));
    assert!(nodes
        .as_array()
        .expect("array")
        .iter()
        .any(|n| n["node-name"] == "n0"));
    q.ok("blockdev-del", json!({"node-name": "n0"}));
    let nodes = q.ok("query-named-block-nodes", json!({}));
    assert!(!nodes
        .as_array()
        .expect("array")
        .iter()
        .any(|n| n["node-name"] == "n0"));

    let e = q.err("blockdev-add", json!({"driver": "null-co", "size": MIB}));
    assert_eq!(e.class, "GenericError");
    assert_eq!(e.desc, "'node-name' must be specified for the root node");
}

#[test]
fn error_classes() {
    let dd = plain();
    let mut q = dd.d.qmp();
    let e = q.err("no-such-command", json!({}));
    assert_eq!(e.class, "CommandNotFound");
    assert_eq!(e.desc, "The command no-such-command has not been found");
    let e = q.err("blockdev-del", json!({}));
    assert_eq!(e.class, "GenericError");
    assert_eq!(e.desc, "Parameter 'node-name' is missing");
    let e = q.err("blockdev-del", json!({"node-name": "nope"}));
    assert_eq!(e.class, "GenericError");
    assert_eq!(e.desc, "Failed to find node with node-name='nope'");
    let e = q.err("query-version", json!({"x": 1}));
    assert_eq!(e.class, "GenericError");
    assert_eq!(e.desc, "Parameter 'x' is unexpected");
    let e = q.err("qmp_capabilities", json!({}));
    assert_eq!(e.class, "CommandNotFound");
    assert_eq!(
        e.desc,
        "Capabilities negotiation is already complete, command ignored"
    );
}

#[test]
fn commands_refused_before_capabilities() {
    let dd = plain();
    let mut q = Qmp::connect_raw(dd.d.qmp_path());
    let g = &q.greeting["QMP"];
    assert!(g["version"]["qemu"]["major"].is_u64(), "greeting: {g}");
    assert!(g["capabilities"].is_array(), "greeting: {g}");
    let e = q.err("query-version", json!({}));
    assert_eq!(e.class, "CommandNotFound");
    assert_eq!(
        e.desc,
        "Expecting capabilities negotiation with 'qmp_capabilities'"
    );
    q.ok("qmp_capabilities", json!({}));
    q.ok("query-version", json!({}));
}

#[test]
fn id_is_echoed() {
    let dd = plain();
    let mut q = dd.d.qmp();
    let r = q.send(&json!({"execute": "query-version", "id": "abc"}));
    assert_eq!(r["id"], "abc");
    assert!(r.get("return").is_some(), "{r}");
    let r = q.send(&json!({"execute": "nope", "id": {"x": [1, 2]}}));
    assert_eq!(r["id"], json!({"x": [1, 2]}));
    assert_eq!(r["error"]["class"], "CommandNotFound");
}

#[test]
fn malformed_input_is_answered_and_monitor_survives() {
    let dd = plain();
    let mut q = dd.d.qmp();
    for (input, desc) in [
        (
            &b"{\"execute\": }\n"[..],
            "JSON parse error, expecting value",
        ),
        (b"[1, 2]\n", "QMP input must be a JSON object"),
        (b"{\"foo\": 1}\n", "QMP input member 'foo' is unexpected"),
    ] {
        q.send_raw(input);
        let e = reply_to_result(q.read_reply()).expect_err("malformed input must fail");
        assert_eq!(
            e.class,
            "GenericError",
            "for {:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(e.desc, desc, "for {:?}", String::from_utf8_lossy(input));
        q.ok("query-version", json!({}));
    }
}

#[test]
fn query_version_and_commands() {
    let dd = plain();
    let mut q = dd.d.qmp();
    let v = q.ok("query-version", json!({}));
    assert!(
        v["qemu"]["major"].is_u64() && v["qemu"]["minor"].is_u64(),
        "{v}"
    );
    assert!(
        v["qemu"]["micro"].is_u64() && v["package"].is_string(),
        "{v}"
    );
    assert_eq!(
        v["package"],
        json!(q.package()),
        "greeting and query-version agree"
    );
    let cmds = q.ok("query-commands", json!({}));
    let names: Vec<&str> = cmds
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for c in SUPPORTED {
        assert!(names.contains(c), "query-commands lacks {c}: {names:?}");
    }
    if !is_qsd() {
        assert!(
            names.contains(&"query-iothreads"),
            "ringstor lists query-iothreads"
        );
    }
}

#[test]
fn object_add_del_iothread() {
    let dd = plain();
    let mut q = dd.d.qmp();
    q.ok("object-add", json!({"qom-type": "iothread", "id": "io1"}));
    let e = q.err("object-add", json!({"qom-type": "iothread", "id": "io1"}));
    assert_eq!(e.class, "GenericError");
    q.ok("object-del", json!({"id": "io1"}));
    let e = q.err("object-del", json!({"id": "io1"}));
    assert_eq!(e.class, "GenericError");
    assert_eq!(e.desc, "object 'io1' not found");
    if !is_qsd() {
        let threads = q.ok("query-iothreads", json!({}));
        assert!(!threads
            .as_array()
            .expect("array")
            .iter()
            .any(|t| t["id"] == "io1"));
    }
}

#[test]
fn two_monitors_both_get_events() {
    let mut args = cli_export_args("");
    args.extend([
        "--chardev".to_string(),
        "socket,id=mon2,path={dir}/qmp2.sock,server=on,wait=off".to_string(),
        "--monitor".to_string(),
        "chardev=mon2".to_string(),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let dd = disk_daemon(MIB, Fill::Sparse, &refs);
    let mut q1 = dd.d.qmp();
    let mut q2 = Qmp::connect(&dd.d.path("qmp2.sock"));
    q1.ok("block-export-del", json!({"id": "e0"}));
    for q in [&mut q1, &mut q2] {
        let ev = q
            .wait_event("BLOCK_EXPORT_DELETED", Duration::from_secs(10))
            .expect("BLOCK_EXPORT_DELETED on every monitor");
        assert_eq!(ev["data"]["id"], "e0");
        assert!(ev["timestamp"]["seconds"].is_u64(), "{ev}");
        assert!(ev["timestamp"]["microseconds"].is_u64(), "{ev}");
    }
}

#[test]
fn quit_exits_zero() {
    let mut dd = plain();
    let mut q = dd.d.qmp();
    q.ok("quit", json!({}));
    let status =
        dd.d.wait_exit(Duration::from_secs(10))
            .expect("daemon exits after quit");
    assert_eq!(status.code(), Some(0), "stderr: {}", dd.d.stderr());
}

/// Run the same conversation on the binary under test and on QSD; compare
/// error classes and reply shapes (extra keys in ringstor's replies are fine).
#[test]
fn same_conversation_as_qsd() {
    if skip_unless_comparing("QMP conversation compared with QSD") {
        return;
    }
    let conversation: Vec<Value> = vec![
        json!({"execute": "query-version"}),
        json!({"execute": "no-such-command"}),
        json!({"execute": "blockdev-del"}),
        json!({"execute": "blockdev-del", "arguments": {"node-name": "nope"}}),
        json!({"execute": "query-named-block-nodes"}),
        json!({"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n0", "size": 1048576}}),
        json!({"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n0", "size": 1048576}}),
        json!({"execute": "blockdev-del", "arguments": {"node-name": "n0"}}),
        json!({"execute": "object-add", "arguments": {"qom-type": "iothread", "id": "io1"}}),
        json!({"execute": "object-del", "arguments": {"id": "io1"}}),
        json!({"execute": "object-del", "arguments": {"id": "io1"}}),
        json!({"execute": "query-block-exports"}),
        json!({"execute": "block-export-del", "arguments": {"id": "e0"}}),
        json!({"execute": "block-export-del", "arguments": {"id": "e0"}}),
        json!({"execute": "nbd-server-stop"}),
        json!({"execute": "nbd-server-stop"}),
    ];
    let args = [
        "--blockdev",
        "driver=file,node-name=disk0,filename={dir}/disk.img",
    ];
    let mut full: Vec<&str> = args.to_vec();
    let nbd = cli_export_args("");
    full.extend(nbd.iter().map(String::as_str));
    compare_with_qsd(&full, &conversation);
}
