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
    vhost_daemon_with(size, extra, &[])
}

/// [`vhost_daemon`] with more command-line items (iothreads, say).
fn vhost_daemon_with(size: u64, extra: &str, more: &[&str]) -> (Daemon, PathBuf, PathBuf) {
    let dir = scratch();
    let img = dir.path().join("disk.img");
    make_filled(&img, size, 5);
    let export = format!(
        "type=vhost-user-blk,id=vu0,node-name=disk0,addr.type=unix,addr.path={{dir}}/vhost.sock{extra}"
    );
    // discard=unmap: these tests see discards punch the file (QEMU's
    // default, ignore, would make them succeed without effect).
    let mut args = vec![
        "--blockdev",
        "driver=file,node-name=disk0,filename={dir}/disk.img,discard=unmap",
        "--object",
        "iothread,id=io0",
    ];
    args.extend_from_slice(more);
    args.extend_from_slice(&["--export", &export]);
    let d = Daemon::start(dir, &args);
    let sock = d.path("vhost.sock");
    wait_for_socket(&sock);
    (d, img, sock)
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

#[test]
fn blkio_flush_discard_and_write_zeroes() {
    let (_d, img, sock) = vhost_daemon(8 * MIB, ",writable=on,num-queues=1");
    let mut c = Client::connect(&sock, 1, false).expect("blkio connects");
    let q = &mut c.queues[0];
    let before = read_region(&img, 2 * MIB, MIB as usize);
    assert!(before.iter().any(|&b| b != 0));
    q.write_zeroes(2 * MIB, MIB, false).expect("write zeroes");
    assert!(read_region(&img, 2 * MIB, MIB as usize)
        .iter()
        .all(|&b| b == 0));
    assert!(q
        .read(2 * MIB, MIB as usize)
        .expect("read")
        .iter()
        .all(|&b| b == 0));
    q.write_zeroes(4 * MIB, 64 * 1024, true)
        .expect("write zeroes, unmap");
    assert!(read_region(&img, 4 * MIB, 64 * 1024)
        .iter()
        .all(|&b| b == 0));
    // Discard punches a hole in the file: it reads back as zeroes here.
    q.discard(6 * MIB, MIB).expect("discard");
    assert!(read_region(&img, 6 * MIB, MIB as usize)
        .iter()
        .all(|&b| b == 0));
    // Neighbours are untouched.
    assert_eq!(read_region(&img, 3 * MIB, 4096), pattern_at(3 * MIB, 4096));
    q.flush().expect("flush");
}

/// The bytes [`make_filled`] put at `offset` (seed 5).
fn pattern_at(offset: u64, len: usize) -> Vec<u8> {
    pattern(offset as usize + len, 5)[offset as usize..].to_vec()
}

#[test]
fn blkio_several_queues_from_several_threads() {
    let (d, img, sock) = vhost_daemon_with(
        32 * MIB,
        ",writable=on,num-queues=4,iothread.0=io0,iothread.1=io1",
        &["--object", "iothread,id=io1"],
    );
    let _ = d;
    let c = Client::connect(&sock, 4, false).expect("blkio connects with 4 queues");
    let Client { blkio, queues, .. } = c;
    let threads: Vec<_> = queues
        .into_iter()
        .enumerate()
        .map(|(i, mut q)| {
            std::thread::spawn(move || {
                // Each thread owns an 8 MiB stripe and writes 64 KiB blocks.
                for k in 0..32u64 {
                    let off = i as u64 * 8 * MIB + k * 64 * 1024;
                    let data = pattern(64 * 1024, 1000 + i as u64 * 100 + k);
                    q.write(off, &data).expect("write");
                    assert_eq!(q.read(off, data.len()).expect("read"), data);
                }
                q
            })
        })
        .collect();
    let queues: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    for i in 0..4u64 {
        for k in [0u64, 31] {
            let off = i * 8 * MIB + k * 64 * 1024;
            assert_eq!(
                read_region(&img, off, 64 * 1024),
                pattern(64 * 1024, 1000 + i * 100 + k)
            );
        }
    }
    drop(queues);
    drop(blkio);
}

#[test]
fn blkio_read_only_export_refuses_writes() {
    let (_d, img, sock) = vhost_daemon(4 * MIB, ",num-queues=1");
    let mut c = Client::connect(&sock, 1, true).expect("blkio connects read-only");
    assert!(c.blkio.get_bool("read-only").expect("read-only"));
    let q = &mut c.queues[0];
    assert_eq!(q.read(0, 4096).expect("read"), pattern_at(0, 4096));
    let e = q.write(0, &[0xaa; 4096]).expect_err("write refused");
    assert!(e < 0, "an errno: {e}");
    assert!(q.discard(0, 4096).is_err());
    assert_eq!(read_region(&img, 0, 4096), pattern_at(0, 4096));
    // A read-write client is refused by libblkio itself (VIRTIO_BLK_F_RO).
    drop(c);
    assert!(Client::connect(&sock, 1, false).is_err());
}

#[test]
fn blkio_reconnects_after_a_client_drops() {
    let (d, _img, sock) = vhost_daemon(4 * MIB, ",writable=on,num-queues=2");
    for round in 0..3u64 {
        let mut c = Client::connect(&sock, 2, false).expect("blkio connects again");
        let data = pattern(8192, 77 + round);
        c.queues[1].write(round * 8192, &data).expect("write");
        assert_eq!(c.queues[0].read(round * 8192, 8192).expect("read"), data);
        // Dropped without a clean shutdown of the queues.
    }
    // A client process killed while connected: the export keeps listening.
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "vhost_user_blk::blkio_child_client",
            "--ignored",
            "--nocapture",
        ])
        .env("RINGSTOR_VU_SOCK", &sock)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn child client");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("child stdout"));
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !line.contains("CONNECTED") {
        line.clear();
        assert!(Instant::now() < deadline, "child client never connected");
        if std::io::BufRead::read_line(&mut out, &mut line).expect("child output") == 0 {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("child client exited before connecting: {err}");
        }
    }
    child.kill().expect("kill child");
    let _ = child.wait();
    let mut c = Client::connect(&sock, 1, false).expect("connects after drops");
    assert_eq!(
        c.queues[0].read(2 * 8192, 8192).expect("read"),
        pattern(8192, 79)
    );
    let mut q = d.qmp();
    let exports = q.ok("query-block-exports", json!({}));
    assert_eq!(exports[0]["type"], "vhost-user-blk");
}

