//! qcow2 driver tests against images made and checked by `qemu-img`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::block::{BlockHandle, BlockNode, FileOptions, NodeOptions, Qcow2Options};
use crate::buf::Buf;
use crate::iothread::{IoThread, IoThreadConfig};

fn iothread() -> IoThread {
    IoThread::spawn(IoThreadConfig {
        name: "t-qcow2".into(),
        cpu: None,
        movable: false,
        ring_entries: 64,
        poll_max_ns: 0,
    })
    .expect("iothread")
}

fn qemu_img(args: &[&str]) -> std::process::Output {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img");
    out
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn file_node(path: &Path, read_only: bool) -> Arc<BlockNode> {
    BlockNode::open(
        "f",
        "file",
        NodeOptions::File(FileOptions {
            filename: path.to_string_lossy().into_owned(),
            direct: false,
            no_flush: false,
            read_only,
            locking: true,
            host_device: false,
        }),
    )
    .expect("file node")
}

fn qcow2_node(path: &Path, backing: Option<Arc<BlockNode>>) -> Arc<BlockNode> {
    let file = file_node(path, false);
    BlockNode::open(
        "d",
        "qcow2",
        NodeOptions::Qcow2(Qcow2Options {
            file,
            backing,
            read_only: false,
        }),
    )
    .expect("qcow2 node")
}

fn check_clean(path: &Path) {
    let out = qemu_img(&["check", &path.to_string_lossy()]);
    assert!(
        out.status.success(),
        "qemu-img check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn to_raw(path: &Path) -> Vec<u8> {
    let raw = path.with_extension("raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "raw",
            &path.to_string_lossy(),
            &raw.to_string_lossy(),
        ],
    );
    std::fs::read(&raw).expect("raw")
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed) | 1)
        .collect()
}

fn buf_of(v: &[u8]) -> Buf {
    let mut b = Buf::zeroed(v.len());
    b.as_mut_slice().copy_from_slice(v);
    b
}

/// Runs `ops` (offset, data) as writes on an iothread, then reads the
/// whole node back.
fn write_and_read(node: &Arc<BlockNode>, ops: Vec<(u64, Vec<u8>)>) -> Vec<u8> {
    let t = iothread();
    let n = node.clone();
    let out = t
        .handle()
        .block_on(move || async move {
            let h = BlockHandle::open(&n);
            for (off, data) in ops {
                let (r, _) = h.write(off, buf_of(&data), false).await;
                r.expect("write");
            }
            h.flush().await.expect("flush");
            let size = h.size() as usize;
            let (r, b) = h.read(0, Buf::zeroed(size)).await;
            r.expect("read");
            b.as_slice().to_vec()
        })
        .expect("block_on");
    t.stop();
    out
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("dir");
    let p = d.path().join("img.qcow2");
    (d, p)
}

#[test]
fn reads_what_qemu_wrote() {
    let (_d, p) = tmp();
    let ps = p.to_string_lossy().into_owned();
    run("qemu-img", &["create", "-q", "-f", "qcow2", &ps, "8M"]);
    run(
        "qemu-io",
        &[
            "-c",
            "write -P 0x11 0 100k",
            "-c",
            "write -P 0x22 3M 1M",
            "-c",
            "write -z 5M 64k",
            &ps,
        ],
    );
    let expect = to_raw(&p);
    let node = qcow2_node(&p, None);
    assert_eq!(node.size(), 8 << 20);
    let got = write_and_read(&node, Vec::new());
    assert!(got == expect, "content differs from qemu-img convert");
    drop(node);
    check_clean(&p);
}

