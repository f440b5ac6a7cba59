//! `driver=nbd` with `tls-creds` / `tls-hostname`: the NBD client node
//! over TLS against QSD's, ringstor's and nbdkit's TLS servers (servers
//! with `verify-peer`, so the client's certificate is checked too),
//! chained behind the daemon's own NBD export; reconnections redo the TLS
//! handshake; and a bad CA, a host name mismatch, wrong credentials or a
//! server without TLS fail `blockdev-add` with QSD's class and text while
//! the daemon keeps serving.

use ringstor_tests::pki::{wait_listening_port, Pki};
use ringstor_tests::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// Where a TLS remote listens.
enum Addr {
    Tcp(u16),
    Unix(PathBuf),
}

impl Addr {
    /// `server.*` options of the nbd node, with `tls-hostname` for a unix
    /// socket (which has no host name of its own).
    fn node_opts(&self) -> String {
        match self {
            Addr::Tcp(p) => format!("server.type=inet,server.host=127.0.0.1,server.port={p}"),
            Addr::Unix(s) => format!(
                "server.type=unix,server.path={},tls-hostname=localhost",
                s.display()
            ),
        }
    }

    fn qmp_server(&self) -> Value {
        match self {
            Addr::Tcp(p) => json!({"type": "inet", "host": "127.0.0.1", "port": p.to_string()}),
            Addr::Unix(s) => json!({"type": "unix", "path": s}),
        }
    }
}

/// ringstor or QSD (`bin`) exporting `img` as `disk0` over TLS with the
/// server credentials of `pki` (verify-peer on: clients need a certificate),
/// on `sock` or, without one, on TCP port 0.
fn tls_remote(bin: &Path, pki: &Pki, img: &Path, sock: Option<&Path>) -> (Daemon, Addr) {
    let creds = format!(
        "tls-creds-x509,id=tls0,dir={},endpoint=server",
        pki.path("srv")
    );
    let addr = match sock {
        Some(s) => format!("addr.type=unix,addr.path={}", s.display()),
        None => "addr.type=inet,addr.host=127.0.0.1,addr.port=0".into(),
    };
    let node = format!("driver=file,node-name=disk0,filename={}", img.display());
    let d = Daemon::start_bin(
        bin,
        scratch(),
        &[
            "--blockdev",
            &node,
            "--object",
            &creds,
            "--nbd-server",
            &format!("{addr},tls-creds=tls0"),
            "--export",
            "type=nbd,id=e0,node-name=disk0,name=disk0,writable=on",
        ],
    );
    let addr = match sock {
        Some(s) => Addr::Unix(s.to_path_buf()),
        None => Addr::Tcp(wait_listening_port(d.pid())),
    };
    (d, addr)
}

/// nbdkit's `file` plugin on `img` with `--tls=require`, on `sock`.
struct NbdkitTls {
    child: Child,
}

impl NbdkitTls {
    fn start(pki: &Pki, img: &Path, sock: &Path) -> NbdkitTls {
        let mut cmd = Command::new("nbdkit");
        cmd.args(["-f", "--tls=require"])
            .arg(format!("--tls-certificates={}", pki.path("srv")))
            .arg("--tls-verify-peer")
            .arg("-U")
            .arg(sock)
            .arg("file")
            .arg(img)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .expect("nbdkit (run tests/run, which installs it)");
        eventually("nbdkit's socket", || sock.exists());
        NbdkitTls { child }
    }
}

