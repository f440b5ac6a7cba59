//! Block driver tests on real files, with and without O_DIRECT.

use std::sync::Arc;

use super::*;
use crate::buf::Buf;
use crate::iothread::{IoThread, IoThreadConfig};

fn iothread() -> IoThread {
    IoThread::spawn(IoThreadConfig {
        name: "t-block".into(),
        cpu: None,
        movable: false,
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

/// QEMU counts sizes in sectors: a 1,000,000-byte file is a 1,000,448-byte
/// node whose tail reads as zeroes and extends the file when written.
fn unaligned_file_size(direct: bool) {
    let t = iothread();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("img");
    std::fs::write(&path, vec![0xabu8; 1_000_000]).expect("create");
    let node = file_node(&path, direct);
    assert_eq!(node.size(), 1_000_448);
    assert_eq!(node.data_end(), 1_000_000);
    let n = node.clone();
    t.handle()
        .block_on(move || async move {
            let h = BlockHandle::open(&n);
            assert!(
                !h.can_splice(999_424, 1024),
                "no splice across the end of the file"
            );
            assert!(h.can_splice(0, 999_424) || direct);
            let (r, b) = h.read(999_424, Buf::zeroed(1024)).await;
            r.expect("tail read");
            assert!(b.as_slice()[..576].iter().all(|&x| x == 0xab));
            assert!(b.as_slice()[576..].iter().all(|&x| x == 0));
            let (st, len) = h.block_status(1_000_000, 448).await.expect("status");
            assert_eq!((st, len), (BlockStatus::HOLE, 448));
            let (r, _) = h.write(1_000_400, pattern(48, 5), false).await;
            r.expect("tail write");
            let (r, _) = h.read(1_000_400, Buf::zeroed(49)).await;
            assert!(matches!(r, Err(BlockError::OutOfRange { .. })));
        })
        .expect("block_on");
    let data = std::fs::read(&path).expect("read back");
    assert_eq!(data.len(), 1_000_448, "the write extended the file");
    assert!(data[1_000_000..1_000_400].iter().all(|&x| x == 0));
    assert_eq!(&data[1_000_400..], pattern(48, 5).as_slice());
}

#[test]
fn unaligned_file_size_buffered() {
    unaligned_file_size(false);
}

#[test]
fn unaligned_file_size_direct() {
    unaligned_file_size(true);
}

#[test]
fn every_node_rounds_to_sectors_like_qemu() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("img");
    std::fs::write(&path, vec![0u8; 1_000_000]).expect("create");
    let file = file_node(&path, false);
    let raw = |offset: u64, size: Option<u64>| {
        BlockNode::open(
            "fmt",
            "raw",
            NodeOptions::Raw(RawOptions {
                child: file.clone(),
                offset,
                size,
            }),
        )
    };
    assert_eq!(raw(0, None).expect("raw").size(), 1_000_448);
    // The rest of the child past 1000 bytes, rounded up again (QEMU too).
    assert_eq!(raw(1000, None).expect("raw").size(), 999_936);
    assert_eq!(raw(512, Some(999_424)).expect("raw").size(), 999_424);
    let msg = |r: BlockResult<Arc<BlockNode>>| r.map(|_| ()).unwrap_err().to_string();
    assert_eq!(
        msg(raw(0, Some(1_000_000))),
        "Specified size is not multiple of 512"
    );
    assert_eq!(
        msg(raw(2_000_000, None)),
        "Offset (2000000) cannot be greater than size of the containing file (1000448)"
    );
    assert_eq!(
        msg(raw(512, Some(1_000_000))),
        "The sum of offset (512) and size (1000000) has to be smaller or equal to the  actual size of the containing file (1000448)"
    );
    let null = BlockNode::open(
        "n",
        "null-co",
        NodeOptions::Null(NullOptions {
            size: 1_000_000,
            read_zeroes: true,
        }),
    )
    .expect("null");
    assert_eq!(null.size(), 1_000_448);
    assert_eq!(round_to_sector(u64::MAX), u64::MAX - 511);
}

#[test]
fn direct_read_across_the_end_of_the_file() {
    let t = iothread();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("img");
    std::fs::write(&path, vec![0xcdu8; 8000]).expect("create");
    let node = file_node(&path, true);
    assert_eq!(node.size(), 8192);
    t.handle()
        .block_on(move || async move {
            let h = BlockHandle::open(&node);
            // Aligned, so O_DIRECT: short at 8000, then an unaligned read
            // there that must give 0, not EINVAL.
            let (r, b) = h.read(4096, Buf::zeroed(4096)).await;
            r.expect("read");
            assert!(b.as_slice()[..3904].iter().all(|&x| x == 0xcd));
            assert!(b.as_slice()[3904..].iter().all(|&x| x == 0));
        })
        .expect("block_on");
}

/// Two heap buffers of odd sizes as one iovec list, as guest memory would be.
struct TwoBufs {
    _a: Buf,
    _b: Buf,
    iov: Vec<libc::iovec>,
}

impl TwoBufs {
    fn new(mut a: Buf, mut b: Buf) -> TwoBufs {
        let iov = vec![
            libc::iovec {
                iov_base: a.as_mut_slice().as_mut_ptr().cast(),
                iov_len: a.len(),
            },
            libc::iovec {
                iov_base: b.as_mut_slice().as_mut_ptr().cast(),
                iov_len: b.len(),
            },
        ];
        TwoBufs { _a: a, _b: b, iov }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = self._a.as_slice().to_vec();
        out.extend_from_slice(self._b.as_slice());
        out
    }
}

// SAFETY: the iovecs point into the two heap buffers the value owns, which
// do not move when it moves; the Vec keeps the array on the heap.
unsafe impl crate::buf::IoVecBuf for TwoBufs {
    fn iovecs(&self) -> &[libc::iovec] {
        &self.iov
    }
}

fn vectored(direct: bool) {
    let t = iothread();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("img");
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(1 << 20))
        .expect("create");
    let node = file_node(&path, direct);
    let n = node.clone();
    t.handle()
        .block_on(move || async move {
            let h = BlockHandle::open(&n);
            // Page-sized halves (O_DIRECT path), then odd halves (buffered).
            for (off, a, b) in [(8192u64, 4096usize, 4096usize), (512, 1536, 512)] {
                let w = TwoBufs::new(pattern(a, 7), pattern(b, 9));
                let want = w.bytes();
                let (r, _) = h.writev(off, w, false).await;
                r.expect("writev");
                let (r, got) = h
                    .readv(off, TwoBufs::new(Buf::zeroed(a), Buf::zeroed(b)))
                    .await;
                r.expect("readv");
                assert_eq!(got.bytes(), want);
            }
            // Past the end of the node: refused, nothing read.
            let (r, _) = h
                .readv(
                    (1 << 20) - 512,
                    TwoBufs::new(Buf::zeroed(512), Buf::zeroed(512)),
                )
                .await;
            assert!(matches!(r, Err(BlockError::OutOfRange { .. })));
        })
        .expect("run");
}

#[test]
fn vectored_roundtrip_buffered() {
    vectored(false);
}

#[test]
fn vectored_roundtrip_direct() {
    vectored(true);
}
