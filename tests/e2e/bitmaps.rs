//! Dirty bitmaps: QMP commands, tracking of writes through NBD, and the
//! `qemu:dirty-bitmap:NAME` context read by nbdinfo, qemu-img and a raw
//! extended-header client. Every scenario runs on ringstor and on QSD and
//! the two transcripts must match (see `support/bitmaps.rs`).

use ringstor_tests::bitmaps::*;
use serde_json::{json, Value};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const SIZE: u64 = 16 * MIB;
const BUSY: &str = "is currently in use by another operation and cannot be used";

fn runs_json(r: &[Run]) -> Value {
    json!(r)
}

/// The writes of the first scenario: data, one byte, zeroes, a trim.
const WRITES: &[(u64, u64)] = &[
    (0, 4 * KIB),
    (200_000, 1),
    (MIB, 64 * KIB),
    (2 * MIB, 128 * KIB),
    (SIZE - 512, 512),
];

#[test]
fn dirty_extents_are_the_written_ranges() {
    on_both(SIZE, |b| {
        b.ok(
            "block-dirty-bitmap-add",
            json!({"node": "disk0", "name": "b0"}),
        );
        b.ok(
            "block-dirty-bitmap-add",
            json!({"node": "disk0", "name": "fine", "granularity": 4096}),
        );
        assert_eq!(b.export("w", true, Value::Null), json!({"return": {}}));
        qemu_io(
            &b.uri("w"),
            &[
                "write -P 1 0 4k",
                "write -P 2 200000 1",
                "write -z 1M 64k",
                "discard 2M 128k",
                "write -P 3 16776704 512",
            ],
        );
        let listed = b.bitmaps("disk0");
        let b0 = expected_runs(SIZE, 64 * KIB, WRITES);
        let fine = expected_runs(SIZE, 4 * KIB, WRITES);
        assert_eq!(b.count("b0"), 6 * 64 * KIB, "{listed}");
        assert_eq!(b.count("fine"), (1 + 1 + 16 + 32 + 1) * 4 * KIB);
        // Enabled bitmaps may go out on a writable export.
        assert_eq!(
            b.export("r", true, json!(["b0", "fine"])),
            json!({"return": {}})
        );
        let map = nbdinfo_map(&b.uri("r"), "b0");
        assert_eq!(map, b0, "nbdinfo --map b0");
        assert_eq!(nbdinfo_map(&b.uri("r"), "fine"), fine, "nbdinfo --map fine");
        let img = qemu_img_map(&b.sock(), "r", "b0");
        assert_eq!(img, b0, "qemu-img map x-dirty-bitmap");
        // The same through extended headers, both contexts in one request.
        let (mut c, ctx) = raw_ext_with_contexts(
            &b.sock(),
            "r",
            &["qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:fine"],
        );
        let names: Vec<&str> = ctx.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:fine"]);
        let status = ext_block_status(&mut c, 7, 0, SIZE);
        let for_ctx = |name: &str| -> Vec<Run> {
            let id = ctx.iter().find(|(_, n)| n.ends_with(name)).map(|c| c.0);
            let (_, ext) = status
                .iter()
                .find(|(i, _)| Some(*i) == id)
                .unwrap_or_else(|| panic!("no reply for {name}: {status:?}"));
            let mut off = 0;
            ext.iter()
                .map(|&(len, flags)| {
                    let r = (off, len, flags & 1 == 1);
                    off += len;
                    r
                })
                .collect()
        };
        assert_eq!(for_ctx(":b0"), b0, "extended block status b0");
        assert_eq!(for_ctx(":fine"), fine, "extended block status fine");
        c.ext_disconnect();
        // LIST with `qemu:dirty-bitmap:` names every exported bitmap.
        let listed_ctx = list_contexts(&b.sock(), "r", &["qemu:dirty-bitmap:"]);
        assert_eq!(
            listed_ctx,
            ["qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:fine"]
        );
        json!({"bitmaps": listed, "map": runs_json(&map), "img": runs_json(&img),
               "list": listed_ctx})
    });
}

