//! vhost-user-blk over the remote nodes: an NBD client node (the remote is
//! a second ringstor serving a file) and an rbd image on the tests' Ceph
//! cluster. Their leaves have no descriptor, so guest buffers take the
//! bounce path; what the guest writes must be what the remote holds.

use crate::blkio_client::Client;
use ringstor_tests::ceph::{ceph_installed, Ceph, CEPH_POOL, CEPH_USER};
use ringstor_tests::*;
use std::path::Path;

const MIB: u64 = 1 << 20;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29) ^ seed)
        .collect()
}

/// Aligned and unaligned writes, one of them spanning several segments.
const WRITES: [(u64, usize, u8); 3] = [
    (0, 4096, 1),
    (3 * MIB + 512, 69_632, 2),
    (15 * MIB, 1 << 20, 3),
];

/// Drives the vhost-user-blk export at `sock` over a 16 MiB node: writes
/// `WRITES`, writes then zeroes 64 KiB at 8 MiB, flushes, reads back.
fn guest_io(sock: &Path) {
    wait_for_socket(sock);
    let mut c = Client::connect(sock, 1, false).expect("blkio connects");
    assert_eq!(c.capacity(), 16 * MIB);
    let q = &mut c.queues[0];
    for &(off, len, seed) in &WRITES {
        q.write(off, &pattern(len, seed)).expect("write");
    }
    q.write(8 * MIB, &pattern(65536, 4)).expect("write");
    q.write_zeroes(8 * MIB, 65536, false).expect("write zeroes");
    q.flush().expect("flush");
    for &(off, len, seed) in &WRITES {
        assert_eq!(q.read(off, len).expect("read back"), pattern(len, seed));
    }
    assert_eq!(q.read(8 * MIB, 65536).expect("read zeroes"), vec![0; 65536]);
}

fn check_store(img: &Path) {
    for &(off, len, seed) in &WRITES {
        assert_eq!(read_region(img, off, len), pattern(len, seed), "at {off}");
    }
    assert_eq!(read_region(img, 8 * MIB, 65536), vec![0; 65536]);
}

#[test]
fn vhost_user_blk_serves_an_nbd_client_node() {
    if skip_on_qsd("ringstor's NBD client node through its bounce path") {
        return;
    }
    let rdir = scratch();
    make_filled(&rdir.path().join("disk.img"), 16 * MIB, 5);
    let remote = Daemon::start(
        rdir,
        &[
            "--blockdev",
            "driver=file,node-name=f,filename={dir}/disk.img",
            "--nbd-server",
            "addr.type=unix,addr.path={dir}/nbd.sock",
            "--export",
            "type=nbd,id=e0,node-name=f,name=src,writable=on",
        ],
    );
    let node = format!(
        "driver=nbd,node-name=disk0,server.type=unix,server.path={},export=src",
        remote.path("nbd.sock").display()
    );
    let d = Daemon::start(
        scratch(),
        &[
            "--blockdev",
            &node,
            "--export",
            "type=vhost-user-blk,id=vu0,node-name=disk0,addr.type=unix,addr.path={dir}/vhost.sock,writable=on,num-queues=1",
        ],
    );
    guest_io(&d.path("vhost.sock"));
    check_store(&remote.path("disk.img"));
}

#[test]
fn vhost_user_blk_serves_an_rbd_node() {
    if !ceph_installed() {
        eprintln!("SKIP: Ceph is not installed (tests/run installs ceph-mon, ceph-osd)");
        return;
    }
    if skip_on_qsd("rbd through ringstor's bounce path") {
        return;
    }
    let c = Ceph::shared();
    let img = format!("vu{}", std::process::id());
    c.rbd(&["create", "--size", "16M", &format!("{CEPH_POOL}/{img}")]);
    let secret = format!("secret,id=sec0,file={},format=base64", c.key_file.display());
    let node = format!(
        "driver=rbd,node-name=disk0,pool={CEPH_POOL},image={img},conf={},user={CEPH_USER},key-secret=sec0",
        c.conf.display()
    );
    let d = Daemon::start(
        scratch(),
        &[
            "--object",
            &secret,
            "--blockdev",
            &node,
            "--export",
            "type=vhost-user-blk,id=vu0,node-name=disk0,addr.type=unix,addr.path={dir}/vhost.sock,writable=on,num-queues=1",
        ],
    );
    guest_io(&d.path("vhost.sock"));
    drop(d);
    let out = c.dir().join(format!("{img}.raw"));
    c.rbd(&[
        "export",
        &format!("{CEPH_POOL}/{img}"),
        &out.to_string_lossy(),
    ]);
    check_store(&out);
}
