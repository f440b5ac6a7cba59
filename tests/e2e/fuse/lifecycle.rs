//! How a FUSE export ends: `block-export-del` safe (refused while the file
//! is open) and hard, `BLOCK_EXPORT_DELETED` once, unmount on `quit`, on
//! SIGTERM and after `kill -9`; and fio with crc32c verification on two
//! iothreads, over both transports.

use super::*;

fn events(q: &mut Qmp) -> usize {
    q.collect_events("BLOCK_EXPORT_DELETED", Duration::from_millis(300))
        .len()
}

fn removal(t: Transport) {
    let fd = fuse_daemon(4 * MIB, Fill::Pattern(4), "");
    let mut q = fd.d.qmp();
    fd.add(&mut q, t, json!({"writable": true}));
    let open = fs::File::open(&fd.mnt).expect("open the export");
    let e = q.err("block-export-del", json!({"id": "e0"}));
    assert_eq!(e.class, "GenericError");
    assert_eq!(e.desc, "export 'e0' still in use");
    assert!(mounted(&fd.mnt), "a refused removal keeps the mount");
    drop(open);
    q.ok("block-export-del", json!({"id": "e0"}));
    assert!(
        wait_unmounted(&fd.mnt, Duration::from_secs(5)),
        "safe removal unmounts"
    );
    assert_eq!(events(&mut q), 1, "one BLOCK_EXPORT_DELETED");
    assert_eq!(q.ok("query-block-exports", json!({})), json!([]));

    // Hard removal with the file open: unmounted, the open file is cut off.
    fd.add(&mut q, t, json!({"writable": true}));
    let open = fs::File::open(&fd.mnt).expect("open the export again");
    q.ok("block-export-del", json!({"id": "e0", "mode": "hard"}));
    assert!(
        wait_unmounted(&fd.mnt, Duration::from_secs(5)),
        "hard removal unmounts"
    );
    assert_eq!(
        events(&mut q),
        1,
        "one BLOCK_EXPORT_DELETED after hard removal"
    );
    let mut b = [0u8; 16];
    let r = std::os::unix::fs::FileExt::read_at(&open, &mut b, 0);
    assert!(r.is_err(), "I/O on a file of a removed export: {r:?}");
    drop(open);

    // SIGTERM: the daemon unmounts on its way out.
    fd.add(&mut q, t, json!({"writable": true}));
    let mut d = fd.d;
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(d.pid() as i32, libc::SIGTERM) };
    assert!(
        d.wait_exit(Duration::from_secs(10)).is_some(),
        "exit on SIGTERM"
    );
    assert!(
        wait_unmounted(&fd.mnt, Duration::from_secs(2)),
        "unmounted on SIGTERM"
    );
}

#[test]
fn fuse_removal_over_dev_fuse() {
    if skip_on_qsd("io-uring option") {
        return;
    }
    removal(Transport::Dev);
}

#[test]
fn fuse_removal_over_io_uring() {
    if skip_on_qsd("io-uring option") {
        return;
    }
    let Some(_g) = uring_enabled("FUSE over io_uring removal") else {
        return;
    };
    removal(Transport::Uring);
}

#[test]
fn fuse_mount_does_not_outlive_kill_9() {
    if skip_on_qsd("QSD leaves its mount behind") {
        return;
    }
    let fd = fuse_daemon(MIB, Fill::Sparse, "");
    let mut q = fd.d.qmp();
    fd.add(&mut q, Transport::Dev, json!({"writable": true}));
    let _busy = fs::File::open(&fd.mnt).expect("open the export");
    let pid = fd.d.pid();
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        wait_unmounted(&fd.mnt, Duration::from_secs(5)),
        "the mount outlived kill -9"
    );
}

fn fio_verify(t: Transport) {
    let fd = fuse_daemon(64 * MIB, Fill::Sparse, ",aio=io_uring");
    let mut q = fd.d.qmp();
    fd.add(
        &mut q,
        t,
        json!({"writable": true, "iothread": ["io0", "io1"]}),
    );
    let file = format!("--filename={}", fd.mnt_str());
    let r = run(
        "fio",
        &[
            "--name=verify",
            &file,
            "--ioengine=io_uring",
            "--direct=1",
            "--rw=randwrite",
            "--bs=4k",
            "--bsrange=4k-64k",
            "--iodepth=32",
            "--numjobs=2",
            "--offset_increment=32M",
            "--size=24M",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--verify_state_save=0",
        ],
        Duration::from_secs(120),
    );
    let r = r.success("fio --verify=crc32c");
    assert!(!r.stdout.contains("verify: bad"), "{}", r.stdout);
    q.ok("quit", json!({}));
    let mut d = fd.d;
    assert!(d.wait_exit(Duration::from_secs(10)).is_some());
    let err = d.stderr();
    assert!(err.contains("on 2 iothread(s)"), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("requests over"))
        .collect();
    assert_eq!(lines.len(), 2, "one summary per iothread: {err}");
    if t == Transport::Uring {
        assert!(ring_requests(&err) > 1000, "{err}");
    }
}

#[test]
fn fuse_fio_verify_two_iothreads_over_dev_fuse() {
    if skip_on_qsd("io-uring option, iothread list") {
        return;
    }
    fio_verify(Transport::Dev);
}

#[test]
fn fuse_fio_verify_two_iothreads_over_io_uring() {
    if skip_on_qsd("io-uring option, iothread list") {
        return;
    }
    let Some(_g) = uring_enabled("FUSE over io_uring with fio") else {
        return;
    };
    fio_verify(Transport::Uring);
}