#[test]
fn clear_disable_enable_merge_remove() {
    on_both(SIZE, |b| {
        let mut t = Vec::new();
        let add = json!({"node": "disk0", "name": "b0"});
        b.ok("block-dirty-bitmap-add", add);
        b.ok(
            "block-dirty-bitmap-add",
            json!({"node": "disk0", "name": "b1"}),
        );
        b.export("w", true, Value::Null);
        let w = b.uri("w");
        qemu_io(&w, &["write 0 4k"]);
        b.ok(
            "block-dirty-bitmap-disable",
            json!({"node": "disk0", "name": "b0"}),
        );
        qemu_io(&w, &["write 1M 4k"]);
        assert_eq!((b.count("b0"), b.count("b1")), (64 * KIB, 128 * KIB));
        b.ok(
            "block-dirty-bitmap-enable",
            json!({"node": "disk0", "name": "b0"}),
        );
        qemu_io(&w, &["write 2M 4k"]);
        assert_eq!((b.count("b0"), b.count("b1")), (128 * KIB, 192 * KIB));
        b.ok(
            "block-dirty-bitmap-clear",
            json!({"node": "disk0", "name": "b1"}),
        );
        assert_eq!(b.count("b1"), 0);
        qemu_io(&w, &["write 3M 4k"]);
        t.push(b.bitmaps("disk0"));
        b.ok(
            "block-dirty-bitmap-add",
            json!({"node": "disk0", "name": "m", "disabled": true}),
        );
        b.ok(
            "block-dirty-bitmap-merge",
            json!({"node": "disk0", "target": "m",
                   "bitmaps": ["b0", {"node": "disk0", "name": "b1"}]}),
        );
        let want = expected_runs(SIZE, 64 * KIB, &[(0, 1), (2 * MIB, 1), (3 * MIB, 1)]);
        // A disabled bitmap may go out read-only, and is then busy.
        assert_eq!(b.export("r", false, json!(["m"])), json!({"return": {}}));
        assert_eq!(nbdinfo_map(&b.uri("r"), "m"), want);
        let busy = json!({"node": "disk0", "name": "m"});
        for cmd in [
            "block-dirty-bitmap-remove",
            "block-dirty-bitmap-clear",
            "block-dirty-bitmap-disable",
            "block-dirty-bitmap-enable",
        ] {
            let e = b.err(cmd, busy.clone());
            assert_eq!(e, format!("Bitmap 'm' {BUSY}"), "{cmd}");
            t.push(json!(e));
        }
        t.push(b.export("r2", false, json!(["m"])));
        t.push(b.bitmaps("disk0"));
        b.del_export("r");
        b.ok("block-dirty-bitmap-remove", busy);
        for name in ["b0", "b1"] {
            b.ok(
                "block-dirty-bitmap-remove",
                json!({"node": "disk0", "name": name}),
            );
        }
        assert_eq!(b.bitmaps("disk0"), Value::Null, "no bitmap left");
        Value::Array(t)
    });
}

