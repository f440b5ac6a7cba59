//! vhost-user-blk exports driven by libblkio (`blkio` crate,
//! `virtio-blk-vhost-user`): data, flush, discard, write-zeroes, several
//! queues, read-only, reconnect, logical block size; QMP and CLI forms.

use crate::blkio_client::Client;
use ringstor_tests::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// A daemon exporting `{dir}/disk.img` (`size` bytes, pattern-filled) over
/// vhost-user-blk at `{dir}/vhost.sock` with `extra` export options.
fn vhost_daemon(size: u64, extra: &str) -> (Daemon, PathBuf, PathBuf) {
    let dir = scratch();
    let img = dir.path().join("disk.img");
    make_filled(&img, size, 5);
    let export = format!(
        "type=vhost-user-blk,id=vu0,node-name=disk0,addr.type=unix,addr.path={{dir}}/vhost.sock{extra}"
    );
    let d = Daemon::start(
        dir,
        &[
            "--blockdev",
            "driver=file,node-name=disk0,filename={dir}/disk.img",
            "--object",
            "iothread,id=io0",
            "--export",
            &export,
        ],
    );
    let sock = d.path("vhost.sock");
    wait_for_socket(&sock);
    (d, img, sock)
}

fn wait_for_socket(p: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn blkio_reads_writes_and_compares_with_the_image() {
    let (_d, img, sock) = vhost_daemon(16 * MIB, ",writable=on,iothread=io0,num-queues=1");
    let mut c = Client::connect(&sock, 1, false).expect("blkio connects");
    assert_eq!(c.capacity(), 16 * MIB);
    let q = &mut c.queues[0];
    // What the image holds reads back as is.
    let got = q.read(MIB, 64 * 1024).expect("read");
    assert_eq!(got, read_region(&img, MIB, 64 * 1024));
    // Patterns of several sizes written through the export land in the file.
    for (i, (off, len)) in [
        (0u64, 4096usize),
        (3 * MIB + 512, 512),
        (8 * MIB, MIB as usize),
    ]
    .into_iter()
    .enumerate()
    {
        let data = pattern(len, 100 + i as u64);
        q.write(off, &data).expect("write");
        assert_eq!(q.read(off, len).expect("read back"), data);
        assert_eq!(read_region(&img, off, len), data, "image at {off}");
    }
    q.flush().expect("flush");
    // Past the end: an I/O error, and the queue keeps working.
    assert!(q.read(16 * MIB - 512, 4096).is_err());
    assert_eq!(
        q.read(0, 4096).expect("read after error"),
        pattern(4096, 100)
    );
}
