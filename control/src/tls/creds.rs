//! `tls-creds-x509` and `tls-creds-psk` objects.
//!
//! x509 credentials are loaded and checked when the object is created,
//! from QEMU's file names in `dir`: `ca-cert.pem` (and, for a server,
//! `server-cert.pem`, `server-key.pem`, optional `ca-crl.pem` and
//! `dh-params.pem`; for a client, optional `client-cert.pem` and
//! `client-key.pem`). A missing or unreadable file, a key that does not
//! match its certificate, and (with `sanity-check`, the default) a
//! certificate that is not valid now fail `object-add` with one line.
//! `nbd-server-start` then builds its rustls configuration from them, and
//! an `nbd` block node with `tls-creds` its client one (`client.rs`).
//!
//! Not used, and documented so: `priority` (a GnuTLS priority string;
//! rustls offers TLS 1.3 and 1.2 with AEAD suites only) and
//! `dh-params.pem` (rustls uses ECDHE only). TLS-PSK cannot be offered at
//! all: rustls has no external pre-shared keys, so `tls-creds-psk` fails
//! with a clear error after QEMU's own checks.

use std::path::PathBuf;
use std::sync::Arc;

use nix::errno::Errno;
use nix::unistd::{access, AccessFlags};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use super::authz::AuthzTable;
use super::check::sanity_check;
use super::verifier::AuthzVerifier;
use crate::qapi::{TlsCredsPskOptions, TlsCredsX509Options, TlsEndpoint};

const CA_CERT: &str = "ca-cert.pem";
const CA_CRL: &str = "ca-crl.pem";
const SERVER_CERT: &str = "server-cert.pem";
const SERVER_KEY: &str = "server-key.pem";
const CLIENT_CERT: &str = "client-cert.pem";
const CLIENT_KEY: &str = "client-key.pem";
const DH_PARAMS: &str = "dh-params.pem";
const PSK_FILE: &str = "keys.psk";

/// The provider every TLS object uses (the project's choice: `ring`).
pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// QEMU's `qcrypto_tls_creds_get_path`: `dir/name` if readable; a missing
/// optional file is `None`, anything else an error.
fn cred_path(dir: &str, name: &str, required: bool) -> Result<Option<PathBuf>, String> {
    let path = PathBuf::from(format!("{dir}/{name}"));
    match access(&path, AccessFlags::R_OK) {
        Ok(()) => Ok(Some(path)),
        Err(Errno::ENOENT) if !required => Ok(None),
        Err(e) => Err(format!(
            "Unable to access credentials {}: {}",
            path.display(),
            e.desc()
        )),
    }
}

fn dir_of(dir: &Option<String>) -> Result<&str, String> {
    dir.as_deref()
        .ok_or_else(|| "Missing 'dir' property value".to_string())
}

/// A loaded `tls-creds-x509`. See the module docs.
#[derive(Debug)]
pub struct X509Creds {
    pub endpoint: TlsEndpoint,
    pub verify_peer: bool,
    /// This endpoint's certificate chain and key (always, for a server).
    pub(super) identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    pub(super) roots: Arc<RootCertStore>,
    crls: Vec<CertificateRevocationListDer<'static>>,
}

