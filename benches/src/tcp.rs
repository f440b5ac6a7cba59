//! NBD over TCP loopback (`127.0.0.1`), in plaintext or with TLS, for
//! ringstor and QSD on the same command line: `--nbd-server
//! addr.type=inet,...` plus, for TLS, `--object
//! tls-creds-x509,id=tls0,dir=SRV,endpoint=server` and `tls-creds=tls0`
//! (`verify-peer` is on: fio presents a client certificate). Both servers
//! get the same certificates, made here with `certtool`.
//!
//! fio's `nbd` engine cannot pass `tls-certificates=DIR`: libnbd refuses
//! local-file URI parameters unless the program allows them, and fio does
//! not. So fio finds the client credentials where libnbd looks by default,
//! `$HOME/.pki/libnbd` for a non-root user: as root, fio runs as `nobody`
//! (`setpriv`) with `HOME` in a directory of its own under the system temp
//! directory (the run's scratch directory is private), removed at the end;
//! the machine's `/etc/pki/libnbd` is left alone.
//!
//! Each server start gets a free port (bind `127.0.0.1:0`, release).

use crate::error::{Error, Result};
use crate::nbd::EXPORT;
use crate::qsd;
use crate::servers::ServerKind;
use crate::transport::{Backend, LaunchSpec, Transport};
use crate::workdir::TempDir;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The TCP transport, plaintext or TLS.
#[derive(Debug)]
pub struct NbdTcp {
    tls: Option<Creds>,
}

#[derive(Debug)]
struct Creds {
    /// `ca-cert.pem`, `server-cert.pem`, `server-key.pem`.
    server_dir: PathBuf,
    /// fio's `HOME`, with `.pki/libnbd/{ca-cert,client-cert,client-key}.pem`.
    fio_home: PathBuf,
    /// Holds both; removed on drop.
    _dir: Option<TempDir>,
}

impl NbdTcp {
    /// Plaintext NBD over TCP.
    pub fn plain() -> NbdTcp {
        NbdTcp { tls: None }
    }

    /// NBD with TLS over TCP, with certificates made for the run.
    pub fn tls() -> Result<NbdTcp> {
        let dir = TempDir::new_in(&std::env::temp_dir().join("ringstor-bench-tls"))?;
        let mut creds = make_creds(dir.path())?;
        creds._dir = Some(dir);
        Ok(NbdTcp { tls: Some(creds) })
    }
}

