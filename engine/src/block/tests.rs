//! Block driver tests on real files, with and without O_DIRECT.

use std::sync::Arc;

use super::*;
use crate::buf::Buf;
use crate::iothread::{IoThread, IoThreadConfig};

fn iothread() -> IoThread {
    IoThread::spawn(IoThreadConfig {
        name: "t-block".into(),
        cpu: None,
        ring_entries: 64,
        poll_max_ns: 0,
    })
    .expect("iothread")
}

fn file_node(path: &std::path::Path, direct: bool) -> Arc<BlockNode> {
    let opts = FileOptions {
        filename: path.to_string_lossy().into_owned(),
        direct,
        no_flush: false,
        read_only: false,
        locking: true,
        host_device: false,
    };
    BlockNode::open("disk0", "file", NodeOptions::File(opts)).expect("open")
}

fn pattern(len: usize, seed: u8) -> Buf {
    let mut b = Buf::zeroed(len);
    for (i, x) in b.as_mut_slice().iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    b
}

fn roundtrip(direct: bool) {
    let t = iothread();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("img");
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(1 << 20))
        .expect("create");
    let node = file_node(&path, direct);
    assert_eq!(node.size(), 1 << 20);
    let n = node.clone();
    t.handle()
        .block_on(move || async move {
            let h = BlockHandle::open(&n);
            // Aligned, then unaligned (the buffered path under O_DIRECT).
            for (off, len) in [(4096u64, 8192usize), (1000, 777)] {
                let (r, _) = h.write(off, pattern(len, 3), true).await;
                r.expect("write");
                let (r, b) = h.read(off, Buf::zeroed(len)).await;
                r.expect("read");
                assert_eq!(b.as_slice(), pattern(len, 3).as_slice());
            }
            h.flush().await.expect("flush");
            let (r, _) = h.read((1 << 20) - 10, Buf::zeroed(20)).await;
            assert!(matches!(r, Err(BlockError::OutOfRange { .. })));
        })
        .expect("block_on");
    let data = std::fs::read(&path).expect("read back");
    assert_eq!(&data[4096..4096 + 8192], pattern(8192, 3).as_slice());
    assert_eq!(&data[1000..1777], pattern(777, 3).as_slice());
}

#[test]
fn file_roundtrip_buffered() {
    roundtrip(false);
}

#[test]
fn file_roundtrip_direct() {
    roundtrip(true);
}

#[test]
fn zeroes_discard_and_status() {
    let t = iothread();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("img");
    std::fs::write(&path, vec![0xaau8; 1 << 20]).expect("create");
    let node = file_node(&path, false);
    let n = node.clone();
    t.handle()
        .block_on(move || async move {
            let h = BlockHandle::open(&n);
            let (st, len) = h.block_status(0, 1 << 20).await.expect("status");
            assert_eq!((st, len), (BlockStatus::DATA, 1 << 20));
            h.write_zeroes(65536, 65536, true, false)
                .await
                .expect("zero");
            h.discard(262144, 65536).await.expect("discard");
            let (st, len) = h.block_status(65536, 1 << 20).await.expect("status");
            assert_eq!((st, len), (BlockStatus::HOLE, 65536));
            let (r, b) = h.read(65536, Buf::zeroed(65536)).await;
            r.expect("read");
            assert!(b.as_slice().iter().all(|&x| x == 0));
        })
        .expect("block_on");
}

#[test]
fn raw_window_and_null() {
    let t = iothread();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("img");
    std::fs::write(&path, vec![0u8; 1 << 20]).expect("create");
    let file = file_node(&path, false);
    let raw = BlockNode::open(
        "fmt",
        "raw",
        NodeOptions::Raw(RawOptions {
            child: file.clone(),
            offset: 4096,
            size: Some(8192),
        }),
    )
    .expect("raw");
    assert_eq!(raw.size(), 8192);
    assert!(BlockNode::open(
        "bad",
        "raw",
        NodeOptions::Raw(RawOptions {
            child: file,
            offset: 1 << 20,
            size: Some(1)
        })
    )
    .is_err());
    let null = BlockNode::open(
        "n",
        "null-co",
        NodeOptions::Null(NullOptions {
            size: 1 << 30,
            read_zeroes: true,
        }),
    )
    .expect("null");
    let (r2, nn) = (raw.clone(), null.clone());
    t.handle()
        .block_on(move || async move {
            let h = BlockHandle::open(&r2);
            let (r, _) = h.write(0, pattern(4096, 9), false).await;
            r.expect("write");
            let (r, _) = h.write(8000, pattern(4096, 9), false).await;
            assert!(r.is_err(), "write past the raw window");
            let hn = BlockHandle::open(&nn);
            let (r, b) = hn.read(1 << 29, pattern(4096, 1)).await;
            r.expect("null read");
            assert!(b.as_slice().iter().all(|&x| x == 0));
        })
        .expect("block_on");
    let data = std::fs::read(&path).expect("read back");
    assert_eq!(&data[4096..8192], pattern(4096, 9).as_slice());
}

#[test]
fn permissions_conflict_in_process_and_across_descriptions() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("img");
    std::fs::write(&path, vec![0u8; 4096]).expect("create");
    let a = file_node(&path, false);
    let rw = Perm::CONSISTENT_READ.union(Perm::WRITE);
    let g = a
        .attach("export e0", rw, Perm::CONSISTENT_READ)
        .expect("attach");
    assert!(matches!(
        a.attach("other", rw, Perm::ALL),
        Err(BlockError::PermConflict { .. })
    ));
    // A second open of the same image (as another process would) sees the lock.
    let b = file_node(&path, false);
    assert!(matches!(
        b.attach("export e1", rw, Perm::ALL),
        Err(BlockError::Locked { .. })
    ));
    drop(g);
    b.attach("export e1", rw, Perm::ALL)
        .expect("free after release");
}
