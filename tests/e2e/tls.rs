//! NBD over TLS with x509 credentials and client authorization: real
//! clients (nbdinfo, nbdcopy, qemu-img, qemu-io) with certificates made by
//! certtool, over TCP and unix sockets, and the same files given to QSD
//! for the answers that must agree.

use ringstor_tests::pki::{wait_listening_port, Pki, CLIENT1_DN, CLIENT2_DN};
use ringstor_tests::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// `NBD_REP_ERR_TLS_REQD`.
const REP_ERR_TLS_REQD: u32 = 0x8000_0005;
const OPT_EXPORT_NAME: u32 = 1;
const OPT_LIST: u32 = 3;
const OPT_STARTTLS: u32 = 5;

/// Where a TLS server listens.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Listen {
    Tcp,
    Unix,
}

/// A daemon (ringstor or QSD) exporting `disk0` over TLS with the
/// credentials in `pki`'s `srv/`; `creds` and `server` are extra options of
/// `tls-creds-x509` and `--nbd-server`, `objects` more `--object`s.
struct TlsServer {
    d: Daemon,
    port: Option<u16>,
}

impl TlsServer {
    fn start(
        bin: &Path,
        pki: &Pki,
        listen: Listen,
        creds: &str,
        server: &str,
        objects: &[&str],
    ) -> TlsServer {
        let dir = scratch();
        make_filled(&dir.path().join("disk.img"), 8 * MIB, 11);
        let creds = format!(
            "tls-creds-x509,id=tls0,dir={},endpoint=server{creds}",
            pki.path("srv")
        );
        let addr = match listen {
            Listen::Tcp => "addr.type=inet,addr.host=127.0.0.1,addr.port=0",
            Listen::Unix => "addr.type=unix,addr.path={dir}/nbd.sock",
        };
        let nbd = format!("{addr},tls-creds=tls0{server}");
        let mut args = vec![
            "--blockdev",
            "driver=file,node-name=disk0,filename={dir}/disk.img",
            "--object",
            &creds,
        ];
        for o in objects {
            args.extend(["--object", o]);
        }
        args.extend([
            "--nbd-server",
            &nbd,
            "--export",
            "type=nbd,id=e0,node-name=disk0,name=disk0,writable=on",
        ]);
        let d = Daemon::start_bin(bin, dir, &args);
        let port = (listen == Listen::Tcp).then(|| wait_listening_port(d.pid()));
        TlsServer { d, port }
    }

    /// libnbd's URI with the client credentials in `pki` dir `client`.
    fn uri(&self, pki: &Pki, client: &str) -> String {
        let certs = pki.path(client);
        match self.port {
            Some(p) => format!("nbds://127.0.0.1:{p}/disk0?tls-certificates={certs}"),
            None => format!(
                "nbds+unix:///disk0?socket={}&tls-certificates={certs}",
                self.d.path("nbd.sock").display()
            ),
        }
    }

    /// QEMU's `--image-opts` for the export with `tls-creds=tlsc`.
    fn image_opts(&self) -> String {
        match self.port {
            Some(p) => format!("driver=nbd,host=127.0.0.1,port={p},export=disk0,tls-creds=tlsc"),
            None => format!(
                "driver=nbd,path={},export=disk0,tls-creds=tlsc,tls-hostname=localhost",
                self.d.path("nbd.sock").display()
            ),
        }
    }

    /// Whether client credentials `client` get in (nbdinfo succeeds).
    fn admits(&self, pki: &Pki, client: &str) -> bool {
        run("nbdinfo", &["--size", &self.uri(pki, client)], TOOL_TIMEOUT)
            .status
            .success()
    }
}

fn qemu_client_object(pki: &Pki, client: &str) -> String {
    format!(
        "tls-creds-x509,id=tlsc,dir={},endpoint=client",
        pki.path(client)
    )
}

