//! The last differences from QSD, each checked by running the same steps
//! on ringstor and on QSD and comparing what a client sees:
//! `max-connections`, image sizes that are not a multiple of 512,
//! `--chardev ...,wait=on`, and `exec-oob` of an unknown command.

use nix::sys::signal::Signal;
use ringstor_tests::daemon::{expand, QSD_BIN};
use ringstor_tests::nbdraw::RawNbd;
use ringstor_tests::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// The binaries to compare: the one under test, and QSD when it is a
/// different one.
fn binaries() -> Vec<PathBuf> {
    let mut bins = vec![binary()];
    if !skip_unless_comparing("the same steps on QSD") {
        bins.push(PathBuf::from(QSD_BIN));
    }
    bins
}

/// Compares what each binary showed; the first is the one under test.
fn all_equal<T: PartialEq + std::fmt::Debug>(seen: &[(PathBuf, T)]) {
    for (bin, s) in &seen[1..] {
        assert_eq!(&seen[0].1, s, "{} differs", bin.display());
    }
}

/// Whether a greeting arrives on `s` within `timeout`.
fn greeted(s: &mut UnixStream, timeout: Duration) -> bool {
    s.set_read_timeout(Some(timeout)).expect("read timeout");
    let mut magic = [0u8; 8];
    match s.read_exact(&mut magic) {
        Ok(()) => &magic == b"NBDMAGIC",
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("read greeting: {e}"),
    }
}

/// `max-connections=2`: two clients, a third that waits in the backlog,
/// served once one of the two leaves. Returns (third greeted while two
/// were connected, third greeted after one left, nbdinfo once all left).
fn limit_of_two(bin: &Path) -> (bool, bool, bool) {
    let dir = scratch();
    make_sparse(&dir.path().join("disk.img"), MIB);
    let d = Daemon::start_bin(
        bin,
        dir,
        &[
            "--blockdev",
            "driver=file,node-name=disk0,filename={dir}/disk.img",
            "--nbd-server",
            "addr.type=unix,addr.path={dir}/nbd.sock,max-connections=2",
            "--export",
            "type=nbd,id=e0,node-name=disk0,name=disk0",
        ],
    );
    let sock = d.path("nbd.sock");
    let mut first = RawNbd::greet(&sock, Duration::from_secs(10)).expect("first client");
    first.go("disk0");
    let second = RawNbd::greet(&sock, Duration::from_secs(10)).expect("second client");
    // connect(2) succeeds: the kernel queues it in the listen backlog.
    let mut third = UnixStream::connect(&sock).expect("third client connects");
    let early = greeted(&mut third, Duration::from_millis(700));
    drop(first);
    let later = greeted(&mut third, Duration::from_secs(10));
    drop((second, third));
    let uri = nbd_uri("disk0", &sock);
    let mut served = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !served && Instant::now() < deadline {
        served = run("nbdinfo", &["--size", &uri], TOOL_TIMEOUT)
            .status
            .success();
    }
    (early, later, served)
}

#[test]
fn max_connections_makes_further_clients_wait_as_in_qsd() {
    let seen: Vec<_> = binaries()
        .into_iter()
        .map(|b| {
            let r = limit_of_two(&b);
            (b, r)
        })
        .collect();
    assert_eq!(seen[0].1, (false, true, true), "wait, then served");
    all_equal(&seen);
}

/// Without `max-connections`, QSD (since 9.1) serves 100 clients at once.
fn default_limit(bin: &Path) -> usize {
    let dir = scratch();
    make_sparse(&dir.path().join("disk.img"), MIB);
    let d = Daemon::start_bin(
        bin,
        dir,
        &[
            "--nbd-server",
            "addr.type=unix,addr.path={dir}/nbd.sock,handshake-max-seconds=30",
        ],
    );
    let sock = d.path("nbd.sock");
    let mut held = Vec::new();
    for _ in 0..101 {
        let mut s = UnixStream::connect(&sock).expect("connect");
        if !greeted(&mut s, Duration::from_secs(2)) {
            break;
        }
        held.push(s);
    }
    held.len()
}

#[test]
fn default_max_connections_is_qsds() {
    let seen: Vec<_> = binaries()
        .into_iter()
        .map(|b| {
            let n = default_limit(&b);
            (b, n)
        })
        .collect();
    assert_eq!(seen[0].1, 100);
    all_equal(&seen);
}

