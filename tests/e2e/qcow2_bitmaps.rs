//! Persistent dirty bitmaps in qcow2 images, between ringstor and QEMU:
//! bitmaps ringstor stores are what `qemu-img info` lists and what QSD
//! exports through `qemu:dirty-bitmap`, and the reverse; kill -9 leaves
//! `qemu-img check` clean with the bitmaps inconsistent, reported as QSD
//! reports them; `remove` takes a bitmap out of the image; QSD's errors.

use crate::qcow2::{check, s, tool};
use ringstor_tests::bitmaps::{expected_runs, nbdinfo_map, qemu_io, Run};
use ringstor_tests::daemon::QSD_BIN;
use ringstor_tests::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 64 * MIB;

/// A daemon with qcow2 node `d` on `img`, exported writable as `d`.
struct Node {
    d: Daemon,
    q: Qmp,
}

fn qsd() -> PathBuf {
    PathBuf::from(QSD_BIN)
}

impl Node {
    fn open(bin: &Path, img: &Path) -> Node {
        let blockdev = format!("driver=file,node-name=f,filename={}", s(img));
        let d = Daemon::start_bin(
            bin,
            scratch(),
            &[
                "--blockdev",
                &blockdev,
                "--blockdev",
                "driver=qcow2,node-name=d,file=f",
                "--nbd-server",
                "addr.type=unix,addr.path={dir}/nbd.sock",
                "--export",
                "type=nbd,id=e,node-name=d,name=d,writable=on",
            ],
        );
        let q = d.qmp();
        Node { d, q }
    }

    fn uri(&self, name: &str) -> String {
        nbd_uri(name, &self.d.path("nbd.sock"))
    }

    /// `dirty-bitmaps` of node `d` in `query-named-block-nodes`.
    fn bitmaps(&mut self) -> Value {
        let nodes = self.q.ok("query-named-block-nodes", json!({}));
        nodes
            .as_array()
            .and_then(|l| l.iter().find(|n| n["node-name"] == "d"))
            .map(|n| n["dirty-bitmaps"].clone())
            .unwrap_or(Value::Null)
    }

    /// The runs of each bitmap in `names`, through a second export that
    /// carries them (nbdinfo --map=qemu:dirty-bitmap:NAME).
    fn maps(&mut self, names: &[&str]) -> Vec<Vec<Run>> {
        self.q.ok(
            "block-export-add",
            json!({"type": "nbd", "id": "m", "node-name": "d", "name": "m",
                   "writable": true, "bitmaps": names}),
        );
        let uri = self.uri("m");
        let out = names.iter().map(|n| nbdinfo_map(&uri, n)).collect();
        self.q.ok("block-export-del", json!({"id": "m"}));
        out
    }

    fn quit(mut self) {
        let _ = self.q.execute("quit", json!({}));
        assert!(
            self.d.wait_exit(Duration::from_secs(20)).is_some(),
            "daemon did not quit"
        );
    }

    fn kill9(mut self) {
        tool("kill", &["-9", &self.d.pid().to_string()]);
        assert!(self.d.wait_exit(Duration::from_secs(10)).is_some());
    }
}

/// `qemu-img check` exits 0 (no corruption, no leak).
fn check_clean(img: &Path, when: &str) {
    let r = check(img);
    assert!(r.status.success(), "qemu-img check {when}: {r:?}");
}

/// `(name, granularity, flags)` of the bitmaps `qemu-img info` lists.
fn info_bitmaps(img: &Path) -> Vec<(String, u64, Vec<String>)> {
    let out = tool("qemu-img", &["info", "-U", "--output=json", &s(img)]).stdout;
    let v: Value = serde_json::from_str(&out).expect("qemu-img info JSON");
    let list = v["format-specific"]["data"]["bitmaps"].as_array().cloned();
    list.unwrap_or_default()
        .iter()
        .map(|b| {
            let flags = b["flags"].as_array().cloned().unwrap_or_default();
            (
                b["name"].as_str().unwrap_or_default().to_string(),
                b["granularity"].as_u64().unwrap_or(0),
                flags
                    .iter()
                    .map(|f| f.as_str().unwrap_or_default().to_string())
                    .collect(),
            )
        })
        .collect()
}