#[test]
fn tls_data_path_with_libnbd_and_qemu_over_tcp_and_unix() {
    let dir = scratch();
    let pki = Pki::new(dir.path());
    for listen in [Listen::Tcp, Listen::Unix] {
        let s = TlsServer::start(&binary(), &pki, listen, "", "", &[]);
        let uri = s.uri(&pki, "client1");
        let info = run("nbdinfo", &["--json", &uri], TOOL_TIMEOUT).success("nbdinfo");
        let v: Value = serde_json::from_str(&info.stdout).expect("nbdinfo JSON");
        assert_eq!(v["TLS"], true, "{listen:?}: {v}");
        assert_eq!(v["exports"][0]["export-size"], json!(8 * MIB));

        // Write a whole image through TLS, read it back two ways.
        let src = dir.path().join(format!("src-{listen:?}.img"));
        make_filled(&src, 8 * MIB, 21);
        let src_s = src.to_string_lossy().into_owned();
        run("nbdcopy", &[&src_s, &uri], TOOL_TIMEOUT).success("nbdcopy to the export");
        assert_eq!(file_sha256(&s.d.path("disk.img")), file_sha256(&src));
        let back = dir.path().join(format!("back-{listen:?}.img"));
        let back_s = back.to_string_lossy().into_owned();
        run("nbdcopy", &[&uri, &back_s], TOOL_TIMEOUT).success("nbdcopy from the export");
        assert_eq!(file_sha256(&back), file_sha256(&src));

        let obj = qemu_client_object(&pki, "client1");
        let opts = s.image_opts();
        let out = run(
            "qemu-img",
            &[
                "info",
                "--output=json",
                "--object",
                &obj,
                "--image-opts",
                &opts,
            ],
            TOOL_TIMEOUT,
        )
        .success("qemu-img info");
        let v: Value = serde_json::from_str(&out.stdout).expect("qemu-img JSON");
        assert_eq!(v["virtual-size"], json!(8 * MIB), "{listen:?}");
        let conv = dir.path().join(format!("conv-{listen:?}.img"));
        let conv_s = conv.to_string_lossy().into_owned();
        run(
            "qemu-img",
            &[
                "convert",
                "-O",
                "raw",
                "--object",
                &obj,
                "--image-opts",
                &opts,
                &conv_s,
            ],
            TOOL_TIMEOUT,
        )
        .success("qemu-img convert");
        assert_eq!(file_sha256(&conv), file_sha256(&src));

        // Unaligned I/O across TLS record boundaries.
        let out = run(
            "qemu-io",
            &[
                "--object",
                &obj,
                "--image-opts",
                &opts,
                "-c",
                "write -P 0x5a 12345 300001",
                "-c",
                "read -P 0x5a 12345 300001",
                "-c",
                "write -z 4096 65536",
                "-c",
                "read -P 0 4096 65536",
                "-c",
                "flush",
            ],
            TOOL_TIMEOUT,
        )
        .success("qemu-io");
        assert!(
            !out.stdout.contains("Pattern verification failed"),
            "{}",
            out.stdout
        );
        let disk = s.d.path("disk.img");
        assert!(read_region(&disk, 69632, 312345 - 69632)
            .iter()
            .all(|&b| b == 0x5a));
        assert!(read_region(&disk, 4096, 65536).iter().all(|&b| b == 0));
    }
}