impl X509Creds {
    /// Loads and checks the files; the error is `object-add`'s `desc`.
    pub fn load(o: &TlsCredsX509Options) -> Result<X509Creds, String> {
        let dir = dir_of(&o.dir)?;
        let endpoint = o.endpoint.unwrap_or_default();
        let server = endpoint == TlsEndpoint::Server;
        let ca = cred_path(dir, CA_CERT, true)?.unwrap_or_default();
        let (crl, cert, key, dh) = if server {
            (
                cred_path(dir, CA_CRL, false)?,
                cred_path(dir, SERVER_CERT, true)?,
                cred_path(dir, SERVER_KEY, true)?,
                cred_path(dir, DH_PARAMS, false)?,
            )
        } else {
            (
                None,
                cred_path(dir, CLIENT_CERT, false)?,
                cred_path(dir, CLIENT_KEY, false)?,
                None,
            )
        };
        if o.sanity_check.unwrap_or(true) {
            sanity_check(server, &ca, cert.as_deref())?;
        }
        let roots = load_roots(&ca)?;
        let identity = match (cert, key) {
            (Some(c), Some(k)) => {
                if let Some(p) = &o.passwordid {
                    // Encrypted keys need a `secret` object, which ringstor
                    // does not have: QEMU's lookup fails the same way.
                    return Err(format!("No secret with id '{p}'"));
                }
                Some(load_identity(&c, &k)?)
            }
            _ => None,
        };
        let crls = match crl {
            Some(p) => load_crls(&p)?,
            None => Vec::new(),
        };
        if let Some(p) = dh {
            std::fs::read(&p).map_err(|e| {
                let e = crate::error::describe(&e);
                format!("Failed to open file '{}': {e}", p.display())
            })?;
            log::warn!(
                "tls-creds-x509 '{}': {} is ignored: rustls uses ECDHE key exchange only",
                o.id,
                p.display()
            );
        }
        if o.priority.is_some() {
            log::info!(
                "tls-creds-x509 '{}': priority is ignored (rustls' defaults apply)",
                o.id
            );
        }
        let creds = X509Creds {
            endpoint,
            verify_peer: o.verify_peer.unwrap_or(true),
            identity,
            roots: Arc::new(roots),
            crls,
        };
        // Everything rustls checks (key type, CRL syntax) fails now,
        // not at nbd-server-start or blockdev-add.
        if server {
            creds.server_config(None)?;
        } else {
            creds.client_config()?;
        }
        Ok(creds)
    }

    /// The rustls configuration of a TLS server with these credentials;
    /// with `verify-peer`, clients must present a certificate from the CA,
    /// and with `authz` (the table and the `tls-authz` id) its subject
    /// must be allowed. Without `verify-peer`, as in QEMU, no client
    /// certificate is asked for and `authz` has no effect.
    pub fn server_config(
        &self,
        authz: Option<(AuthzTable, String)>,
    ) -> Result<Arc<ServerConfig>, String> {
        let Some((certs, key)) = &self.identity else {
            return Err("Expected TLS credentials for a server endpoint".into());
        };
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if self.verify_peer {
            let webpki =
                WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
                    .with_crls(self.crls.iter().cloned())
                    .build()
                    .map_err(|e| format!("Cannot use the CA certificate or CRL: {e}"))?;
            let verifier: Arc<dyn ClientCertVerifier> = match authz {
                Some((table, id)) => Arc::new(AuthzVerifier::new(webpki, table, id)),
                None => webpki,
            };
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| format!("Cannot use the server certificate and key: {e}"))?;
        // No resumption: a resumed session would skip the client
        // certificate check, and with it a changed tls-authz.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }
}

fn load_roots(ca: &std::path::Path) -> Result<RootCertStore, String> {
    let fail = |why: String| format!("Cannot load CA certificate '{}': {why}", ca.display());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(fail("no usable certificate".into()));
    }
    Ok(roots)
}

fn load_identity(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let fail = |why: String| {
        format!(
            "Cannot load certificate '{}' & key '{}': {why}",
            cert.display(),
            key.display()
        )
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no certificate found".into()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| fail(format!("private key: {e}")))?;
    let signing = provider()
        .key_provider
        .load_private_key(der.clone_key())
        .map_err(|e| fail(e.to_string()))?;
    match CertifiedKey::new(certs.clone(), signing).keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(fail(
                "The certificate and the given key do not match.".into(),
            ))
        }
        // A key type whose public half rustls cannot derive: accepted, as
        // rustls itself does.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    Ok((certs, der))
}

fn load_crls(path: &std::path::Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let fail = |why: String| format!("Cannot load CRL '{}': {why}", path.display());
    CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(e.to_string()))
}

/// `tls-creds-psk`: QEMU's checks, then the refusal (see the module docs).
pub fn check_psk(o: &TlsCredsPskOptions) -> Result<(), String> {
    let dir = dir_of(&o.dir)?;
    if o.endpoint.unwrap_or_default() == TlsEndpoint::Server {
        if o.username.is_some() {
            return Err("username should not be set when endpoint=server".into());
        }
        cred_path(dir, PSK_FILE, true)?;
        cred_path(dir, DH_PARAMS, false)?;
    } else {
        cred_path(dir, PSK_FILE, true)?;
    }
    Err(
        "tls-creds-psk is not supported by ringstor: rustls has no TLS with \
         pre-shared keys (use tls-creds-x509)"
            .into(),
    )
}