impl Drop for NbdkitTls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon under test with an nbd node `n` (client credentials `tlsc`
/// from `pki` dir `client1`) on `addr`/`export`, exported as `n`.
fn chained(pki: &Pki, addr: &Addr, export: &str, opts: &str) -> Daemon {
    let creds = format!(
        "tls-creds-x509,id=tlsc,dir={},endpoint=client",
        pki.path("client1")
    );
    let node = format!(
        "driver=nbd,node-name=n,{},export={export},tls-creds=tlsc{opts}",
        addr.node_opts()
    );
    Daemon::start_bin(
        &binary(),
        scratch(),
        &[
            "--object",
            &creds,
            "--blockdev",
            &node,
            "--nbd-server",
            "addr.type=unix,addr.path={dir}/nbd.sock",
            "--export",
            "type=nbd,id=e0,node-name=n,name=n,writable=on",
        ],
    )
}

fn source(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let img = dir.join(name);
    make_filled(&img, 8 * MIB, seed);
    img
}

#[test]
fn nbd_client_tls_chains_qsd_ringstor_and_nbdkit_servers() {
    let dir = scratch();
    let pki = Pki::new(dir.path());
    let qsd_img = source(dir.path(), "qsd.raw", 1);
    let own_img = source(dir.path(), "own.raw", 2);
    let kit_img = source(dir.path(), "kit.raw", 3);
    let qsd = (!skip_unless_comparing("QSD's TLS server as the remote"))
        .then(|| tls_remote(Path::new(daemon::QSD_BIN), &pki, &qsd_img, None));
    let own_sock = dir.path().join("own.sock");
    let own = tls_remote(&binary(), &pki, &own_img, Some(&own_sock));
    let kit_sock = dir.path().join("kit.sock");
    let _kit = NbdkitTls::start(&pki, &kit_img, &kit_sock);
    let kit_addr = Addr::Unix(kit_sock.clone());
    let mut remotes = vec![("ringstor over unix", &own.1, "disk0", &own_img)];
    if let Some((_, a)) = &qsd {
        remotes.push(("QSD over TCP", a, "disk0", &qsd_img));
    }
    remotes.push(("nbdkit over unix", &kit_addr, "", &kit_img));
    for (i, (who, addr, export, img)) in remotes.into_iter().enumerate() {
        let d = chained(&pki, addr, export, "");
        let u = nbd_uri("n", &d.path("nbd.sock"));
        let copy = d.path("copy.raw");
        run("nbdcopy", &[&u, copy.to_str().expect("path")], TOOL_TIMEOUT).success("nbdcopy");
        assert_eq!(file_sha256(&copy), file_sha256(img), "{who}: read");
        let off = MIB + i as u64 * MIB;
        let byte = 0x60 + i as u8;
        run(
            "qemu-io",
            &[
                "-f",
                "raw",
                "-c",
                &format!("write -P 0x{byte:02x} {off} 256k"),
                "-c",
                "flush",
                &u,
            ],
            TOOL_TIMEOUT,
        )
        .success("qemu-io write");
        assert!(
            read_region(img, off, 256 * 1024).iter().all(|&b| b == byte),
            "{who}: the write reached the remote's file"
        );
        run(
            "qemu-img",
            &[
                "compare",
                "-f",
                "raw",
                "-F",
                "raw",
                &u,
                img.to_str().expect("path"),
            ],
            TOOL_TIMEOUT,
        )
        .success(&format!("{who}: qemu-img compare"));
    }
}

#[test]
fn nbd_client_tls_reconnects_with_a_new_handshake() {
    let dir = scratch();
    let pki = Pki::new(dir.path());
    let img = source(dir.path(), "remote.raw", 5);
    let sock = dir.path().join("remote.sock");
    let (remote, addr) = tls_remote(&binary(), &pki, &img, Some(&sock));
    let d = chained(&pki, &addr, "disk0", ",reconnect-delay=15");
    let u = nbd_uri("n", &d.path("nbd.sock"));
    let io = |cmds: &[&str]| {
        let mut args = vec!["-f", "raw"];
        for c in cmds {
            args.extend(["-c", c]);
        }
        args.push(&u);
        run("qemu-io", &args, TOOL_TIMEOUT)
    };
    io(&["write -P 0x21 0 64k"]).success("write before the loss");
    drop(remote);
    let _ = std::fs::remove_file(&sock);
    // A write and a read-back while the remote is gone wait for it.
    let u2 = u.clone();
    let t0 = Instant::now();
    let waiting = std::thread::spawn(move || {
        run(
            "qemu-io",
            &[
                "-f",
                "raw",
                "-c",
                "write -P 0x22 2M 64k",
                "-c",
                "read -P 0x22 2M 64k",
                "-c",
                "read -P 0x21 0 64k",
                &u2,
            ],
            TOOL_TIMEOUT,
        )
    });
    std::thread::sleep(Duration::from_secs(1));
    let (_remote, _) = tls_remote(&binary(), &pki, &img, Some(&sock));
    let r = waiting.join().expect("qemu-io thread");
    assert!(
        r.status.success() && !r.stdout.contains("Pattern verification failed"),
        "I/O across the reconnection: {r:?}\n{}",
        d.stderr()
    );
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert!(read_region(&img, 2 * MIB, 65536).iter().all(|&b| b == 0x22));
}

/// The `blockdev-add` cases whose answers must agree with QSD's: (what,
/// arguments, the start of QSD's desc; ringstor may add the server's
/// message after it).
fn error_cases(
    tls: &Addr,
    tls_unix: &Path,
    plain: &Path,
) -> Vec<(&'static str, Value, &'static str)> {
    let node = |name: &str, server: Value, extra: Value| {
        let mut v =
            json!({"driver": "nbd", "node-name": name, "server": server, "export": "disk0"});
        for (k, x) in extra.as_object().into_iter().flatten() {
            v[k] = x.clone();
        }
        v
    };
    let unix = json!({"type": "unix", "path": tls_unix});
    vec![
        (
            "missing creds",
            node("e1", tls.qmp_server(), json!({"tls-creds": "nope"})),
            "No TLS credentials with id 'nope'",
        ),
        (
            "server creds",
            node("e2", tls.qmp_server(), json!({"tls-creds": "tlss"})),
            "Expected TLS credentials for a client endpoint",
        ),
        (
            "not creds",
            node("e3", tls.qmp_server(), json!({"tls-creds": "io0"})),
            "Object with id 'io0' is not TLS credentials",
        ),
        (
            "wrong CA",
            node("e4", tls.qmp_server(), json!({"tls-creds": "wrongca"})),
            "The certificate hasn't got a known issuer",
        ),
        (
            "host name mismatch",
            node(
                "e5",
                tls.qmp_server(),
                json!({"tls-creds": "tlsc", "tls-hostname": "other.example"}),
            ),
            "Certificate does not match the hostname other.example",
        ),
        (
            "unix socket without tls-hostname",
            node("e6", unix.clone(), json!({"tls-creds": "tlsc"})),
            "No hostname for certificate validation",
        ),
        (
            "server without TLS",
            node(
                "e7",
                json!({"type": "unix", "path": plain}),
                json!({"tls-creds": "tlsc", "tls-hostname": "localhost"}),
            ),
            "Denied by server for option 5 (starttls)",
        ),
        (
            "TLS server, no tls-creds",
            node("e8", unix, json!({})),
            "TLS negotiation required before option 7 (go)",
        ),
    ]
}

/// A client daemon (`bin`) with the credential objects of the cases.
fn client_daemon(bin: &Path, pki: &Pki, wrongca: &Path) -> Daemon {
    let obj = |id: &str, dir: String, rest: &str| {
        format!("tls-creds-x509,id={id},dir={dir},endpoint={rest}")
    };
    let wrong = wrongca.to_string_lossy().into_owned();
    let objects = [
        obj("tlsc", pki.path("client1"), "client"),
        obj("nocert", pki.path("nocert"), "client"),
        obj("wrongca", wrong.clone(), "client"),
        obj("anyserver", wrong, "client,verify-peer=off"),
        obj("tlss", pki.path("srv"), "server"),
        "iothread,id=io0".to_string(),
    ];
    let mut args = vec![
        "--blockdev",
        "driver=null-co,node-name=null0,size=1048576,read-zeroes=on",
        "--nbd-server",
        "addr.type=unix,addr.path={dir}/nbd.sock",
        "--export",
        "type=nbd,id=e0,node-name=null0,name=null0",
    ];
    for o in &objects {
        args.extend(["--object", o.as_str()]);
    }
    Daemon::start_bin(bin, scratch(), &args)
}

#[test]
fn nbd_client_tls_errors_match_qsd_and_the_daemon_keeps_serving() {
    let dir = scratch();
    let pki = Pki::new(dir.path());
    let wrongca = dir.path().join("wrongca");
    std::fs::create_dir_all(&wrongca).expect("dir");
    std::fs::copy(pki.dir("rogue-ca-cert.pem"), wrongca.join("ca-cert.pem")).expect("copy CA");
    let img = source(dir.path(), "remote.raw", 7);
    let (_tcp, tcp) = tls_remote(&binary(), &pki, &img, None);
    let tls_sock = dir.path().join("tls.sock");
    let (_unix, _) = tls_remote(&binary(), &pki, &img, Some(&tls_sock));
    let args = cli_export_args("");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let plain = disk_daemon(8 * MIB, Fill::Sparse, &args);
    let plain_sock = plain.nbd_sock();
    let cases = error_cases(&tcp, &tls_sock, &plain_sock);

    let d = client_daemon(&binary(), &pki, &wrongca);
    let mut q = d.qmp();
    let ours: Vec<_> = cases
        .iter()
        .map(|(what, args, want)| {
            let e = q.err("blockdev-add", args.clone());
            assert_eq!(e.class, "GenericError", "{what}: {e:?}");
            assert!(e.desc.starts_with(want), "{what}: {e:?}, want {want}");
            e
        })
        .collect();
    // A client without a certificate is refused by a verify-peer server.
    let e = q.err(
        "blockdev-add",
        json!({"driver": "nbd", "node-name": "e9", "server": tcp.qmp_server(),
               "export": "disk0", "tls-creds": "nocert"}),
    );
    assert_eq!(e.class, "GenericError", "{e:?}");
    // The daemon still serves, and good options work: verify-peer=off
    // accepts a certificate the CA does not know, as in QEMU.
    let uri = nbd_uri("null0", &d.path("nbd.sock"));
    run(
        "qemu-io",
        &["-r", "-f", "raw", "-c", "read -P 0 0 64k", &uri],
        TOOL_TIMEOUT,
    )
    .success("the export after the failures");
    q.ok(
        "blockdev-add",
        json!({"driver": "nbd", "node-name": "good", "server": tcp.qmp_server(),
               "export": "disk0", "tls-creds": "tlsc"}),
    );
    let nodes = q.ok("query-named-block-nodes", json!({}));
    let names: Vec<&str> = nodes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["node-name"].as_str())
        .collect();
    assert!(
        names.contains(&"good") && !names.contains(&"e4"),
        "{names:?}"
    );

    if !skip_unless_comparing("QSD's answers to the same blockdev-adds") {
        let qsd = client_daemon(Path::new(daemon::QSD_BIN), &pki, &wrongca);
        let mut qq = qsd.qmp();
        for ((what, args, _), ours) in cases.iter().zip(&ours) {
            let theirs = qq.err("blockdev-add", args.clone());
            assert_eq!(theirs.class, ours.class, "{what}");
            assert!(
                ours.desc.starts_with(&theirs.desc),
                "{what}: ours {:?}, QSD {:?}",
                ours.desc,
                theirs.desc
            );
        }
    }
}