#[test]
fn tls_server_set_up_over_qmp_serves_tls_only() {
    let dir = scratch();
    let pki = Pki::new(dir.path());
    let dd = disk_daemon(4 * MIB, Fill::Pattern(3), &[]);
    let mut q = dd.d.qmp();
    q.ok(
        "object-add",
        json!({"qom-type": "tls-creds-x509", "id": "tls0", "dir": pki.path("srv"),
               "endpoint": "server"}),
    );
    q.ok(
        "nbd-server-start",
        json!({"addr": {"type": "unix", "data": {"path": dd.nbd_sock()}}, "tls-creds": "tls0"}),
    );
    q.ok(
        "block-export-add",
        json!({"type": "nbd", "id": "e0", "node-name": "disk0", "name": "disk0"}),
    );
    let sock = dd.nbd_sock().display().to_string();
    let tls = format!(
        "nbds+unix:///disk0?socket={sock}&tls-certificates={}",
        pki.path("client1")
    );
    let size = run("nbdinfo", &["--size", &tls], TOOL_TIMEOUT).success("nbdinfo over TLS");
    assert_eq!(size.stdout.trim(), (4 * MIB).to_string());
    let plain = run("nbdinfo", &["--size", &dd.uri("disk0")], TOOL_TIMEOUT);
    assert!(!plain.status.success(), "a plaintext client got in");
}

/// What a plaintext client gets before TLS: the reply type to LIST and
/// STARTTLS-less GO, and whether EXPORT_NAME then closes the connection.
fn plaintext_exchange(sock: &Path) -> (Vec<u32>, bool) {
    let mut c = nbdraw::RawNbd::greet(sock, Duration::from_secs(5)).expect("greeting");
    let mut types = Vec::new();
    c.send_opt(OPT_LIST, &[]);
    types.push(c.read_opt_reply().rtype);
    let replies = c.go("disk0");
    types.extend(replies.iter().map(|r| r.rtype));
    c.send_opt(nbdraw::OPT_STRUCTURED_REPLY, &[]);
    types.push(c.read_opt_reply().rtype);
    c.send_opt(OPT_EXPORT_NAME, b"disk0");
    (types, c.wait_closed(Duration::from_secs(5)))
}

#[test]
fn plaintext_client_gets_tls_reqd_as_from_qsd() {
    let dir = scratch();
    let pki = Pki::new(dir.path());
    let s = TlsServer::start(&binary(), &pki, Listen::Unix, "", "", &[]);
    let (types, closed) = plaintext_exchange(&s.d.path("nbd.sock"));
    assert_eq!(types, vec![REP_ERR_TLS_REQD; 3]);
    assert!(
        closed,
        "NBD_OPT_EXPORT_NAME before TLS must drop the client"
    );
    let plain = format!(
        "nbd+unix:///disk0?socket={}",
        s.d.path("nbd.sock").display()
    );
    let r = run("nbdinfo", &["--size", &plain], TOOL_TIMEOUT);
    assert!(!r.status.success(), "plaintext nbdinfo got in");
    if skip_unless_comparing("plaintext client against a TLS server") {
        return;
    }
    let q = TlsServer::start(Path::new(daemon::QSD_BIN), &pki, Listen::Unix, "", "", &[]);
    assert_eq!(plaintext_exchange(&q.d.path("nbd.sock")), (types, closed));
}

/// Who gets in, in order: client1, client2, a client of an unknown CA,
/// a client without a certificate.
fn admissions(s: &TlsServer, pki: &Pki) -> Vec<bool> {
    ["client1", "client2", "rogue", "nocert"]
        .iter()
        .map(|c| s.admits(pki, c))
        .collect()
}

#[test]
fn client_certificates_are_checked_as_by_qsd() {
    let dir = scratch();
    let pki = Pki::new(dir.path());
    let mut seen = Vec::new();
    let mut bins = vec![binary()];
    if !skip_unless_comparing("certificate checks") {
        bins.push(daemon::QSD_BIN.into());
    }
    for bin in &bins {
        let strict = TlsServer::start(bin, &pki, Listen::Tcp, "", "", &[]);
        let open = TlsServer::start(bin, &pki, Listen::Tcp, ",verify-peer=off", "", &[]);
        seen.push((admissions(&strict, &pki), admissions(&open, &pki)));
    }
    assert_eq!(
        seen[0],
        (vec![true, true, false, false], vec![true, true, true, true]),
        "verify-peer on: only certificates of the CA; off: anyone"
    );
    if let Some(qsd) = seen.get(1) {
        assert_eq!(&seen[0], qsd, "ringstor vs QSD");
    }
}