fn certtool(args: &[&str]) -> Result<()> {
    let out = Command::new("certtool")
        .args(args)
        .output()
        .map_err(|e| Error::msg(format!("certtool (gnutls-bin) for the TLS scenario: {e}")))?;
    if !out.status.success() {
        return Err(Error::msg(format!(
            "certtool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate.
fn make_creds(dir: &Path) -> Result<Creds> {
    let pki = dir.join("pki");
    let server_dir = pki.join("server");
    let fio_home = pki.join("fio-home");
    let client_dir = fio_home.join(".pki/libnbd");
    for d in [&server_dir, &client_dir] {
        std::fs::create_dir_all(d)?;
    }
    let p = |name: &str| pki.join(name).to_string_lossy().into_owned();
    let key = |path: &str| certtool(&["--generate-privkey", "--bits=2048", "--outfile", path]);
    std::fs::write(
        pki.join("ca.info"),
        "cn = bench CA\nca\ncert_signing_key\nexpiration_days = 7\n",
    )?;
    std::fs::write(
        pki.join("server.info"),
        "cn = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 7\n",
    )?;
    std::fs::write(
        pki.join("client.info"),
        "cn = bench client\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 7\n",
    )?;
    key(&p("ca-key.pem"))?;
    certtool(&[
        "--generate-self-signed",
        "--load-privkey",
        &p("ca-key.pem"),
        "--template",
        &p("ca.info"),
        "--outfile",
        &p("ca-cert.pem"),
    ])?;
    for (role, out) in [("server", &server_dir), ("client", &client_dir)] {
        let k = out
            .join(format!("{role}-key.pem"))
            .to_string_lossy()
            .into_owned();
        key(&k)?;
        certtool(&[
            "--generate-certificate",
            "--load-ca-certificate",
            &p("ca-cert.pem"),
            "--load-ca-privkey",
            &p("ca-key.pem"),
            "--load-privkey",
            &k,
            "--template",
            &p(&format!("{role}.info")),
            "--outfile",
            &out.join(format!("{role}-cert.pem")).to_string_lossy(),
        ])?;
        std::fs::copy(pki.join("ca-cert.pem"), out.join("ca-cert.pem"))?;
    }
    // fio may run as nobody: it must read its HOME and credentials.
    let status = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir)
        .status()?;
    if !status.success() {
        return Err(Error::msg("chmod of the bench certificates failed"));
    }
    Ok(Creds {
        server_dir,
        fio_home,
        _dir: None,
    })
}

/// A TCP port that was free a moment ago.
fn free_port() -> Option<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).ok()?;
    l.local_addr().ok().map(|a| a.port())
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl Transport for NbdTcp {
    fn id(&self) -> &'static str {
        if self.tls.is_some() {
            "nbds-tcp"
        } else {
            "nbd-tcp"
        }
    }

    fn launch(&self, server: ServerKind, backend: &Backend, dir: &Path) -> Option<LaunchSpec> {
        if !matches!(
            server,
            ServerKind::Ringstor | ServerKind::RingstorNoStats | ServerKind::Qsd
        ) {
            return None;
        }
        let port = free_port()?;
        let mut args = qsd::base_args(backend);
        let mut addr = format!("addr.type=inet,addr.host=127.0.0.1,addr.port={port}");
        let mut fio_prefix = Vec::new();
        let scheme = match &self.tls {
            None => "nbd",
            Some(c) => {
                args.push("--object".into());
                args.push(format!(
                    "tls-creds-x509,id=tls0,dir={},endpoint=server",
                    qsd::escape(&c.server_dir.to_string_lossy())
                ));
                addr.push_str(",tls-creds=tls0");
                if is_root() {
                    fio_prefix.extend(
                        [
                            "setpriv",
                            "--reuid=65534",
                            "--regid=65534",
                            "--clear-groups",
                        ]
                        .map(String::from),
                    );
                }
                fio_prefix.push("env".into());
                fio_prefix.push(format!("HOME={}", c.fio_home.display()));
                "nbds"
            }
        };
        args.push("--nbd-server".into());
        args.push(addr);
        args.push("--export".into());
        args.push(format!(
            "type=nbd,id=exp0,node-name={},name={EXPORT},writable=on,iothread={}",
            qsd::NODE,
            qsd::IOTHREAD
        ));
        Some(LaunchSpec {
            args,
            ready_socket: dir.join("unused.sock"),
            ready_tcp: Some(port),
            fio_args: vec![
                "--ioengine=nbd".into(),
                format!("--uri={scheme}://127.0.0.1:{port}/{EXPORT}"),
            ],
            fio_prefix,
            env: match server {
                ServerKind::RingstorNoStats => vec![("RINGSTOR_STATS".into(), "off".into())],
                _ => Vec::new(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::CacheMode;

    #[test]
    fn ringstor_and_qsd_get_the_same_tls_command_line() {
        let t = NbdTcp {
            tls: Some(Creds {
                server_dir: "/t/srv".into(),
                fio_home: "/t/home".into(),
                _dir: None,
            }),
        };
        let b = Backend::File {
            path: "/t/img".into(),
            cache: CacheMode::PageCache,
        };
        let q = t.launch(ServerKind::Qsd, &b, Path::new("/t")).unwrap();
        let r = t.launch(ServerKind::Ringstor, &b, Path::new("/t")).unwrap();
        let strip = |s: &LaunchSpec| {
            let port = s.ready_tcp.unwrap().to_string();
            s.args.join(" ").replace(&port, "P")
        };
        assert_eq!(strip(&q), strip(&r));
        assert!(q.args.iter().any(|a| a.ends_with(",tls-creds=tls0")));
        assert!(q.fio_args[1].starts_with("--uri=nbds://127.0.0.1:"));
        assert!(q.fio_prefix.contains(&"HOME=/t/home".to_string()));
        assert!(NbdTcp::plain()
            .launch(ServerKind::Nbdkit, &b, Path::new("/t"))
            .is_none());
    }
}
