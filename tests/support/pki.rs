//! Certificates for the TLS tests, made with GnuTLS's `certtool` in the
//! test's directory, laid out the way QEMU and libnbd look for them:
//!
//! - `srv/`: `ca-cert.pem`, `server-cert.pem`, `server-key.pem`
//!   (CN=localhost, for 127.0.0.1 and localhost);
//! - one directory per client (`client1/`, ...): `ca-cert.pem`,
//!   `client-cert.pem`, `client-key.pem`;
//! - `nocert/`: only `ca-cert.pem` (a client without a certificate);
//! - `rogue/`: a client certificate from a CA the server does not know.
//!
//! Also: the TCP port a process listens on (servers are started with
//! port 0, so tests never pick a port that someone else may hold).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// DN of `client1` in certificate order, as QEMU's tls-authz matches it.
pub const CLIENT1_DN: &str = "C=GB,O=Acme,OU=Eng,CN=client1";
/// DN of `client2`.
pub const CLIENT2_DN: &str = "C=GB,O=Acme,OU=Ops,CN=client2";

fn certtool(args: &[&str]) {
    let out = Command::new("certtool")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("certtool (gnutls-bin) is needed for the TLS tests; run tests/run: {e}")
        });
    assert!(
        out.status.success(),
        "certtool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA with its key, and the leaf certificates it signed.
pub struct Pki {
    root: PathBuf,
}

impl Pki {
    /// Makes the CA, the server and the clients `client1` and `client2`
    /// (with [`CLIENT1_DN`] and [`CLIENT2_DN`]), `nocert/` and `rogue/`.
    pub fn new(root: &Path) -> Pki {
        let pki = Pki {
            root: root.join("pki"),
        };
        fs::create_dir_all(&pki.root).expect("pki dir");
        pki.make_ca("ca", "Test CA");
        pki.make_ca("rogue-ca", "Rogue CA");
        pki.leaf(
            "ca",
            "srv",
            "server",
            &[
                "cn = localhost",
                "dns_name = localhost",
                "ip_address = 127.0.0.1",
                "tls_www_server",
            ],
            "expiration_days = 30",
        );
        pki.client("ca", "client1", &["O=Acme", "OU=Eng", "CN=client1"]);
        pki.client("ca", "client2", &["O=Acme", "OU=Ops", "CN=client2"]);
        pki.client("rogue-ca", "rogue", &["O=Acme", "OU=Eng", "CN=client1"]);
        // The rogue client trusts the real CA: only the server refuses it.
        pki.copy_ca("ca", "rogue");
        pki.copy_ca("ca", "nocert");
        pki
    }

    /// A directory of credentials (`srv`, `client1`, ...).
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// A directory as a string, for command lines.
    pub fn path(&self, name: &str) -> String {
        self.dir(name).to_string_lossy().into_owned()
    }

    fn make_ca(&self, name: &str, cn: &str) {
        let key = self.root.join(format!("{name}-key.pem"));
        let tmpl = self.root.join(format!("{name}.info"));
        fs::write(
            &tmpl,
            format!("cn = {cn}\nca\ncert_signing_key\nexpiration_days = 30\n"),
        )
        .expect("ca template");
        self.privkey(&key);
        certtool(&[
            "--generate-self-signed",
            "--load-privkey",
            &key.to_string_lossy(),
            "--template",
            &tmpl.to_string_lossy(),
            "--outfile",
            &self.root.join(format!("{name}-cert.pem")).to_string_lossy(),
        ]);
    }

    fn privkey(&self, out: &Path) {
        certtool(&[
            "--generate-privkey",
            "--bits=2048",
            "--outfile",
            &out.to_string_lossy(),
        ]);
    }

    fn copy_ca(&self, ca: &str, dir: &str) {
        let d = self.dir(dir);
        fs::create_dir_all(&d).expect("cred dir");
        fs::copy(
            self.root.join(format!("{ca}-cert.pem")),
            d.join("ca-cert.pem"),
        )
        .expect("copy CA certificate");
    }

    /// A client certificate with subject `C=GB` plus `rdns` in `dir/`.
    pub fn client(&self, ca: &str, dir: &str, rdns: &[&str]) {
        let mut lines = vec!["country = GB".to_string()];
        for rdn in rdns {
            let (k, v) = rdn.split_once('=').expect("RDN is K=V");
            let key = match k {
                "O" => "organization",
                "OU" => "unit",
                "CN" => "cn",
                "L" => "locality",
                "ST" => "state",
                other => panic!("unknown RDN type {other}"),
            };
            lines.push(format!("{key} = {v}"));
        }
        lines.push("tls_www_client".into());
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        self.leaf(ca, dir, "client", &refs, "expiration_days = 30");
    }

    /// A leaf certificate `role-cert.pem` + `role-key.pem` signed by `ca`,
    /// in `dir/` with the CA certificate; `validity` is a template line.
    pub fn leaf(&self, ca: &str, dir: &str, role: &str, template: &[&str], validity: &str) {
        let d = self.dir(dir);
        fs::create_dir_all(&d).expect("cred dir");
        let key = d.join(format!("{role}-key.pem"));
        let tmpl = d.join(format!("{role}.info"));
        let mut t = template.join("\n");
        t.push_str("\nencryption_key\nsigning_key\n");
        t.push_str(validity);
        t.push('\n');
        fs::write(&tmpl, t).expect("leaf template");
        self.privkey(&key);
        certtool(&[
            "--generate-certificate",
            "--load-ca-certificate",
            &self.root.join(format!("{ca}-cert.pem")).to_string_lossy(),
            "--load-ca-privkey",
            &self.root.join(format!("{ca}-key.pem")).to_string_lossy(),
            "--load-privkey",
            &key.to_string_lossy(),
            "--template",
            &tmpl.to_string_lossy(),
            "--outfile",
            &d.join(format!("{role}-cert.pem")).to_string_lossy(),
        ]);
        fs::remove_file(&tmpl).expect("remove template");
        if !d.join("ca-cert.pem").exists() {
            self.copy_ca(ca, dir);
        }
    }
}

/// The TCP port process `pid` listens on (its first listening socket), from
/// `/proc`: servers started with `port=0` pick a free port themselves.
pub fn listening_port(pid: u32) -> Option<u16> {
    let mut inodes = Vec::new();
    for e in fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        if let Ok(target) = fs::read_link(e.path()) {
            let t = target.to_string_lossy();
            if let Some(i) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.push(i.to_string());
            }
        }
    }
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address rem_address st ... inode (field 9); 0A is LISTEN.
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next()?;
                return u16::from_str_radix(port, 16).ok();
            }
        }
    }
    None
}

/// Waits up to 10 s for `pid` to listen on TCP; its port.
pub fn wait_listening_port(pid: u32) -> u16 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(p) = listening_port(pid) {
            return p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} never listened on TCP"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
