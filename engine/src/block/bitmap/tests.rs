//! Dirty bitmap tests: the bit array, the named set, and marking through
//! real handles on iothreads.

use std::sync::Arc;

use super::*;
use crate::block::{BlockHandle, BlockNode, NodeOptions, NullOptions, RawOptions};
use crate::buf::Buf;
use crate::iothread::{IoThread, IoThreadConfig};

const K64: u64 = 64 * 1024;

fn bm(size: u64, granularity: u64) -> DirtyBitmap {
    DirtyBitmap::new(size, granularity).expect("bitmap")
}

fn runs(b: &DirtyBitmap, from: u64, to: u64) -> Vec<(u64, u64, bool)> {
    b.extents(from, to)
        .map(|e| (e.offset, e.len, e.dirty))
        .collect()
}

#[test]
fn granularity_bounds() {
    for g in [0, 1, 256, 511, 1000, 3 << 20, 1 << 32] {
        assert_eq!(
            DirtyBitmap::new(1 << 20, g).err(),
            Some(BitmapError::BadGranularity),
            "{g}"
        );
    }
    for g in [512, 4096, K64, 1 << 31] {
        let b = DirtyBitmap::new(1 << 20, g).expect("valid granularity");
        assert_eq!(b.granularity(), g);
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn huge_bitmaps_are_bounded_and_cost_only_what_is_written() {
    assert_eq!(
        DirtyBitmap::new(u64::MAX, 512).err(),
        Some(BitmapError::TooLarge)
    );
    assert_eq!(
        DirtyBitmap::new(1 << 62, K64).err(),
        Some(BitmapError::TooLarge)
    );
    // 1 TiB at 512 B granules: 2^31 bits, 256 MiB of words if all touched.
    let before = rss_kib();
    let b = DirtyBitmap::new(1 << 40, 512).expect("1 TiB bitmap");
    b.set((1 << 40) - 1, 1);
    b.set(0, 1);
    assert_eq!(b.dirty_bits(), 2);
    assert_eq!(
        runs(&b, (1 << 40) - 1024, 1 << 40),
        vec![((1 << 40) - 1024, 512, false), ((1 << 40) - 512, 512, true)]
    );
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "RSS grew {grown} KiB for two bits");
}

#[test]
fn set_rounds_to_granules_and_counts_like_qemu() {
    // 4000256 bytes: the last 64 KiB granule is partial.
    let b = DirtyBitmap::new(4_000_256, K64).expect("bitmap");
    assert_eq!(b.bits(), 62);
    b.set(0, 4096);
    b.set(200_000, 1);
    b.set(4_000_255, 1);
    b.set(0, 0); // empty: nothing
    b.set(5_000_000, 10); // past the end: nothing
    assert_eq!(b.count(), 3 * K64);
    assert_eq!(
        runs(&b, 0, b.size()),
        vec![
            (0, K64, true),
            (K64, 2 * K64, false),
            (3 * K64, K64, true),
            (4 * K64, 57 * K64, false),
            (61 * K64, 4_000_256 - 61 * K64, true),
        ]
    );
    // A range starting inside a granule is clipped, not rounded.
    assert_eq!(runs(&b, 100, 5000), vec![(100, 4900, true)]);
    assert!(b.is_dirty(65_535) && !b.is_dirty(65_536));
}

#[test]
fn word_boundaries_and_reset() {
    let b = DirtyBitmap::new(1 << 30, 512).expect("bitmap");
    // Bits 60..140 cross two word boundaries.
    b.set(60 * 512, 80 * 512);
    assert_eq!(b.dirty_bits(), 80);
    assert_eq!(
        runs(&b, 0, 200 * 512),
        vec![
            (0, 60 * 512, false),
            (60 * 512, 80 * 512, true),
            (140 * 512, 60 * 512, false)
        ]
    );
    b.reset(64 * 512, 64 * 512);
    assert_eq!(b.dirty_bits(), 16);
    b.clear();
    assert_eq!(b.count(), 0);
    assert_eq!(runs(&b, 0, b.size()), vec![(0, 1 << 30, false)]);
}

#[test]
fn merge_same_and_different_granularity() {
    let a = DirtyBitmap::new(1 << 20, 4096).expect("a");
    let b = DirtyBitmap::new(1 << 20, K64).expect("b");
    a.set(4096, 1);
    b.merge(&a).expect("merge");
    assert_eq!(
        runs(&b, 0, 2 * K64),
        vec![(0, K64, true), (K64, K64, false)]
    );
    let c = DirtyBitmap::new(1 << 20, 4096).expect("c");
    c.set(8192, 4096);
    a.merge(&c).expect("merge");
    assert_eq!(a.dirty_bits(), 2);
    // A coarse source dirties every fine granule it covers.
    c.merge(&b).expect("merge");
    assert_eq!(c.count(), K64);
    let d = DirtyBitmap::new(1 << 21, K64).expect("d");
    assert_eq!(
        d.merge(&a),
        Err(BitmapError::SizeMismatch {
            dst: 1 << 21,
            src: 1 << 20
        })
    );
}

#[test]
fn serialized_form_is_qcow2_bit_order() {
    let b = DirtyBitmap::new(100 * 4096, 4096).expect("bitmap");
    b.set(0, 1); // bit 0
    b.set(9 * 4096, 1); // bit 9: byte 1, bit 1
    b.set(99 * 4096, 1); // bit 99: byte 12, bit 3
    let bytes = b.to_le_bytes();
    assert_eq!(bytes.len(), 13);
    assert_eq!(bytes[0], 0b1);
    assert_eq!(bytes[1], 0b10);
    assert_eq!(bytes[12], 0b1000);
    assert!(bytes[2..12].iter().all(|&x| x == 0));
    let back = DirtyBitmap::from_le_bytes(100 * 4096, 4096, &bytes).expect("back");
    assert_eq!(back.to_le_bytes(), bytes);
    // Partial windows, as a qcow2 bitmap table reads them cluster by cluster.
    let mut win = [0xffu8; 4];
    b.serialize_into(11, &mut win);
    assert_eq!(win, [0, 0b1000, 0, 0]);
    // Bits past the last granule are ignored.
    let c = DirtyBitmap::new(100 * 4096, 4096).expect("c");
    c.deserialize_from(12, &[0xff, 0xff]);
    assert_eq!(c.dirty_bits(), 4);
}

#[test]
fn resized_keeps_bits() {
    let b = DirtyBitmap::new(1 << 20, K64).expect("bitmap");
    b.set(0, 1);
    b.set((1 << 20) - 1, 1);
    let bigger = b.resized(2 << 20).expect("grow");
    assert_eq!(bigger.count(), 2 * K64);
    assert!(!bigger.is_dirty(1 << 20));
    let smaller = b.resized(K64).expect("shrink");
    assert_eq!(smaller.count(), K64);
}

#[test]
fn set_names_flags_and_busy() {
    let set = Arc::new(BitmapSet::default());
    set.add("b0", bm(1 << 20, K64), true, false).expect("add");
    set.add("b1", bm(1 << 20, 4096), false, false).expect("add");
    assert_eq!(
        set.add("b0", bm(1 << 20, K64), true, false).err(),
        Some(BitmapError::Exists("b0".into()))
    );
    let long = "x".repeat(MAX_BITMAP_NAME + 1);
    assert_eq!(
        set.add(&long, bm(1 << 20, K64), true, false).err(),
        Some(BitmapError::NameTooLong(long.clone()))
    );
    let names: Vec<String> = set.list().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["b1", "b0"], "newest first");
    let guard = set.hold("b0").expect("hold");
    assert!(set.get("b0").expect("b0").busy);
    assert_eq!(set.remove("b0"), Err(BitmapError::Busy("b0".into())));
    drop(guard);
    assert!(!set.get("b0").expect("b0").busy);
    set.remove("b0").expect("remove");
    assert_eq!(set.remove("b0"), Err(BitmapError::NotFound("b0".into())));
}

