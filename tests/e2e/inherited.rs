//! Sockets a launcher hands over: inherited `fd` addresses for the NBD
//! server and the monitor (compared with QSD), `getfd` over the monitor,
//! and systemd socket activation (beside qemu-nbd, which has it too).

use ringstor_tests::daemon::{expand, EarlyExit, QSD_BIN};
use ringstor_tests::inherit::{
    holds_socket, socket_inode, spawn_inheriting, unix_listener, Handed,
};
use ringstor_tests::*;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
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

/// `qemu-img compare` of the image with what the export serves.
fn same_data(img: &Path, uri: &str) -> bool {
    let img = img.display().to_string();
    run(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", &img, uri],
        TOOL_TIMEOUT,
    )
    .status
    .success()
}

/// What one daemon showed when it served NBD and its monitor on inherited
/// sockets.
#[derive(Debug, PartialEq)]
struct Served {
    size: String,
    same_data: bool,
    monitor: bool,
    closed_after_stop: bool,
    monitor_kept: bool,
}

fn serve_inherited(bin: &Path, tcp: bool) -> Served {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    let img = path.join("disk.img");
    make_filled(&img, MIB, 21);
    let mon = unix_listener(&path.join("qmp.sock"));
    let unix = unix_listener(&path.join("nbd.sock"));
    let tcp_l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let (nbd_fd, uri): (&dyn std::os::fd::AsFd, String) = if tcp {
        let port = tcp_l.local_addr().expect("local addr").port();
        (&tcp_l, format!("nbd://127.0.0.1:{port}/disk0"))
    } else {
        (&unix, nbd_uri("disk0", &path.join("nbd.sock")))
    };
    let nbd_ino = socket_inode(&nbd_fd.as_fd());
    let mon_ino = socket_inode(&mon);
    let args = expand(
        &path,
        &[
            "--blockdev",
            "driver=file,node-name=disk0,filename={dir}/disk.img",
            "--nbd-server",
            "addr.type=fd,addr.str=3",
            "--export",
            "type=nbd,id=e0,node-name=disk0,name=disk0",
            "--chardev",
            "socket,id=mon,fd=4,server=on,wait=off",
            "--monitor",
            "chardev=mon",
            "--pidfile",
            "{dir}/pid",
        ],
    );
    let fds: Handed = &[(nbd_fd, 3), (&mon, 4)];
    let d = spawn_inheriting(bin, dir, args, fds, None, path.join("pid"))
        .unwrap_or_else(|e| panic!("{}: {e:?}", bin.display()));
    let size = run("nbdinfo", &["--size", &uri], TOOL_TIMEOUT)
        .success("nbdinfo --size")
        .stdout;
    let same = same_data(&img, &uri);
    let mut q = Qmp::connect(&path.join("qmp.sock"));
    let monitor = q.execute("query-version", json!({})).is_ok();
    q.ok("nbd-server-stop", json!({}));
    let pid = d.pid();
    let deadline = Instant::now() + Duration::from_secs(5);
    while holds_socket(pid, nbd_ino) && Instant::now() < deadline {
        sleep(Duration::from_millis(20));
    }
    Served {
        size: size.trim().to_string(),
        same_data: same,
        monitor,
        closed_after_stop: !holds_socket(pid, nbd_ino),
        monitor_kept: holds_socket(pid, mon_ino),
    }
}

#[test]
fn inherited_sockets_serve_nbd_and_the_monitor_as_in_qsd() {
    for tcp in [false, true] {
        let seen: Vec<Served> = binaries().iter().map(|b| serve_inherited(b, tcp)).collect();
        let want = Served {
            size: MIB.to_string(),
            same_data: true,
            monitor: true,
            closed_after_stop: true,
            monitor_kept: true,
        };
        for s in &seen {
            assert_eq!(s, &want, "tcp={tcp}");
        }
    }
}