#[test]
fn errors_as_qsd() {
    on_both(SIZE, |b| {
        let mut t = Vec::new();
        let add = |b: &mut BitmapDaemon, args: Value| b.reply("block-dirty-bitmap-add", args);
        b.ok(
            "block-dirty-bitmap-add",
            json!({"node": "disk0", "name": "b0"}),
        );
        let cases = [
            (
                json!({"node": "nope", "name": "x"}),
                "Cannot find device='nope' nor node-name='nope'",
            ),
            (
                json!({"node": "disk0", "name": "b0"}),
                "Bitmap already exists: b0",
            ),
            (
                json!({"node": "disk0", "name": ""}),
                "Bitmap name cannot be empty",
            ),
            (
                json!({"node": "disk0", "name": "g", "granularity": 511}),
                "Granularity must be power of 2 and at least 512",
            ),
            (
                json!({"node": "disk0", "name": "g", "granularity": 3 << 20}),
                "Granularity must be power of 2 and at least 512",
            ),
            (
                json!({"node": "disk0", "name": "g", "granularity": 1u64 << 32}),
                "Parameter 'granularity' expects uint32_t",
            ),
            (
                json!({"node": "disk0", "name": "g", "persistent": true}),
                "Can't store persistent bitmaps to disk0: Operation not supported",
            ),
        ];
        for (args, want) in cases {
            let r = add(b, args.clone());
            assert_eq!(r["error"], want, "{args}");
            t.push(r);
        }
        assert_eq!(
            add(
                b,
                json!({"node": "disk0", "name": "big", "granularity": 1u64 << 31})
            ),
            json!({"return": {}})
        );
        let other = [
            (
                "block-dirty-bitmap-remove",
                json!({"node": "disk0", "name": "zz"}),
                "Dirty bitmap 'zz' not found",
            ),
            (
                "block-dirty-bitmap-clear",
                json!({"node": "nope", "name": "b0"}),
                "Node 'nope' not found",
            ),
            (
                "block-dirty-bitmap-merge",
                json!({"node": "disk0", "target": "b0", "bitmaps": ["zz"]}),
                "Dirty bitmap 'zz' not found",
            ),
            (
                "block-dirty-bitmap-merge",
                json!({"node": "disk0", "target": "b0", "bitmaps": [1]}),
                "Invalid parameter type for 'null', expected: BlockDirtyBitmapOrStr",
            ),
        ];
        for (cmd, args, want) in other {
            let r = b.reply(cmd, args.clone());
            assert_eq!(r["error"], want, "{cmd} {args}");
            t.push(r);
        }
        // Exports: unknown bitmap, enabled one read-only, busy one twice.
        t.push(b.export("e1", true, json!(["zz"])));
        assert_eq!(
            t.last().map(|r| r["error"].clone()),
            Some(json!("Bitmap 'zz' is not found"))
        );
        t.push(b.export("e1", false, json!(["b0"])));
        assert_eq!(
            t.last().map(|r| r["error"].clone()),
            Some(json!(
                "Enabled bitmap 'b0' incompatible with readonly export"
            ))
        );
        t.push(b.export("e1", false, json!([{"node": "disk0", "name": "zz"}])));
        t.push(b.export("e1", true, json!(["b0"])));
        t.push(b.export("e2", true, json!(["b0"])));
        assert_eq!(
            t.last().map(|r| r["error"].clone()),
            Some(json!(format!("Bitmap 'b0' {BUSY}")))
        );
        t.push(b.reply(
            "block-dirty-bitmap-remove",
            json!({"node": "disk0", "name": "b0"}),
        ));
        t.push(b.reply(
            "block-dirty-bitmap-merge",
            json!({"node": "disk0", "target": "big", "bitmaps": ["b0"]}),
        ));
        t.push(b.reply("blockdev-del", json!({"node-name": "disk0"})));
        if !b.qsd {
            // QSD 10.0 aborts on an assertion when the node of a bitmap an
            // export of another node offers goes away; ringstor refuses.
            b.ok(
                "blockdev-add",
                json!({"driver": "null-co", "node-name": "n2"}),
            );
            b.ok(
                "block-dirty-bitmap-add",
                json!({"node": "n2", "name": "x", "disabled": true}),
            );
            b.export("ext", false, json!([{"node": "n2", "name": "x"}]));
            assert_eq!(
                b.err("blockdev-del", json!({"node-name": "n2"})),
                "Node n2 is in use"
            );
            b.del_export("ext");
            b.ok("blockdev-del", json!({"node-name": "n2"}));
        }
        Value::Array(t)
    });
}

fn tx(b: &mut BitmapDaemon, actions: Value) -> Value {
    b.reply("transaction", json!({ "actions": actions }))
}

fn action(kind: &str, data: Value) -> Value {
    json!({"type": kind, "data": data})
}