/// Runs the authorization scenario on `bin`: authz-simple, then authz-list
/// objects swapped in over QMP under the same id; returns who got in at
/// each step and the daemon's stderr.
fn authz_steps(bin: &Path, pki: &Pki) -> (Vec<Vec<bool>>, String) {
    let simple = format!(
        "authz-simple,id=auth0,identity={}",
        CLIENT1_DN.replace(',', ",,")
    );
    let s = TlsServer::start(bin, pki, Listen::Tcp, "", ",tls-authz=auth0", &[&simple]);
    let who = |s: &TlsServer| -> Vec<bool> {
        ["client1", "client2", "rogue"]
            .iter()
            .map(|c| s.admits(pki, c))
            .collect()
    };
    let mut steps = vec![who(&s)];
    let mut q = s.d.qmp();
    let rule = |m: &str, p: &str, f: &str| json!({"match": m, "policy": p, "format": f});
    let lists = [
        // Exact: only client2.
        json!({"policy": "deny", "rules": [rule(CLIENT2_DN, "allow", "exact")]}),
        // Glob, first match wins: client1 refused, other CN=client? in.
        json!({"policy": "deny", "rules": [
            rule(CLIENT1_DN, "deny", "exact"),
            rule("C=GB,O=Acme,*,CN=client?", "allow", "glob")]}),
        // Default allow, glob deny of the Ops unit.
        json!({"policy": "allow", "rules": [rule("*,OU=Ops,*", "deny", "glob")]}),
    ];
    for l in lists {
        q.ok("object-del", json!({"id": "auth0"}));
        let mut args = l.clone();
        args["qom-type"] = json!("authz-list");
        args["id"] = json!("auth0");
        q.ok("object-add", args);
        steps.push(who(&s));
    }
    // No object with the id: nobody passes.
    q.ok("object-del", json!({"id": "auth0"}));
    steps.push(who(&s));
    (steps, s.d.stderr())
}

#[test]
fn tls_authz_matches_the_dn_as_qsd_and_follows_qmp_swaps() {
    let dir = scratch();
    let pki = Pki::new(dir.path());
    let (steps, stderr) = authz_steps(&binary(), &pki);
    assert_eq!(
        steps,
        vec![
            vec![true, false, false],
            vec![false, true, false],
            vec![false, true, false],
            vec![true, false, false],
            vec![false, false, false],
        ]
    );
    let denied = format!("TLS x509 authz check for {CLIENT2_DN} is denied");
    assert!(stderr.contains(&denied), "no '{denied}' in:\n{stderr}");
    if skip_unless_comparing("tls-authz decisions") {
        return;
    }
    let (qsd_steps, qsd_stderr) = authz_steps(Path::new(daemon::QSD_BIN), &pki);
    assert_eq!(steps, qsd_steps, "ringstor vs QSD");
    assert!(
        qsd_stderr.contains(&denied),
        "QSD matches another DN form:\n{qsd_stderr}"
    );
}

#[test]
fn authz_listfile_follows_its_file() {
    if skip_on_qsd("authz-listfile (QSD 10 is built without it)") {
        return;
    }
    let dir = scratch();
    let pki = Pki::new(dir.path());
    let acl = dir.path().join("acl.json");
    let allow = |dn: &str| json!({"policy": "deny", "rules": [{"match": dn, "policy": "allow"}]});
    std::fs::write(&acl, allow(CLIENT1_DN).to_string()).expect("acl");
    let obj = format!("authz-listfile,id=auth0,filename={}", acl.display());
    let s = TlsServer::start(
        &binary(),
        &pki,
        Listen::Unix,
        "",
        ",tls-authz=auth0",
        &[&obj],
    );
    assert!(s.admits(&pki, "client1") && !s.admits(&pki, "client2"));
    std::fs::write(&acl, allow(CLIENT2_DN).to_string()).expect("acl");
    assert!(!s.admits(&pki, "client1") && s.admits(&pki, "client2"));
    std::fs::write(&acl, "{not json").expect("acl");
    assert!(!s.admits(&pki, "client2"), "a broken file lets no one in");
}

