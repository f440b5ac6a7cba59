//! vhost-user-blk guest writes under each buffered-write strategy
//! (`RINGSTOR_BUFFERED_WRITES`): small writes go inline (`pwritev` on the
//! iothread) or straight to an io-wq worker, large ones through the ring;
//! whatever the path, the data lands in the image and reads back.

use crate::blkio_client::Client;
use ringstor_tests::daemon::expand;
use ringstor_tests::*;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

fn writes_land_with(strategy: &str) {
    let dir = scratch();
    let img = dir.path().join("disk.img");
    make_filled(&img, 8 * MIB, 9);
    let args = expand(
        dir.path(),
        &[
            "--blockdev",
            "driver=file,node-name=disk0,filename={dir}/disk.img",
            "--object",
            "iothread,id=io0",
            "--export",
            "type=vhost-user-blk,id=vu0,node-name=disk0,addr.type=unix,addr.path={dir}/vhost.sock,writable=on,iothread=io0,num-queues=1",
        ],
    );
    let sock = dir.path().join("vhost.sock");
    let d = Daemon::spawn_with(&binary(), dir, args, sock.clone(), |c| {
        c.env("RINGSTOR_BUFFERED_WRITES", strategy);
    })
    .unwrap_or_else(|e| panic!("daemon exited early: {}", e.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c = loop {
        match Client::connect(&sock, 1, false) {
            Ok(c) => break c,
            // The socket exists from bind(), a moment before listen().
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("blkio connects: {e}"),
        }
    };
    let q = &mut c.queues[0];
    // 512 bytes and 4 KiB (inline-sized), 64 KiB (the inline limit), 1 MiB.
    for (i, (off, len)) in [
        (512u64, 512usize),
        (MIB, 4096),
        (2 * MIB + 4096, 64 * 1024),
        (4 * MIB, MIB as usize),
    ]
    .into_iter()
    .enumerate()
    {
        let data = pattern(len, 300 + i as u64);
        q.write(off, &data).expect("write");
        assert_eq!(
            q.read(off, len).expect("read back"),
            data,
            "{strategy} at {off}"
        );
        assert_eq!(
            read_region(&img, off, len),
            data,
            "{strategy}: image at {off}"
        );
    }
    // The neighbours of a small write are untouched.
    assert_eq!(read_region(&img, 0, 512), pattern(512, 9));
    drop(c);
    drop(d);
}

#[test]
fn guest_writes_land_inline_and_async() {
    writes_land_with("inline");
    writes_land_with("async");
}