#[test]
fn transaction_is_all_or_nothing() {
    on_both(SIZE, |b| {
        let mut t = Vec::new();
        let n = |name: &str| json!({"node": "disk0", "name": name});
        b.ok("block-dirty-bitmap-add", n("old"));
        b.export("w", true, Value::Null);
        qemu_io(&b.uri("w"), &["write 0 64k"]);
        // The second action fails: the first leaves no trace.
        let r = tx(
            b,
            json!([
                action("block-dirty-bitmap-add", n("new")),
                action("block-dirty-bitmap-add", n("new"))
            ]),
        );
        assert_eq!(r["error"], "Bitmap already exists: new");
        t.push(r);
        let r = tx(
            b,
            json!([
                action("block-dirty-bitmap-add", n("new")),
                action("block-dirty-bitmap-clear", n("old")),
                action("block-dirty-bitmap-disable", n("old")),
                action("abort", json!({}))
            ]),
        );
        assert_eq!(r["error"], "Transaction aborted using Abort action");
        t.push(r);
        let after = b.bitmaps("disk0");
        assert_eq!(after.as_array().map(Vec::len), Some(1), "{after}");
        assert_eq!(after[0]["recording"], true);
        assert_eq!(after[0]["count"], 64 * KIB, "the clear was undone");
        t.push(after);
        // A removed bitmap is busy for the rest of the transaction.
        let r = tx(
            b,
            json!([
                action("block-dirty-bitmap-remove", n("old")),
                action("block-dirty-bitmap-clear", n("old"))
            ]),
        );
        assert_eq!(r["error"], format!("Bitmap 'old' {BUSY}"));
        t.push(r);
        t.push(b.reply(
            "transaction",
            json!({"actions": [action("block-dirty-bitmap-add", n("x"))],
                   "properties": {"completion-mode": "grouped"}}),
        ));
        // The checkpoint: a new bitmap and the old one frozen, at once.
        let r = tx(
            b,
            json!([
                action("block-dirty-bitmap-add", n("new")),
                action("block-dirty-bitmap-disable", n("old"))
            ]),
        );
        assert_eq!(r, json!({"return": {}}));
        qemu_io(&b.uri("w"), &["write 1M 4k"]);
        assert_eq!((b.count("old"), b.count("new")), (64 * KIB, 64 * KIB));
        t.push(b.bitmaps("disk0"));
        Value::Array(t)
    });
}

#[test]
fn transaction_arguments_as_qsd() {
    on_both(SIZE, |b| {
        let bad = [
            json!({}),
            json!({"actions": {}}),
            json!({"actions": [1]}),
            json!({"actions": [{}]}),
            json!({"actions": [{"type": "abort"}]}),
            json!({"actions": [{"type": "abort", "data": {}, "x": 1}]}),
            json!({"actions": [{"type": "abort", "data": {"x": 1}}]}),
            json!({"actions": [{"type": "bogus", "data": {}}]}),
            json!({"actions": [], "properties": {"completion-mode": "x"}}),
            json!({"actions": [], "x": 1}),
            json!({"actions": [action("block-dirty-bitmap-add", json!({"node": "disk0"}))]}),
            json!({"actions": [action("block-dirty-bitmap-add",
                json!({"node": "disk0", "name": "a", "granularity": "x"}))]}),
            json!({"actions": [action("block-dirty-bitmap-merge",
                json!({"node": "disk0", "target": "a", "bitmaps": [{"node": "x"}]}))]}),
            json!({"actions": [action("abort", json!({}))],
                   "properties": {"completion-mode": "grouped"}}),
        ];
        let t: Vec<Value> = bad
            .into_iter()
            .map(|args| {
                let r = b.reply("transaction", args.clone());
                assert!(r.get("error").is_some(), "{args} accepted: {r}");
                r
            })
            .collect();
        assert_eq!(t[3]["error"], "Parameter 'actions[0].type' is missing");
        assert_eq!(tx(b, json!([])), json!({"return": {}}));
        Value::Array(t)
    });
}