/// What a client sees of a 1,000,000-byte image.
#[derive(Debug, PartialEq)]
struct Unaligned {
    size: String,
    map: String,
    tail: Vec<u8>,
    file_len_after_write: u64,
    after_write: Vec<u8>,
    window_size: String,
    virtual_size: Value,
}

const ODD: u64 = 1_000_000;

fn unaligned(bin: &Path) -> Unaligned {
    let dir = scratch();
    let img = dir.path().join("disk.img");
    make_filled(&img, ODD, 29);
    let d = Daemon::start_bin(
        bin,
        dir,
        &[
            "--blockdev",
            "driver=file,node-name=file0,filename={dir}/disk.img",
            "--blockdev",
            "driver=raw,node-name=disk0,file=file0",
            "--blockdev",
            "driver=raw,node-name=win,file=file0,offset=1000",
            "--nbd-server",
            "addr.type=unix,addr.path={dir}/nbd.sock",
            "--export",
            "type=nbd,id=e0,node-name=disk0,name=disk0,writable=on",
            "--export",
            "type=nbd,id=e1,node-name=win,name=win",
        ],
    );
    let sock = d.path("nbd.sock");
    let uri = nbd_uri("disk0", &sock);
    let nbdinfo = |args: &[&str]| {
        run("nbdinfo", args, TOOL_TIMEOUT)
            .success("nbdinfo")
            .stdout
            .trim()
            .to_string()
    };
    let size = nbdinfo(&["--size", &uri]);
    let map = nbdinfo(&["--map", &uri]);
    let window_size = nbdinfo(&["--size", &nbd_uri("win", &sock)]);
    let script = "import nbd,sys\n\
                  h=nbd.NBD()\nh.connect_uri(sys.argv[1])\n\
                  sys.stdout.write(h.pread(1024, 999424).hex()+'\\n')\n\
                  h.pwrite(b'\\x5a'*100, 1000200)\nh.flush()\n\
                  sys.stdout.write(h.pread(448, 1000000).hex()+'\\n')\n";
    let out = run_python(script, &[&uri])
        .success("nbdsh-style tail reads")
        .stdout;
    let mut lines = out.lines().map(|l| {
        (0..l.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&l[i..i + 2], 16).expect("hex"))
            .collect::<Vec<u8>>()
    });
    let tail = lines.next().expect("tail read");
    let after_write = lines.next().expect("read after write");
    let mut q = d.qmp();
    let nodes = q.ok("query-named-block-nodes", json!({}));
    let virtual_size = nodes
        .as_array()
        .and_then(|a| a.iter().find(|n| n["node-name"] == "disk0"))
        .map(|n| n["image"]["virtual-size"].clone())
        .unwrap_or(Value::Null);
    Unaligned {
        size,
        map,
        tail,
        file_len_after_write: std::fs::metadata(&img).expect("image").len(),
        after_write,
        window_size,
        virtual_size,
    }
}

#[test]
fn unaligned_image_size_is_rounded_as_in_qsd() {
    let seen: Vec<_> = binaries()
        .into_iter()
        .map(|b| {
            let u = unaligned(&b);
            (b, u)
        })
        .collect();
    let ours = &seen[0].1;
    assert_eq!(ours.size, "1000448");
    assert_eq!(ours.window_size, "999936");
    assert_eq!(ours.virtual_size, json!(1_000_448));
    let data = pattern(ODD as usize, 29);
    assert_eq!(ours.tail[..576], data[999_424..]);
    assert!(
        ours.tail[576..].iter().all(|&b| b == 0),
        "the tail reads as zeroes"
    );
    assert_eq!(
        ours.file_len_after_write, 1_000_300,
        "a tail write extends the file"
    );
    assert!(ours.after_write[..200].iter().all(|&b| b == 0));
    assert!(ours.after_write[200..300].iter().all(|&b| b == 0x5a));
    assert!(ours.after_write[300..].iter().all(|&b| b == 0));
    all_equal(&seen);
}