#[test]
fn client_stalled_inside_the_tls_handshake_is_dropped() {
    let dir = scratch();
    let pki = Pki::new(dir.path());
    let s = TlsServer::start(
        &binary(),
        &pki,
        Listen::Unix,
        "",
        ",handshake-max-seconds=1",
        &[],
    );
    let mut c =
        nbdraw::RawNbd::greet(&s.d.path("nbd.sock"), Duration::from_secs(5)).expect("greet");
    c.send_opt(OPT_STARTTLS, &[]);
    let ack = c.read_opt_reply();
    assert_eq!((ack.option, ack.rtype), (OPT_STARTTLS, nbdraw::REP_ACK));
    // The start of a ClientHello record, then nothing.
    use std::io::Write;
    c.sock
        .write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01])
        .expect("partial record");
    let t = Instant::now();
    // Others are served meanwhile.
    assert!(s.admits(&pki, "client1"));
    assert!(
        c.wait_closed(Duration::from_secs(8)),
        "stalled client not dropped"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "dropped before the deadline"
    );
}

/// QMP `object-add`/`nbd-server-start` errors on bad credentials, compared
/// with QSD: same class, and the same text where both name the same cause.
#[test]
fn bad_credentials_fail_object_add_as_in_qsd() {
    let dir = scratch();
    let pki = Pki::new(dir.path());
    let srv = pki.dir("srv");
    let server_cert = |name: &str, validity: &str| {
        pki.leaf(
            "ca",
            name,
            "server",
            &["cn = localhost", "tls_www_server"],
            validity,
        );
        name.to_string()
    };
    let expired = server_cert(
        "expired",
        "activation_date = \"2020-01-01 00:00:00\"\nexpiration_date = \"2021-01-01 00:00:00\"",
    );
    let future = server_cert(
        "future",
        "activation_date = \"2035-01-01 00:00:00\"\nexpiration_date = \"2036-01-01 00:00:00\"",
    );
    let mismatch = pki.dir("mismatch");
    std::fs::create_dir_all(&mismatch).expect("dir");
    for f in ["ca-cert.pem", "server-cert.pem"] {
        std::fs::copy(srv.join(f), mismatch.join(f)).expect("copy");
    }
    std::fs::copy(
        pki.dir("client1").join("client-key.pem"),
        mismatch.join("server-key.pem"),
    )
    .expect("copy key");
    // A server certificate of another CA than the one in ca-cert.pem.
    let wrong_ca = pki.dir("wrongca");
    std::fs::create_dir_all(&wrong_ca).expect("dir");
    std::fs::copy(srv.join("ca-cert.pem"), wrong_ca.join("ca-cert.pem")).expect("copy");
    pki.leaf(
        "rogue-ca",
        "wrongca",
        "server",
        &["cn = localhost", "tls_www_server"],
        "expiration_days = 30",
    );

    let x509 = |id: &str, d: &str| {
        json!({"execute": "object-add", "arguments": {"qom-type": "tls-creds-x509", "id": id,
               "dir": pki.dir(d), "endpoint": "server"}})
    };
    let nbd_start = |creds: &str| {
        json!({"execute": "nbd-server-start", "arguments": {
            "addr": {"type": "unix", "data": {"path": dir.path().join(format!("{creds}.sock"))}},
            "tls-creds": creds}})
    };
    // (message, must the text be QSD's too)
    let conversation = vec![
        (x509("t1", "nosuchdir"), true),
        (x509("t2", "client1"), true),
        (x509("t3", &expired), true),
        (x509("t4", &future), true),
        (x509("t5", "mismatch"), true),
        (x509("t6", "wrongca"), true),
        (
            json!({"execute": "object-add", "arguments": {"qom-type": "tls-creds-x509",
                   "id": "t7", "endpoint": "server"}}),
            true,
        ),
        (
            json!({"execute": "object-add", "arguments": {"qom-type": "tls-creds-x509",
                   "id": "cl", "dir": pki.dir("client1")}}),
            true,
        ),
        (nbd_start("cl"), true),
        (nbd_start("nope"), true),
        (
            json!({"execute": "object-add", "arguments": {"qom-type": "iothread", "id": "io9"}}),
            true,
        ),
        (nbd_start("io9"), true),
        (x509("io9", "srv"), true),
        (
            json!({"execute": "object-add", "arguments": {"qom-type": "authz-simple", "id": "a0"}}),
            true,
        ),
        (
            json!({"execute": "object-add", "arguments": {"qom-type": "tls-creds-psk",
                   "id": "p0", "dir": pki.dir("srv"), "endpoint": "server"}}),
            true,
        ),
        // Without the sanity check an expired certificate loads.
        (
            json!({"execute": "object-add", "arguments": {"qom-type": "tls-creds-x509",
                   "id": "t8", "dir": pki.dir(&expired), "endpoint": "server",
                   "sanity-check": false}}),
            true,
        ),
    ];
    let run_on = |bin: &Path| -> Vec<Value> {
        let d = Daemon::start_bin(bin, scratch(), &[]);
        let mut q = d.qmp();
        conversation.iter().map(|(m, _)| q.send(m)).collect()
    };
    let ours = run_on(&binary());
    for ((m, _), r) in conversation.iter().zip(&ours) {
        let id = &m["arguments"]["id"];
        if id == "cl" || id == "t8" || m["arguments"]["qom-type"] == "iothread" {
            assert!(r.get("return").is_some(), "{m}: {r}");
        } else {
            assert!(r["error"]["desc"].is_string(), "{m}: {r}");
        }
    }
    assert!(ours[2]["error"]["desc"]
        .as_str()
        .unwrap_or("")
        .ends_with("has expired"));
    assert!(ours[4]["error"]["desc"]
        .as_str()
        .unwrap_or("")
        .contains("do not match"));
    if skip_unless_comparing("object-add errors of TLS credentials") {
        return;
    }
    let qsd = run_on(Path::new(daemon::QSD_BIN));
    for (((m, same), o), q) in conversation.iter().zip(&ours).zip(&qsd) {
        assert_eq!(
            o.get("return").is_some(),
            q.get("return").is_some(),
            "{m}: {o} vs {q}"
        );
        assert_eq!(o["error"]["class"], q["error"]["class"], "{m}");
        if *same {
            assert_eq!(o["error"]["desc"], q["error"]["desc"], "{m}");
        }
    }
}

#[test]
fn credentials_in_use_stay_and_psk_is_refused_clearly() {
    if skip_on_qsd("ringstor's object-del and TLS-PSK answers") {
        return;
    }
    let dir = scratch();
    let pki = Pki::new(dir.path());
    let s = TlsServer::start(&binary(), &pki, Listen::Unix, "", "", &[]);
    let mut q = s.d.qmp();
    let e = q.err("object-del", json!({"id": "tls0"}));
    assert_eq!(e.desc, "object 'tls0' is in use, can not be deleted");
    std::fs::write(pki.dir("srv").join("keys.psk"), "user:0123456789abcdef\n").expect("psk");
    let e = q.err(
        "object-add",
        json!({"qom-type": "tls-creds-psk", "id": "p0", "dir": pki.dir("srv"), "endpoint": "server"}),
    );
    assert!(
        e.desc.contains("rustls has no TLS with pre-shared keys"),
        "{}",
        e.desc
    );
    q.ok("nbd-server-stop", json!({}));
    q.ok("object-del", json!({"id": "tls0"}));
}