fn bm(name: &str, g: u64, flags: &[&str]) -> (String, u64, Vec<String>) {
    let flags = flags.iter().map(|f| f.to_string()).collect();
    (name.to_string(), g, flags)
}

fn create(img: &Path, extra: &[&str]) {
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    args.extend_from_slice(extra);
    let p = s(img);
    args.push(&p);
    args.push("64M");
    tool("qemu-img", &args);
}

#[test]
fn qcow2_bitmaps_stored_by_ringstor_read_by_qemu_and_back() {
    if skip_on_qsd("compares ringstor's stored bitmaps with QSD's view") {
        return;
    }
    let keep = scratch();
    let img = keep.path().join("b.qcow2");
    create(&img, &[]);
    let mut n = Node::open(&binary(), &img);
    n.q.ok(
        "block-dirty-bitmap-add",
        json!({"node": "d", "name": "b", "persistent": true}),
    );
    n.q.ok(
        "block-dirty-bitmap-add",
        json!({"node": "d", "name": "c", "persistent": true, "granularity": 4096}),
    );
    let first = [
        (MIB, 64 * 1024),
        (10 * MIB + 100, 5000),
        (50 * MIB, 2 * MIB),
    ];
    let uri = n.uri("d");
    qemu_io(
        &uri,
        &["write 1M 64k", "write 10485860 5000", "write 50M 2M"],
    );
    n.q.ok(
        "block-dirty-bitmap-disable",
        json!({"node": "d", "name": "c"}),
    );
    qemu_io(&uri, &["write 30M 4k"]);
    let mut all = first.to_vec();
    all.push((30 * MIB, 4096));
    let want_b = expected_runs(SIZE, 65536, &all);
    let want_c = expected_runs(SIZE, 4096, &first);
    assert_eq!(n.maps(&["b", "c"]), vec![want_b.clone(), want_c.clone()]);
    n.quit();

    // What QEMU sees: both bitmaps, b recording ("auto"), c not.
    assert_eq!(
        info_bitmaps(&img),
        vec![bm("c", 4096, &[]), bm("b", 65536, &["auto"])]
    );
    check_clean(&img, "after ringstor stored the bitmaps");
    let mut q = Node::open(&qsd(), &img);
    let qsd_view = q.bitmaps();
    assert_eq!(q.maps(&["b", "c"]), vec![want_b.clone(), want_c.clone()]);
    q.quit();
    check_clean(&img, "after QSD");

    // Back in ringstor: the same bits and flags as QSD showed.
    let mut n = Node::open(&binary(), &img);
    assert_eq!(n.bitmaps(), qsd_view);
    assert_eq!(
        info_bitmaps(&img),
        vec![
            bm("c", 4096, &["in-use"]),
            bm("b", 65536, &["in-use", "auto"])
        ],
        "a read-write open marks the bitmaps in use"
    );
    assert_eq!(n.maps(&["b", "c"]), vec![want_b, want_c]);
    n.kill9();
    check_clean(&img, "after kill -9");
    let copy = keep.path().join("copy.qcow2");
    std::fs::copy(&img, &copy).expect("copy image");

    // Inconsistent, as QSD reports them on the same image.
    let mut n = Node::open(&binary(), &img);
    let ours = n.bitmaps();
    let mut q = Node::open(&qsd(), &copy);
    assert_eq!(ours, q.bitmaps());
    q.quit();
    assert_eq!(ours[0]["inconsistent"], true, "{ours}");
    assert_eq!(
        n.q.err(
            "block-dirty-bitmap-clear",
            json!({"node": "d", "name": "b"})
        )
        .desc,
        "Bitmap 'b' is inconsistent and cannot be used"
    );
    // Removing an inconsistent bitmap is how QEMU lets users get rid of it.
    n.q.ok(
        "block-dirty-bitmap-remove",
        json!({"node": "d", "name": "b"}),
    );
    assert_eq!(info_bitmaps(&img), vec![bm("c", 4096, &["in-use"])]);
    n.quit();
    check_clean(&img, "after remove");
    assert_eq!(info_bitmaps(&img), vec![bm("c", 4096, &["in-use"])]);
}