/// `--chardev socket,server=on` (wait=on by default): start-up stops at
/// the chardev until the first monitor client connects. Returns (the
/// waiting line, anything later created before the client, everything
/// created after it).
fn wait_on(bin: &Path) -> (String, bool, bool) {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    let qmp = path.join("qmp.sock");
    let args = expand(
        &path,
        &[
            "--chardev",
            "socket,id=mon,path={dir}/qmp.sock,server=on",
            "--nbd-server",
            "addr.type=unix,addr.path={dir}/nbd.sock",
            "--monitor",
            "chardev=mon",
            "--pidfile",
            "{dir}/pid",
        ],
    );
    let d = Daemon::spawn(bin, dir, args, qmp.clone()).expect("started");
    sleep(Duration::from_millis(300));
    let early = path.join("nbd.sock").exists() || path.join("pid").exists();
    let line = d
        .stderr()
        .lines()
        .find(|l| l.contains("waiting for connection"))
        .map(|l| {
            l.split_once(": --chardev")
                .map_or(l, |(_, r)| r)
                .to_string()
        })
        .unwrap_or_default();
    let mut q = Qmp::connect(&qmp);
    q.ok("query-version", json!({}));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.join("pid").exists() && Instant::now() < deadline {
        sleep(Duration::from_millis(20));
    }
    let later = path.join("pid").exists() && path.join("nbd.sock").exists();
    (
        line.replace(&path.display().to_string(), "{dir}"),
        early,
        later,
    )
}

#[test]
fn chardev_wait_on_blocks_start_up_as_in_qsd() {
    let seen: Vec<_> = binaries()
        .into_iter()
        .map(|b| {
            let r = wait_on(&b);
            (b, r)
        })
        .collect();
    assert_eq!(
        seen[0].1,
        (
            " socket,id=mon,path={dir}/qmp.sock,server=on: info: QEMU waiting for connection on: disconnected:unix:{dir}/qmp.sock,server=on".to_string(),
            false,
            true
        )
    );
    all_equal(&seen);
}

#[test]
fn chardev_wait_on_tcp_port_zero_names_the_port() {
    for bin in binaries() {
        let d = Daemon::spawn(
            &bin,
            scratch(),
            vec![
                "--chardev".into(),
                "socket,id=mon,host=127.0.0.1,port=0,server=on".into(),
                "--monitor".into(),
                "chardev=mon".into(),
            ],
            PathBuf::from("/"),
        )
        .expect("started");
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            let err = d.stderr();
            let found = err
                .split("disconnected:tcp:127.0.0.1:")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .and_then(|p| p.parse::<u16>().ok());
            if let Some(p) = found {
                break p;
            }
            assert!(Instant::now() < deadline, "no waiting line: {err}");
            sleep(Duration::from_millis(20));
        };
        assert_ne!(port, 0);
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut greeting = String::new();
        BufReader::new(s)
            .read_line(&mut greeting)
            .expect("greeting");
        assert!(
            greeting.starts_with("{\"QMP\": "),
            "{}: {greeting}",
            bin.display()
        );
    }
}

#[test]
fn a_signal_ends_the_wait_for_the_monitor() {
    // QSD ignores SIGTERM while it waits; ringstor quits.
    if skip_on_qsd("quitting while wait=on waits") {
        return;
    }
    let dir = scratch();
    let qmp = dir.path().join("qmp.sock");
    let args = vec![
        "--chardev".into(),
        format!("socket,id=mon,path={},server=on", qmp.display()),
        "--monitor".into(),
        "chardev=mon".into(),
    ];
    let mut d = Daemon::spawn(&binary(), dir, args, qmp.clone()).expect("started");
    d.signal(Signal::SIGTERM);
    let status = d
        .wait_exit(Duration::from_secs(5))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(!qmp.exists(), "the socket file is removed");
}

/// Replies to `exec-oob` after negotiating `oob`.
fn oob_replies(bin: &Path) -> Vec<Value> {
    let d = Daemon::start_bin(bin, scratch(), &[]);
    let mut q = Qmp::connect_raw(d.qmp_path());
    let r = q.send(&json!({"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}));
    assert_eq!(r, json!({"return": {}}));
    [
        json!({"exec-oob": "no-such-command", "id": 1}),
        json!({"exec-oob": "query-version", "id": 2}),
        json!({"exec-oob": "qmp_capabilities"}),
    ]
    .iter()
    .map(|m| q.send(m))
    .collect()
}

#[test]
fn exec_oob_of_an_unknown_command_is_command_not_found() {
    let seen: Vec<_> = binaries()
        .into_iter()
        .map(|b| {
            let r = oob_replies(&b);
            (b, r)
        })
        .collect();
    assert_eq!(seen[0].1[0]["error"]["class"], "CommandNotFound");
    assert_eq!(
        seen[0].1[0]["error"]["desc"],
        "The command no-such-command has not been found"
    );
    all_equal(&seen);
}