/// How a daemon given `addr.str=<text>` (and `fd` as descriptor 3, if
/// any) ends: `Ok` if it starts, else its one error message without the
/// program name.
fn start_with_fd(
    bin: &Path,
    option: &str,
    value: &str,
    fd: Option<&dyn std::os::fd::AsFd>,
) -> Result<(), String> {
    let dir = scratch();
    let path = dir.path().to_path_buf();
    let mut args = vec![option.to_string(), value.to_string()];
    if option == "--chardev" {
        args.extend(["--monitor".to_string(), "chardev=mon".to_string()]);
    }
    args.extend([
        "--pidfile".to_string(),
        path.join("pid").display().to_string(),
    ]);
    let fds: Vec<(&dyn std::os::fd::AsFd, i32)> = fd.into_iter().map(|f| (f, 3)).collect();
    match spawn_inheriting(bin, dir, args, &fds, None, path.join("pid")) {
        Ok(_) => Ok(()),
        Err(EarlyExit { status, stderr }) => {
            assert_eq!(status.code(), Some(1), "{stderr}");
            let line = stderr.lines().last().unwrap_or_default();
            // PROG: OPTION VALUE: MESSAGE
            let at = format!("{option} {value}: ");
            Err(line
                .split_once(&at)
                .map(|(_, m)| m.to_string())
                .unwrap_or_else(|| line.to_string()))
        }
    }
}

#[test]
fn unsuitable_descriptors_get_qsds_errors() {
    let dir = scratch();
    let file = std::fs::File::create(dir.path().join("plain")).expect("file");
    let (connected, _peer) = UnixStream::pair().expect("socketpair");
    let dgram = UnixDatagram::unbound().expect("datagram socket");
    let unbound = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("unbound socket");
    let bound = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    let bound_path = dir.path().join("bound.sock");
    let addr = nix::sys::socket::UnixAddr::new(&bound_path).expect("unix addr");
    nix::sys::socket::bind(bound.as_raw_fd(), &addr).expect("bind");
    type Case<'a> = (
        &'a str,
        Option<&'a dyn std::os::fd::AsFd>,
        Result<(), &'a str>,
    );
    let cases: Vec<Case> = vec![
        ("3", Some(&file), Err("File descriptor '3' is not a socket")),
        ("3", None, Err("File descriptor '3' is not a socket")),
        (
            "3",
            Some(&connected),
            Err("Failed to listen on fd socket: Invalid argument"),
        ),
        (
            "3",
            Some(&unbound),
            Err("Failed to listen on fd socket: Invalid argument"),
        ),
        (
            "3",
            Some(&dgram),
            Err("Failed to listen on fd socket: Operation not supported"),
        ),
        ("abc", None, Err("Unable to parse FD number abc")),
        ("3x", None, Err("Unable to parse FD number 3x")),
        (
            "2147483648",
            None,
            Err("Unable to parse FD number 2147483648: Numerical result out of range"),
        ),
        // Bound but not yet listening: made to listen, as QEMU does.
        ("3", Some(&bound), Ok(())),
    ];
    for bin in binaries() {
        for (text, fd, want) in &cases {
            let want = want.map_err(str::to_string);
            let nbd = start_with_fd(
                &bin,
                "--nbd-server",
                &format!("addr.type=fd,addr.str={text}"),
                *fd,
            );
            assert_eq!(nbd, want, "{} --nbd-server str={text}", bin.display());
            let chardev = start_with_fd(
                &bin,
                "--chardev",
                &format!("socket,id=mon,fd={text},server=on,wait=off"),
                *fd,
            );
            assert_eq!(chardev, want, "{} --chardev fd={text}", bin.display());
        }
    }
}