#[test]
fn blkio_sees_logical_block_size_4096() {
    let (_d, _img, sock) =
        vhost_daemon(4 * MIB, ",writable=on,logical-block-size=4096,num-queues=1");
    let mut c = Client::connect(&sock, 1, false).expect("blkio connects");
    assert_eq!(c.block_size(), 4096);
    let q = &mut c.queues[0];
    q.write(8192, &pattern(4096, 9)).expect("aligned write");
    assert_eq!(q.read(8192, 4096).expect("read"), pattern(4096, 9));
}

/// Run by [`blkio_reconnects_after_a_client_drops`] as a separate process
/// that connects, writes, says so, and waits to be killed.
#[test]
#[ignore = "helper process for blkio_reconnects_after_a_client_drops"]
fn blkio_child_client() {
    let Some(sock) = std::env::var_os("RINGSTOR_VU_SOCK") else {
        return;
    };
    let mut c = Client::connect(Path::new(&sock), 1, false).expect("child connects");
    c.queues[0]
        .write(0, &pattern(4096, 1))
        .expect("child write");
    println!("CONNECTED");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn vhost_user_blk_requests_are_counted_per_queue() {
    if skip_on_qsd("x-query-export-stats") {
        return;
    }
    let (d, _img, sock) = vhost_daemon(4 * MIB, ",writable=on,num-queues=2");
    let mut c = Client::connect(&sock, 2, false).expect("blkio connects");
    for i in 0..5u64 {
        c.queues[0]
            .write(i * 4096, &pattern(4096, i))
            .expect("write");
    }
    for i in 0..3u64 {
        c.queues[1].read(i * 8192, 8192).expect("read");
    }
    c.queues[0].discard(MIB, 64 * 1024).expect("discard");
    assert!(c.queues[1].read(4 * MIB, 4096).is_err(), "past the end");
    let mut q = d.qmp();
    let r = q.ok("x-query-export-stats", json!({}));
    let e = r
        .as_array()
        .and_then(|a| a.iter().find(|e| e["id"] == "vu0"))
        .unwrap_or_else(|| panic!("no vu0 in {r}"));
    assert_eq!(e["type"], "vhost-user-blk");
    let st = &e["stats"];
    assert_eq!(st["write"]["operations"], 5, "{st}");
    assert_eq!(st["write"]["bytes"], 5 * 4096, "{st}");
    assert_eq!(st["read"]["operations"], 3, "{st}");
    assert_eq!(st["read"]["bytes"], 3 * 8192, "{st}");
    assert_eq!(st["discard"]["operations"], 1, "{st}");
    assert_eq!(st["read"]["invalid"], 1, "{st}");
}