#[test]
fn writes_allocate_and_check_clean() {
    for cluster in [
        "65536",
        "2M",
        "4096",
        "65536,refcount_bits=1",
        "4096,refcount_bits=64,lazy_refcounts=on",
        "65536,compat=0.10",
    ] {
        let (_d, p) = tmp();
        let ps = p.to_string_lossy().into_owned();
        let opts = format!("cluster_size={cluster}");
        run(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", "-o", &opts, &ps, "16M"],
        );
        let mut model = vec![0u8; 16 << 20];
        let ops: Vec<(u64, Vec<u8>)> = vec![
            (0, pattern(4096, 1)),
            (70_000, pattern(200_000, 2)),
            (5 << 20, pattern(3 << 20, 3)),
            (4096, pattern(512, 4)),
            ((16 << 20) - 1000, pattern(1000, 5)),
            (75_000, pattern(10, 6)),
        ];
        for (off, d) in &ops {
            model[*off as usize..*off as usize + d.len()].copy_from_slice(d);
        }
        let node = qcow2_node(&p, None);
        let got = write_and_read(&node, ops);
        assert!(got == model, "cluster {cluster}: read back differs");
        drop(node);
        check_clean(&p);
        assert!(
            to_raw(&p) == model,
            "cluster {cluster}: qemu-img sees other data"
        );
    }
}

#[test]
fn copy_on_write_from_backing() {
    let d = tempfile::tempdir().expect("dir");
    let base = d.path().join("base.qcow2");
    let top = d.path().join("top.qcow2");
    let (bs, ts) = (
        base.to_string_lossy().into_owned(),
        top.to_string_lossy().into_owned(),
    );
    run("qemu-img", &["create", "-q", "-f", "qcow2", &bs, "4M"]);
    run("qemu-io", &["-c", "write -P 0x5a 0 4M", &bs]);
    run(
        "qemu-img",
        &[
            "create", "-q", "-f", "qcow2", "-b", &bs, "-F", "qcow2", &ts, "6M",
        ],
    );
    let bnode = BlockNode::open(
        "b",
        "qcow2",
        NodeOptions::Qcow2(Qcow2Options {
            file: file_node(&base, true),
            backing: None,
            read_only: true,
        }),
    )
    .expect("base");
    let node = qcow2_node(&top, Some(bnode));
    let mut model = vec![0x5au8; 6 << 20];
    model[4 << 20..].fill(0);
    let ops = vec![
        (1000u64, pattern(3000, 7)),
        ((4 << 20) - 100, pattern(300, 8)),
    ];
    for (off, dd) in &ops {
        model[*off as usize..*off as usize + dd.len()].copy_from_slice(dd);
    }
    let got = write_and_read(&node, ops);
    assert!(got == model, "read back differs");
    let n = node.clone();
    let t = iothread();
    let depth = t
        .handle()
        .block_on(move || async move {
            let h = BlockHandle::open(&n);
            let a = h.block_status(0, 1 << 20).await.expect("status");
            let b = h.block_status(1 << 20, 1 << 20).await.expect("status");
            let c = h.block_status(5 << 20, 1 << 20).await.expect("status");
            (a.0.depth, b.0.depth, c.0.depth)
        })
        .expect("block_on");
    t.stop();
    // Past the shorter backing file, QEMU counts the zeroes as the backing's.
    assert_eq!(depth, (1, 2, 2));
    drop(node);
    check_clean(&top);
    assert!(to_raw(&top) == model, "qemu-img sees other data");
}