#[test]
fn getfd_hands_a_socket_to_nbd_server_start() {
    // QSD has neither getfd nor fd passing: both are errors there, of the
    // class ringstor gives an fd name it does not know.
    if !skip_unless_comparing("nbd-server-start with an unknown fd name") {
        compare_with_qsd(
            &[],
            &[json!({"execute": "nbd-server-start",
                     "arguments": {"addr": {"type": "fd", "data": {"str": "nbd"}}}})],
        );
    }
    if skip_on_qsd("getfd") {
        return;
    }
    let dd = disk_daemon(MIB, Fill::Pattern(3), &[]);
    let pid = dd.d.pid();
    let mut q = dd.d.qmp();
    let handed_path = dd.d.path("handed.sock");
    let handed = unix_listener(&handed_path);
    let getfd = |name: &str| json!({"execute": "getfd", "arguments": {"fdname": name}});
    let err_desc = |v: Value| v["error"]["desc"].as_str().unwrap_or_default().to_string();

    assert_eq!(
        q.err("getfd", json!({"fdname": "nbd"})).desc,
        "No file descriptor supplied via SCM_RIGHTS"
    );
    let base = fd_count(pid);
    let r = q.send_with_fds(&getfd("1nbd"), &[handed.as_raw_fd()]);
    assert_eq!(
        err_desc(r),
        "Parameter 'fdname' expects a name not starting with a digit"
    );
    assert_eq!(fd_count(pid), base, "a refused descriptor is closed");
    let r = q.send_with_fds(&getfd("nbd"), &[handed.as_raw_fd()]);
    assert_eq!(r["return"], json!({}), "{r}");
    assert_eq!(fd_count(pid), base + 1);

    let start = json!({"addr": {"type": "fd", "data": {"str": "nbd"}}});
    q.ok("nbd-server-start", start.clone());
    q.ok(
        "block-export-add",
        json!({"type": "nbd", "id": "e0", "node-name": "disk0", "name": "disk0"}),
    );
    let uri = nbd_uri("disk0", &handed_path);
    assert!(
        same_data(&dd.img, &uri),
        "served the image on the handed socket"
    );
    q.ok("nbd-server-stop", json!({}));
    let ino = socket_inode(&handed);
    eventually("the socket closes with the server", || {
        !holds_socket(pid, ino)
    });
    // The server took it: the name is gone.
    let e = q.err("nbd-server-start", start);
    assert_eq!(e.class, "GenericError");
    assert_eq!(e.desc, "File descriptor named 'nbd' has not been found");
    // Over QMP a number is a name too, as in QEMU.
    let e = q.err(
        "nbd-server-start",
        json!({"addr": {"type": "fd", "data": {"str": "3"}}}),
    );
    assert_eq!(e.desc, "File descriptor named '3' has not been found");

    // closefd closes; a name stored twice keeps the newer descriptor.
    let r = q.send_with_fds(&getfd("x"), &[handed.as_raw_fd()]);
    assert_eq!(r["return"], json!({}), "{r}");
    let r = q.send_with_fds(&getfd("x"), &[handed.as_raw_fd()]);
    assert_eq!(r["return"], json!({}), "{r}");
    assert_eq!(fd_count(pid), base + 1);
    q.ok("closefd", json!({"fdname": "x"}));
    assert_eq!(fd_count(pid), base);
    assert_eq!(
        q.err("closefd", json!({"fdname": "x"})).desc,
        "File descriptor named 'x' not found"
    );

    // Descriptors sent without getfd are closed, at the latest with the
    // connection.
    let mut other = dd.d.qmp();
    let before = fd_count(pid);
    let extra: Vec<_> = (0..3)
        .map(|_| UnixStream::pair().expect("pair").0)
        .collect();
    let raws: Vec<i32> = extra.iter().map(|s| s.as_raw_fd()).collect();
    let r = other.send_with_fds(&json!({"execute": "query-version"}), &raws);
    assert!(r.get("return").is_some(), "{r}");
    let r = other.send_with_fds(&json!({"execute": "query-version"}), &raws[..1]);
    assert!(r.get("return").is_some(), "{r}");
    drop(other);
    eventually("passed descriptors are closed", || fd_count(pid) < before);
}