#[test]
fn nbd_client_tls_verify_peer_off_accepts_an_unknown_ca() {
    let dir = scratch();
    let pki = Pki::new(dir.path());
    let wrongca = dir.path().join("wrongca");
    std::fs::create_dir_all(&wrongca).expect("dir");
    std::fs::copy(pki.dir("rogue-ca-cert.pem"), wrongca.join("ca-cert.pem")).expect("copy CA");
    // The remote does not ask for a client certificate here.
    let img = source(dir.path(), "remote.raw", 9);
    let sock = dir.path().join("nv.sock");
    let creds = format!(
        "tls-creds-x509,id=tls0,dir={},endpoint=server,verify-peer=off",
        pki.path("srv")
    );
    let node = format!("driver=file,node-name=disk0,filename={}", img.display());
    let _remote = Daemon::start_bin(
        &binary(),
        scratch(),
        &[
            "--blockdev",
            &node,
            "--object",
            &creds,
            "--nbd-server",
            &format!("addr.type=unix,addr.path={},tls-creds=tls0", sock.display()),
            "--export",
            "type=nbd,id=e0,node-name=disk0,name=disk0",
        ],
    );
    let d = client_daemon(&binary(), &pki, &wrongca);
    let mut q = d.qmp();
    let server = json!({"type": "unix", "path": sock});
    let e = q.err(
        "blockdev-add",
        json!({"driver": "nbd", "node-name": "strict", "server": server,
               "export": "disk0", "tls-creds": "wrongca", "tls-hostname": "localhost"}),
    );
    assert!(
        e.desc
            .starts_with("The certificate hasn't got a known issuer"),
        "{e:?}"
    );
    // No tls-hostname either: nothing about the certificate is checked.
    q.ok(
        "blockdev-add",
        json!({"driver": "nbd", "node-name": "any", "server": server,
               "export": "disk0", "tls-creds": "anyserver", "read-only": true}),
    );
    q.ok(
        "block-export-add",
        json!({"type": "nbd", "id": "e1", "node-name": "any", "name": "any"}),
    );
    let copy = d.path("copy.raw");
    run(
        "nbdcopy",
        &[
            &nbd_uri("any", &d.path("nbd.sock")),
            copy.to_str().expect("path"),
        ],
        TOOL_TIMEOUT,
    )
    .success("nbdcopy");
    assert_eq!(file_sha256(&copy), file_sha256(&img));
}