#[test]
fn qcow2_bitmaps_made_by_qemu_load_in_ringstor() {
    if skip_on_qsd("loads QEMU's bitmaps in ringstor") {
        return;
    }
    let keep = scratch();
    let img = keep.path().join("q.qcow2");
    create(&img, &["-o", "cluster_size=2M"]);
    let p = s(&img);
    tool("qemu-img", &["bitmap", "--add", "-g", "65536", &p, "b0"]);
    tool(
        "qemu-img",
        &["bitmap", "--add", "--disable", "-g", "16384", &p, "b1"],
    );
    tool(
        "qemu-io",
        &["-f", "qcow2", "-c", "write 3M 8k", "-c", "write 40M 1M", &p],
    );
    // One made by QSD, recording from the start.
    let mut q = Node::open(&qsd(), &img);
    q.q.ok(
        "block-dirty-bitmap-add",
        json!({"node": "d", "name": "b2", "persistent": true}),
    );
    qemu_io(&q.uri("d"), &["write 7M 512", "write 63M 1M"]);
    let qsd_view = q.bitmaps();
    let qsd_maps = q.maps(&["b0", "b1", "b2"]);
    q.quit();
    check_clean(&img, "after QSD");
    let b0 = expected_runs(
        SIZE,
        65536,
        &[
            (3 * MIB, 8192),
            (40 * MIB, MIB),
            (7 * MIB, 512),
            (63 * MIB, MIB),
        ],
    );
    let b2 = expected_runs(SIZE, 65536, &[(7 * MIB, 512), (63 * MIB, MIB)]);
    assert_eq!(qsd_maps[0], b0);
    assert_eq!(qsd_maps[1], expected_runs(SIZE, 16384, &[]));
    assert_eq!(qsd_maps[2], b2);

    let mut n = Node::open(&binary(), &img);
    assert_eq!(n.bitmaps(), qsd_view, "the bitmaps as QSD listed them");
    assert_eq!(n.maps(&["b0", "b1", "b2"]), qsd_maps);
    // Still recording: a write lands in b0 and b2, not in the disabled b1.
    qemu_io(&n.uri("d"), &["write 20M 4k"]);
    n.quit();
    check_clean(&img, "after ringstor");
    let mut q = Node::open(&qsd(), &img);
    let maps = q.maps(&["b0", "b1", "b2"]);
    q.quit();
    let b0 = expected_runs(
        SIZE,
        65536,
        &[
            (3 * MIB, 8192),
            (40 * MIB, MIB),
            (7 * MIB, 512),
            (63 * MIB, MIB),
            (20 * MIB, 4096),
        ],
    );
    let b2 = expected_runs(
        SIZE,
        65536,
        &[(7 * MIB, 512), (63 * MIB, MIB), (20 * MIB, 4096)],
    );
    assert_eq!(maps, vec![b0, expected_runs(SIZE, 16384, &[]), b2]);
    check_clean(&img, "after QSD again");
}