#[test]
fn socket_activation_is_served_by_nbdinfo() {
    if skip_on_qsd("systemd socket activation") {
        return;
    }
    let dir = scratch();
    let path = dir.path().to_path_buf();
    let img = path.join("disk.img");
    make_filled(&img, MIB, 17);
    let nbd = unix_listener(&path.join("nbd.sock"));
    let mon = unix_listener(&path.join("qmp.sock"));
    let args = expand(
        &path,
        &[
            "--blockdev",
            "driver=file,node-name=disk0,filename={dir}/disk.img",
            "--nbd-server",
            "addr.type=fd,addr.str=nbd",
            "--export",
            "type=nbd,id=e0,node-name=disk0,name=disk0",
            "--chardev",
            "socket,id=mon,fd=qmp,server=on,wait=off",
            "--monitor",
            "chardev=mon",
            "--pidfile",
            "{dir}/pid",
        ],
    );
    let fds: Handed = &[(&nbd, 3), (&mon, 4)];
    let _d = spawn_inheriting(
        &binary(),
        dir,
        args,
        fds,
        Some(&["nbd", "qmp"]),
        path.join("pid"),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let uri = nbd_uri("disk0", &path.join("nbd.sock"));
    let info = run("nbdinfo", &["--json", &uri], TOOL_TIMEOUT).success("nbdinfo");
    let v: Value = serde_json::from_str(&info.stdout).expect("nbdinfo JSON");
    assert_eq!(v["exports"][0]["export-size"], json!(MIB));
    assert!(same_data(&img, &uri));
    let mut q = Qmp::connect(&path.join("qmp.sock"));
    q.ok("query-version", json!({}));
    drop(q);

    // --daemonize re-executes the daemon, which is then not LISTEN_PID
    // but its child: the activation still applies.
    let ddir = scratch();
    let dpath = ddir.path().to_path_buf();
    let dsock = unix_listener(&dpath.join("nbd.sock"));
    let args = expand(
        &dpath,
        &[
            "--blockdev",
            &format!("driver=file,node-name=disk0,filename={}", img.display()),
            "--nbd-server",
            "addr.type=fd,addr.str=nbd",
            "--export",
            "type=nbd,id=e0,node-name=disk0,name=disk0",
            "--pidfile",
            "{dir}/pid",
            "--daemonize",
        ],
    );
    let fds: Handed = &[(&dsock, 3)];
    let mut dd = spawn_inheriting(
        &binary(),
        ddir,
        args,
        fds,
        Some(&["nbd"]),
        dpath.join("pid"),
    )
    .unwrap_or_else(|e| panic!("daemonized: {e:?}"));
    let pid: i32 = std::fs::read_to_string(dpath.join("pid"))
        .expect("pidfile")
        .trim()
        .parse()
        .expect("pid");
    dd.adopt_daemon_pid(pid);
    assert!(same_data(&img, &nbd_uri("disk0", &dpath.join("nbd.sock"))));

    // qemu-nbd takes the same environment: the client sees the same disk.
    let qdir = scratch();
    let qpath = qdir.path().to_path_buf();
    let qsock = unix_listener(&qpath.join("nbd.sock"));
    let qargs = vec![
        "-f".into(),
        "raw".into(),
        "-x".into(),
        "disk0".into(),
        "-t".into(),
        "--pid-file".into(),
        qpath.join("pid").display().to_string(),
        img.display().to_string(),
    ];
    let fds: Handed = &[(&qsock, 3)];
    let _qnbd = spawn_inheriting(
        Path::new("qemu-nbd"),
        qdir,
        qargs,
        fds,
        Some(&["nbd"]),
        qpath.join("pid"),
    )
    .unwrap_or_else(|e| panic!("qemu-nbd: {e:?}"));
    let quri = nbd_uri("disk0", &qpath.join("nbd.sock"));
    let qinfo = run("nbdinfo", &["--json", &quri], TOOL_TIMEOUT).success("nbdinfo qemu-nbd");
    let qv: Value = serde_json::from_str(&qinfo.stdout).expect("nbdinfo JSON");
    assert_eq!(
        qv["exports"][0]["export-size"],
        v["exports"][0]["export-size"]
    );
}

#[test]
fn socket_activation_for_another_process_is_ignored() {
    if skip_on_qsd("systemd socket activation") {
        return;
    }
    let dir = scratch();
    let path = dir.path().to_path_buf();
    let nbd = unix_listener(&path.join("nbd.sock"));
    let args = vec![
        "--nbd-server".to_string(),
        "addr.type=fd,addr.str=nbd".to_string(),
        "--pidfile".to_string(),
        path.join("pid").display().to_string(),
    ];
    let r = Daemon::spawn_with(&binary(), dir, args, path.join("pid"), |cmd| {
        // pid 1 is never the daemon.
        cmd.env("LISTEN_PID", "1")
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", "nbd");
        ringstor_tests::inherit::inherit(cmd, &[(&nbd, 3)]);
    });
    match r {
        Ok(_) => panic!("LISTEN_PID of another process was honoured"),
        Err(e) => assert!(
            e.stderr.contains("Unable to parse FD number nbd"),
            "{}",
            e.stderr
        ),
    }
}

#[test]
fn metrics_object_listens_on_an_inherited_socket() {
    if skip_on_qsd("metrics object") {
        return;
    }
    let dir = scratch();
    let path = dir.path().to_path_buf();
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = l.local_addr().expect("local addr").port();
    let args = expand(
        &path,
        &[
            "--object",
            "metrics,id=m0,addr.type=fd,addr.str=3",
            "--pidfile",
            "{dir}/pid",
        ],
    );
    let fds: Handed = &[(&l, 3)];
    let _d = spawn_inheriting(&binary(), dir, args, fds, None, path.join("pid"))
        .unwrap_or_else(|e| panic!("{e:?}"));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("GET");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).expect("response");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.trim_end().ends_with("# EOF"), "{out}");
}