fn iothread(name: &str) -> IoThread {
    IoThread::spawn(IoThreadConfig {
        name: name.into(),
        cpu: None,
        movable: false,
        ring_entries: 64,
        poll_max_ns: 0,
    })
    .expect("iothread")
}

fn null_node(name: &str, size: u64) -> Arc<BlockNode> {
    BlockNode::open(
        name,
        "null-co",
        NodeOptions::Null(NullOptions {
            size,
            read_zeroes: true,
        }),
    )
    .expect("null node")
}

#[test]
fn handles_mark_every_node_of_the_chain_until_disabled() {
    let t = iothread("t-bitmap");
    let leaf = null_node("leaf", 4 << 20);
    let raw = BlockNode::open(
        "fmt",
        "raw",
        NodeOptions::Raw(RawOptions {
            child: leaf.clone(),
            offset: K64,
            size: Some(2 << 20),
        }),
    )
    .expect("raw");
    let on_raw = raw
        .bitmaps()
        .add("r", bm(raw.size(), 4096), true, false)
        .expect("add");
    let on_leaf = leaf
        .bitmaps()
        .add("l", bm(leaf.size(), 4096), true, false)
        .expect("add");
    raw.bitmaps().publish();
    leaf.bitmaps().publish();
    let n = raw.clone();
    t.handle()
        .block_on(move || async move {
            let h = BlockHandle::open(&n);
            let (r, _) = h.write(0, Buf::zeroed(4096), false).await;
            r.expect("write");
            h.discard(8192, 4096).await.expect("discard");
            h.write_zeroes(16384, 100, true, false)
                .await
                .expect("write zeroes");
        })
        .expect("block_on");
    assert_eq!(on_raw.dirty_bits(), 3);
    assert!(on_raw.is_dirty(0) && on_raw.is_dirty(8192) && on_raw.is_dirty(16384));
    // The leaf sees the same writes shifted by the raw offset, but not the
    // discard: null-co has none, and QEMU stops it there before marking.
    assert_eq!(on_leaf.dirty_bits(), 2);
    assert!(on_leaf.is_dirty(K64) && on_leaf.is_dirty(K64 + 16384));
    assert!(!on_leaf.is_dirty(K64 + 8192));
    // Disabled and published: the cached handle stops marking.
    raw.bitmaps().set_enabled("r", false).expect("disable");
    raw.bitmaps().publish();
    on_raw.clear();
    let n = raw.clone();
    t.handle()
        .block_on(move || async move {
            let h = BlockHandle::open(&n);
            let (r, _) = h.write(K64, Buf::zeroed(512), false).await;
            r.expect("write");
        })
        .expect("block_on");
    assert_eq!(on_raw.count(), 0, "disabled bitmap untouched");
    assert!(on_leaf.is_dirty(2 * K64));
}