#[test]
fn qcow2_persistent_bitmap_errors_match_qsd() {
    if skip_on_qsd("compares ringstor's errors with QSD's") {
        return;
    }
    let attempts = [
        ("v2", json!({"node": "d", "name": "b", "persistent": true})),
        ("v3", json!({"node": "f", "name": "b", "persistent": true})),
        (
            "v3",
            json!({"node": "d", "name": "b", "persistent": true, "granularity": 256}),
        ),
        (
            "v3",
            json!({"node": "d", "name": "x".repeat(1024), "persistent": true}),
        ),
        ("v3", json!({"node": "d", "name": "b", "persistent": true})),
        ("v3", json!({"node": "d", "name": "b", "persistent": true})),
    ];
    let keep = scratch();
    let transcript = |bin: &Path, tag: &str| -> Vec<Value> {
        let v2 = keep.path().join(format!("{tag}-v2.qcow2"));
        create(&v2, &["-o", "compat=0.10"]);
        let v3 = keep.path().join(format!("{tag}-v3.qcow2"));
        create(&v3, &[]);
        let mut out = Vec::new();
        for img in [&v2, &v3] {
            let mut n = Node::open(bin, img);
            let tag = if img == &v2 { "v2" } else { "v3" };
            for (which, a) in &attempts {
                if *which == tag {
                    out.push(match n.q.execute("block-dirty-bitmap-add", a.clone()) {
                        Ok(v) => v,
                        Err(e) => json!({"class": e.class, "desc": e.desc}),
                    });
                }
            }
            out.push(n.bitmaps());
            n.quit();
        }
        check_clean(&v3, "after the errors");
        assert_eq!(info_bitmaps(&v3), vec![bm("b", 65536, &["auto"])]);
        out
    };
    let ours = transcript(&binary(), "ours");
    assert_eq!(
        ours[0]["desc"],
        "Can't make bitmap 'b' persistent in 'd': Cannot store dirty bitmaps in qcow2 v2 files"
    );
    assert_eq!(ours, transcript(&qsd(), "qsd"));
}

#[test]
fn qcow2_bitmaps_stored_at_blockdev_del_and_sigterm() {
    if skip_on_qsd("ringstor's close paths") {
        return;
    }
    let keep = scratch();
    let img = keep.path().join("c.qcow2");
    create(&img, &[]);
    // blockdev-del of the qcow2 node stores its bitmaps, the daemon lives on.
    let d = Daemon::start_bin(&binary(), scratch(), &[]);
    let mut q = d.qmp();
    q.ok(
        "blockdev-add",
        json!({"driver": "qcow2", "node-name": "d",
               "file": {"driver": "file", "filename": s(&img)}}),
    );
    q.ok(
        "block-dirty-bitmap-add",
        json!({"node": "d", "name": "kept", "persistent": true, "disabled": true}),
    );
    q.ok(
        "block-dirty-bitmap-add",
        json!({"node": "d", "name": "gone", "persistent": true}),
    );
    q.ok(
        "block-dirty-bitmap-remove",
        json!({"node": "d", "name": "gone"}),
    );
    assert_eq!(info_bitmaps(&img), vec![], "nothing stored before close");
    q.ok("blockdev-del", json!({"node-name": "d"}));
    assert_eq!(info_bitmaps(&img), vec![bm("kept", 65536, &[])]);
    check_clean(&img, "after blockdev-del");
    drop(q);
    drop(d);

    // SIGTERM is a clean quit: the bitmap is stored, not left in use.
    let mut n = Node::open(&binary(), &img);
    n.q.ok(
        "block-dirty-bitmap-enable",
        json!({"node": "d", "name": "kept"}),
    );
    qemu_io(&n.uri("d"), &["write 5M 64k"]);
    tool("kill", &["-TERM", &n.d.pid().to_string()]);
    assert!(n.d.wait_exit(Duration::from_secs(20)).is_some());
    assert_eq!(info_bitmaps(&img), vec![bm("kept", 65536, &["auto"])]);
    check_clean(&img, "after SIGTERM");
    let mut q = Node::open(&qsd(), &img);
    assert_eq!(
        q.maps(&["kept"]),
        vec![expected_runs(SIZE, 65536, &[(5 * MIB, 65536)])]
    );
    q.quit();
}
