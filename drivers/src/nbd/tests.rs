//! In-crate checks of the server with real clients (qemu-img, qemu-io);
//! the full matrix lives in the end-to-end suite.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use engine::block::{BlockNode, FileOptions, NodeOptions};
use engine::iothread::{IoThread, IoThreadConfig};

use super::*;
use crate::export::{ExportCommon, RemoveMode};
use crate::socket::ListenAddr;

struct StderrLog;
impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        eprintln!("{} {}", r.level(), r.args());
    }
    fn flush(&self) {}
}
static LOGGER: StderrLog = StderrLog;

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

#[test]
fn qemu_io_write_then_read_back() {
    let _ = log::set_logger(&LOGGER).map(|()| log::set_max_level(log::LevelFilter::Debug));
    if !have("qemu-io") {
        eprintln!("qemu-io missing; skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let img = dir.path().join("img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(4 << 20))
        .expect("img");
    let sock = dir.path().join("nbd.sock");
    let t = IoThread::spawn(IoThreadConfig {
        name: "t-nbd".into(),
        cpu: None,
        movable: false,
        ring_entries: 256,
        poll_max_ns: 0,
    })
    .expect("iothread");
    let node = BlockNode::open(
        "disk0",
        "file",
        NodeOptions::File(FileOptions {
            filename: img.to_string_lossy().into(),
            direct: false,
            no_flush: false,
            read_only: false,
            locking: false,
            host_device: false,
        }),
    )
    .expect("node");
    let cfg = NbdServerConfig {
        listener: crate::socket::listen(ListenAddr::Unix(sock.clone())).expect("listen"),
        max_connections: 0,
        handshake_timeout: Some(Duration::from_secs(10)),
        tls: None,
    };
    let server = NbdServer::start(cfg, t.handle().clone()).expect("server");
    let (tx, rx) = crossbeam_channel::unbounded();
    let common = ExportCommon {
        id: "e0".into(),
        node: node.clone(),
        writable: true,
        writethrough: false,
        iothreads: vec![t.handle().clone()],
        on_drained: Arc::new(move |id: &str| {
            let _ = tx.send(id.to_string());
        }),
        stats: crate::stats::ExportStats::new("e0", "disk0"),
    };
    let mut export = server
        .add_export(
            common,
            NbdExportOptions {
                name: "disk0".into(),
                ..Default::default()
            },
        )
        .expect("export");
    let uri = format!("nbd+unix:///disk0?socket={}", sock.display());
    let out = Command::new("qemu-io")
        .args([
            "-f",
            "raw",
            "-c",
            "write -P 0xab 4096 65536",
            "-c",
            "read -P 0xab 4096 65536",
            "-c",
            "flush",
            &uri,
        ])
        .output()
        .expect("qemu-io");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("Pattern verification failed"), "{text}");
    let data = std::fs::read(&img).expect("img");
    assert!(data[4096..4096 + 65536].iter().all(|&b| b == 0xab));
    assert!(data[..4096].iter().all(|&b| b == 0));
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", &uri])
        .output()
        .expect("qemu-img");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"virtual-size\": 4194304"), "{text}");
    // The server notices the clients' close asynchronously: retry briefly.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while export.remove(RemoveMode::Safe).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "clients never went away"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).expect("drained"),
        "e0"
    );
    server.stop();
    assert!(!sock.exists());
}