#[test]
fn writes_from_several_iothreads_all_land() {
    let node = null_node("multi", 64 << 20);
    let b = node
        .bitmaps()
        .add("b", bm(node.size(), 4096), true, false)
        .expect("add");
    node.bitmaps().publish();
    let threads: Vec<IoThread> = (0..3).map(|i| iothread(&format!("t-bm{i}"))).collect();
    let mut waits = Vec::new();
    for (i, t) in threads.iter().enumerate() {
        let n = node.clone();
        let h = t.handle().clone();
        waits.push(std::thread::spawn(move || {
            h.block_on(move || async move {
                let bh = BlockHandle::open(&n);
                // Interleaved 4 KiB blocks: thread i writes block 3k + i.
                for k in 0..1000u64 {
                    let off = (3 * k + i as u64) * 4096;
                    let (r, _) = bh.write(off, Buf::zeroed(4096), false).await;
                    r.expect("write");
                }
            })
            .expect("block_on")
        }));
    }
    for w in waits {
        w.join().expect("writer");
    }
    assert_eq!(b.dirty_bits(), 3000);
    assert_eq!(
        runs(&b, 0, node.size()),
        vec![
            (0, 3000 * 4096, true),
            (3000 * 4096, (64 << 20) - 3000 * 4096, false)
        ]
    );
}
