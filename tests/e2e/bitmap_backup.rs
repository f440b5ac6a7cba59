//! Dirty bitmaps in use: the incremental backup flow end to end (full
//! copy, guest writes, checkpoint transaction, copy of the dirty extents
//! only, backup == image), and writes from several connections and
//! iothreads at once. Compared with QSD like `bitmaps.rs`.

use ringstor_tests::bitmaps::*;
use ringstor_tests::*;
use serde_json::{json, Value};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// Copies the dirty extents of context `argv[2]` of export `argv[1]` into
/// the file `argv[3]`, as a backup tool does; prints what it copied.
const COPY_DIRTY_PY: &str = r#"
import nbd, sys, json
uri, ctx, out = sys.argv[1:4]
h = nbd.NBD()
h.add_meta_context(ctx)
h.connect_uri(uri)
assert h.can_meta_context(ctx), ctx
size = h.get_size()
exts = []
def cb(name, off, entries, err):
    if name == ctx:
        o = off
        for i in range(0, len(entries), 2):
            exts.append([o, entries[i], entries[i + 1] & 1])
            o += entries[i]
    return 0
off = 0
while off < size:
    h.block_status(min(size - off, 1 << 30), off, cb)
    off = exts[-1][0] + exts[-1][1]
copied = 0
with open(out, "r+b") as f:
    for o, l, dirty in exts:
        if not dirty:
            continue
        end = min(o + l, size)
        while o < end:
            n = min(end - o, 4 << 20)
            f.seek(o)
            f.write(h.pread(n, o))
            o += n
            copied += n
h.shutdown()
print(json.dumps({"copied": copied, "extents": exts}))
"#;

fn copy_dirty(b: &BitmapDaemon, export: &str, bitmap: &str, backup: &str) -> Value {
    let ctx = format!("qemu:dirty-bitmap:{bitmap}");
    let r =
        run_python(COPY_DIRTY_PY, &[&b.uri(export), &ctx, backup]).success("copy dirty extents");
    serde_json::from_str(r.stdout.trim()).expect("copy script JSON")
}

fn tx(b: &mut BitmapDaemon, actions: Value) {
    b.ok("transaction", json!({ "actions": actions }));
}

fn n(name: &str) -> Value {
    json!({"node": "disk0", "name": name})
}

#[test]
fn incremental_backup_flow() {
    const SIZE: u64 = 32 * MIB;
    on_both(SIZE, |b| {
        let mut t = Vec::new();
        let backup = b.d.path("backup.img");
        let backup_s = backup.to_string_lossy().into_owned();
        b.export("vm", true, Value::Null);
        qemu_io(&b.uri("vm"), &["write -P 0x11 0 32M"]);
        // Checkpoint 0, then the full backup.
        tx(
            b,
            json!([{"type": "block-dirty-bitmap-add", "data": n("c0")}]),
        );
        b.export("full", false, Value::Null);
        run("nbdcopy", &[&b.uri("full"), &backup_s], TOOL_TIMEOUT).success("nbdcopy full backup");
        assert_eq!(file_sha256(&backup), file_sha256(&b.img));
        // The guest writes.
        let uri = format!("--uri={}", b.uri("vm"));
        let fio = [
            "--name=guest",
            "--ioengine=nbd",
            &uri,
            "--rw=randwrite",
            "--bs=4k",
            "--size=16M",
            "--offset_increment=16M",
            "--numjobs=2",
            "--iodepth=8",
            "--io_size=256k",
            "--randseed=42",
            "--group_reporting",
        ];
        run("fio", &fio, TOOL_TIMEOUT).success("fio guest writes");
        assert_ne!(
            file_sha256(&backup),
            file_sha256(&b.img),
            "fio changed the image"
        );
        // Checkpoint 1 freezes c0 and starts c1 at the same instant.
        tx(
            b,
            json!([
                {"type": "block-dirty-bitmap-add", "data": n("c1")},
                {"type": "block-dirty-bitmap-disable", "data": n("c0")},
            ]),
        );
        assert_eq!(
            b.export("inc1", false, json!(["c0"])),
            json!({"return": {}})
        );
        let copied = copy_dirty(b, "inc1", "c0", &backup_s);
        assert_eq!(
            file_sha256(&backup),
            file_sha256(&b.img),
            "incremental backup 1"
        );
        let c0 = b.count("c0");
        assert_eq!(copied["copied"], c0, "copied exactly the dirty bytes");
        assert!(c0 > 0 && c0 < SIZE / 2, "only part of the image: {c0}");
        assert_eq!(
            nbdinfo_map(&b.uri("inc1"), "c0")
                .iter()
                .filter(|r| r.2)
                .map(|r| r.1)
                .sum::<u64>(),
            c0
        );
        t.push(copied);
        // Round two: more writes, checkpoint 2, copy c1's extents.
        qemu_io(
            &b.uri("vm"),
            &[
                "write -P 0x22 5M 100k",
                "write -z 20M 64k",
                "discard 30M 1M",
            ],
        );
        tx(
            b,
            json!([
                {"type": "block-dirty-bitmap-add", "data": n("c2")},
                {"type": "block-dirty-bitmap-disable", "data": n("c1")},
            ]),
        );
        b.export("inc2", false, json!(["c1"]));
        let copied = copy_dirty(b, "inc2", "c1", &backup_s);
        assert_eq!(
            file_sha256(&backup),
            file_sha256(&b.img),
            "incremental backup 2"
        );
        assert_eq!(copied["copied"], (2 + 1 + 16) * 64 * KIB);
        t.push(copied);
        t.push(b.bitmaps("disk0"));
        Value::Array(t)
    });
}