#[test]
fn discard_and_zeroes() {
    let (_d, p) = tmp();
    let ps = p.to_string_lossy().into_owned();
    run("qemu-img", &["create", "-q", "-f", "qcow2", &ps, "4M"]);
    run("qemu-io", &["-c", "write -P 0x33 0 4M", &ps]);
    let node = qcow2_node(&p, None);
    let n = node.clone();
    let t = iothread();
    let got = t
        .handle()
        .block_on(move || async move {
            let h = BlockHandle::open(&n);
            h.discard(65536, 3 * 65536).await.expect("discard");
            h.write_zeroes(1 << 20, 100_000, true, false)
                .await
                .expect("zero");
            h.write_zeroes(2 << 20, 65536, false, false)
                .await
                .expect("zero keep");
            h.flush().await.expect("flush");
            // The freed clusters are reused.
            let (r, _) = h.write(3 << 20, buf_of(&pattern(65536, 9)), false).await;
            r.expect("write");
            h.flush().await.expect("flush");
            let (r, b) = h.read(0, Buf::zeroed(4 << 20)).await;
            r.expect("read");
            b.as_slice().to_vec()
        })
        .expect("block_on");
    t.stop();
    let mut model = vec![0x33u8; 4 << 20];
    model[65536..4 * 65536].fill(0);
    model[1 << 20..(1 << 20) + 100_000].fill(0);
    model[2 << 20..(2 << 20) + 65536].fill(0);
    model[3 << 20..(3 << 20) + 65536].copy_from_slice(&pattern(65536, 9));
    assert!(got == model, "read back differs");
    drop(node);
    check_clean(&p);
    assert!(to_raw(&p) == model, "qemu-img sees other data");
}

#[test]
fn compressed_clusters_read_and_rewrite() {
    let d = tempfile::tempdir().expect("dir");
    let src = d.path().join("src.raw");
    let img = d.path().join("c.qcow2");
    let mut data = vec![0u8; 1 << 20];
    for (i, x) in data.iter_mut().enumerate() {
        *x = ((i / 7) % 251) as u8;
    }
    std::fs::write(&src, &data).expect("src");
    run(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-O",
            "qcow2",
            &src.to_string_lossy(),
            &img.to_string_lossy(),
        ],
    );
    let node = qcow2_node(&img, None);
    let mut model = data.clone();
    model[100_000..100_100].copy_from_slice(&pattern(100, 3));
    let got = write_and_read(&node, vec![(100_000, pattern(100, 3))]);
    assert!(got == model, "read back differs");
    drop(node);
    check_clean(&img);
    assert!(to_raw(&img) == model, "qemu-img sees other data");
}

#[test]
fn internal_snapshots_stay_intact() {
    let (_d, p) = tmp();
    let ps = p.to_string_lossy().into_owned();
    run("qemu-img", &["create", "-q", "-f", "qcow2", &ps, "4M"]);
    run("qemu-io", &["-c", "write -P 0x61 0 3M", &ps]);
    let before = to_raw(&p);
    run("qemu-img", &["snapshot", "-c", "s1", &ps]);
    let node = qcow2_node(&p, None);
    let n = node.clone();
    let t = iothread();
    let got = t
        .handle()
        .block_on(move || async move {
            let h = BlockHandle::open(&n);
            // Shared data clusters and a shared L2 table: copied first.
            let (r, _) = h.write(1000, buf_of(&pattern(70_000, 3)), false).await;
            r.expect("write");
            let (r, _) = h.write(3 << 20, buf_of(&pattern(4096, 4)), false).await;
            r.expect("write");
            h.discard(1 << 20, 3 * 65536).await.expect("discard");
            h.write_zeroes(2 << 20, 65536, false, false)
                .await
                .expect("zero");
            h.flush().await.expect("flush");
            let (r, b) = h.read(0, Buf::zeroed(4 << 20)).await;
            r.expect("read");
            b.as_slice().to_vec()
        })
        .expect("block_on");
    t.stop();
    let mut model = before.clone();
    model[1000..71_000].copy_from_slice(&pattern(70_000, 3));
    model[3 << 20..(3 << 20) + 4096].copy_from_slice(&pattern(4096, 4));
    model[1 << 20..(1 << 20) + 3 * 65536].fill(0);
    model[2 << 20..(2 << 20) + 65536].fill(0);
    assert!(got == model, "read back differs");
    drop(node);
    check_clean(&p);
    assert!(to_raw(&p) == model, "qemu-img sees other data");
    run("qemu-img", &["snapshot", "-a", "s1", &ps]);
    check_clean(&p);
    assert!(to_raw(&p) == before, "the snapshot changed");
}
