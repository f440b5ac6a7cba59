//! vhost-user-blk over what the block layer adds beneath a file: a qcow2
//! node (guest buffers go through a bounce buffer there) and dirty bitmaps
//! (guest writes mark them like NBD writes do).

use crate::blkio_client::Client;
use ringstor_tests::*;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn vhost_user_blk_serves_a_qcow2_node() {
    if skip_on_qsd("qcow2 through ringstor's bounce path") {
        return;
    }
    // The image lives outside the daemon's directory, which goes with it.
    let images = scratch();
    let img = images.path().join("disk.qcow2");
    run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&img)
            .arg("16M"),
    );
    let file = format!("driver=file,node-name=f0,filename={}", img.display());
    let mut d = Daemon::start(
        scratch(),
        &[
            "--blockdev",
            &file,
            "--blockdev",
            "driver=qcow2,node-name=disk0,file=f0",
            "--export",
            "type=vhost-user-blk,id=vu0,node-name=disk0,addr.type=unix,addr.path={dir}/vhost.sock,writable=on,num-queues=1",
        ],
    );
    let sock = d.path("vhost.sock");
    wait_for_socket(&sock);
    let mut c = Client::connect(&sock, 1, false).expect("blkio connects");
    assert_eq!(c.capacity(), 16 * MIB);
    let q = &mut c.queues[0];
    assert_eq!(q.read(0, 8192).expect("read"), vec![0u8; 8192]);
    let writes = [
        (0u64, 4096usize, 1u8),
        (3 * MIB + 512, 69_632, 2),
        (15 * MIB, 1 << 20, 3),
    ];
    for &(off, len, seed) in &writes {
        q.write(off, &pattern(len, seed)).expect("write");
    }
    q.flush().expect("flush");
    for &(off, len, seed) in &writes {
        assert_eq!(q.read(off, len).expect("read back"), pattern(len, seed));
    }
    drop(c);
    let _ = d.qmp().execute("quit", json!({}));
    assert!(
        d.wait_exit(Duration::from_secs(10)).is_some(),
        "daemon did not quit"
    );
    // The image is a consistent qcow2 holding what the guest wrote.
    crate::qcow2::check(&img).success("qemu-img check");
    let raw = img.with_extension("raw");
    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&img)
            .arg(&raw),
    );
    for &(off, len, seed) in &writes {
        assert_eq!(read_region(&raw, off, len), pattern(len, seed), "at {off}");
    }
}

#[test]
fn vhost_user_blk_writes_mark_dirty_bitmaps() {
    let dir = scratch();
    make_filled(&dir.path().join("disk.img"), 16 * MIB, 9);
    let d = Daemon::start(
        dir,
        &[
            "--blockdev",
            "driver=file,node-name=disk0,filename={dir}/disk.img",
            "--export",
            "type=vhost-user-blk,id=vu0,node-name=disk0,addr.type=unix,addr.path={dir}/vhost.sock,writable=on,num-queues=1",
        ],
    );
    let mut qmp = d.qmp();
    qmp.ok(
        "block-dirty-bitmap-add",
        json!({"node": "disk0", "name": "b0", "granularity": 65536}),
    );
    let sock = d.path("vhost.sock");
    wait_for_socket(&sock);
    let mut c = Client::connect(&sock, 1, false).expect("blkio connects");
    let q = &mut c.queues[0];
    // Two writes in distinct 64 KiB granules, one of them across a boundary
    // (three granules dirty), and a write-zeroes in a fourth.
    q.write(0, &pattern(4096, 1)).expect("write");
    q.write(MIB - 512, &pattern(1024, 2))
        .expect("write across granules");
    q.write_zeroes(8 * MIB, 4096, false).expect("write zeroes");
    let nodes = qmp.ok("query-named-block-nodes", json!({}));
    let node = nodes
        .as_array()
        .and_then(|a| a.iter().find(|n| n["node-name"] == "disk0"))
        .expect("disk0 listed");
    let bitmaps = node["dirty-bitmaps"].as_array().expect("dirty-bitmaps");
    assert_eq!(bitmaps.len(), 1);
    assert_eq!(bitmaps[0]["name"], "b0");
    assert_eq!(bitmaps[0]["count"], 4 * 65536, "{bitmaps:?}");
}