/// Writes, on `argv[2]` connections at once, 256 writes each (all in
/// flight together) at the offsets of `write_offsets`.
const MULTI_CONN_PY: &str = r#"
import nbd, sys
uri, conns = sys.argv[1], int(sys.argv[2])
hs = []
for c in range(conns):
    h = nbd.NBD()
    h.connect_uri(uri)
    hs.append(h)
buf = bytearray(b"\xab" * 512)
cookies = []
for i in range(256):
    for c, h in enumerate(hs):
        k = i * conns + c
        off = ((k * 37) % 16384) * 4096 + (k % 7) * 512
        cookies.append((h, h.aio_pwrite(buf, off)))
for h, ck in cookies:
    while not h.aio_command_completed(ck):
        h.poll(-1)
for h in hs:
    h.flush()
    h.shutdown()
"#;

/// The offsets `MULTI_CONN_PY` writes 512 bytes at.
fn write_offsets(conns: u64) -> Vec<(u64, u64)> {
    (0..256 * conns)
        .map(|k| (((k * 37) % 16384) * 4096 + (k % 7) * 512, 512))
        .collect()
}

#[test]
fn writes_from_several_connections_and_iothreads_all_land() {
    const SIZE: u64 = 64 * MIB;
    const CONNS: u64 = 4;
    on_both(SIZE, |b| {
        b.ok(
            "block-dirty-bitmap-add",
            json!({"node": "disk0", "name": "b0", "granularity": 4096}),
        );
        // ringstor spreads the connections over two iothreads; QSD takes one.
        let iothread = if b.qsd {
            json!("io0")
        } else {
            json!(["io0", "io1"])
        };
        let r = b.reply(
            "block-export-add",
            json!({"type": "nbd", "id": "w", "node-name": "disk0", "name": "w",
                   "writable": true, "iothread": iothread, "bitmaps": ["b0"]}),
        );
        assert_eq!(r, json!({"return": {}}));
        run_python(MULTI_CONN_PY, &[&b.uri("w"), &CONNS.to_string()]).success("multi-conn writes");
        let want = expected_runs(SIZE, 4096, &write_offsets(CONNS));
        assert_eq!(
            b.count("b0"),
            256 * CONNS * 4096,
            "every write marked its own granule"
        );
        let map = nbdinfo_map(&b.uri("w"), "b0");
        assert_eq!(map, want);
        json!({"count": b.count("b0"), "map": map})
    });
}
