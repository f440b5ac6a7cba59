//! QEMU's `sanity-check` of x509 credentials at `object-add` time
//! (`qcrypto_tls_creds_x509_sanity_check`), with QEMU's messages: the
//! endpoint's own certificate and every CA certificate are checked for
//! validity times, basic constraints, key usage and (own certificate)
//! extended key usage, then the own certificate is verified against the CA.
//!
//! Certificates are read with x509-parser (rustls and webpki do not expose
//! extensions and validity); the chain is verified by rustls' WebPKI code,
//! the same that verifies peers.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{pem::PemObject, CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, Error as TlsError, RootCertStore};
use x509_parser::prelude::{FromDer, X509Certificate};

/// QEMU reads at most this many CA certificates for the check.
const MAX_CA_CERTS: usize = 16;

/// What a certificate is for, in QEMU's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Ca,
    Server,
    Client,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Ca => "CA",
            Role::Server => "server",
            Role::Client => "client",
        }
    }
}

/// Runs the check; `cert` is the endpoint's own certificate, if it has one.
pub fn sanity_check(server: bool, ca: &Path, cert: Option<&Path>) -> Result<(), String> {
    let role = if server { Role::Server } else { Role::Client };
    let own = match cert {
        Some(p) => Some((p, read_first_cert(p, role)?)),
        None => None,
    };
    let cas = read_ca_list(ca)?;
    if let Some((path, der)) = &own {
        check_cert(der, path, role)?;
    }
    for der in &cas {
        check_cert(der, ca, Role::Ca)?;
    }
    if let Some((path, der)) = &own {
        if !cas.is_empty() {
            check_pair(der, path, &cas, ca, role)?;
        }
    }
    Ok(())
}

fn read_first_cert(path: &Path, role: Role) -> Result<CertificateDer<'static>, String> {
    let text = std::fs::read(path).map_err(|e| {
        let e = crate::error::describe(&e);
        format!("Cannot load CA cert list {}: {e}", path.display())
    })?;
    CertificateDer::from_pem_slice(&text).map_err(|e| {
        format!(
            "Unable to import {} certificate {}: {e}",
            role.name(),
            path.display()
        )
    })
}

fn read_ca_list(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| {
        let e = crate::error::describe(&e);
        format!("Cannot load CA cert list {}: {e}", path.display())
    })?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&text)
        .take(MAX_CA_CERTS)
        .collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c),
        _ => Err(format!(
            "Unable to import CA certificate list {}",
            path.display()
        )),
    }
}

fn check_cert(der: &CertificateDer<'_>, path: &Path, role: Role) -> Result<(), String> {
    let file = path.display();
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("Unable to import {} certificate {file}: {e}", role.name()))?;
    let now = UnixTime::now().as_secs() as i64;
    let validity = cert.validity();
    if validity.not_after.timestamp() < now {
        return Err(format!(
            "The {} certificate {file} has expired",
            role.name()
        ));
    }
    if validity.not_before.timestamp() > now {
        return Err(format!(
            "The {} certificate {file} is not yet active",
            role.name()
        ));
    }

    let bc = cert
        .basic_constraints()
        .map_err(|e| format!("Unable to query certificate {file} basic constraints: {e}"))?;
    match (bc.map(|b| b.value.ca), role) {
        (Some(true), Role::Server | Role::Client) => {
            return Err(format!(
                "The certificate {file} basic constraints show a CA, but we need one for a {}",
                role.name()
            ))
        }
        (Some(false), Role::Ca) => {
            return Err(format!(
                "The certificate {file} basic constraints do not show a CA"
            ))
        }
        (None, Role::Ca) => {
            return Err(format!(
                "The certificate {file} is missing basic constraints for a CA"
            ))
        }
        _ => {}
    }

    // Without the extension QEMU assumes the usage it needs; a missing
    // usage only fails when the extension is critical.
    let ku = cert
        .key_usage()
        .map_err(|e| format!("Unable to query certificate {file} key usage: {e}"))?;
    if let Some(ku) = ku.filter(|k| k.critical) {
        let k = ku.value;
        if role == Role::Ca && !k.key_cert_sign() {
            return Err(format!(
                "Certificate {file} usage does not permit certificate signing"
            ));
        }
        if role != Role::Ca && !k.digital_signature() {
            return Err(format!(
                "Certificate {file} usage does not permit digital signature"
            ));
        }
        if role != Role::Ca && !k.key_encipherment() {
            return Err(format!(
                "Certificate {file} usage does not permit key encipherment"
            ));
        }
    }

    if role != Role::Ca {
        let eku = cert
            .extended_key_usage()
            .map_err(|e| format!("Unable to query certificate {file} key purpose: {e}"))?;
        if let Some(eku) = eku.filter(|e| e.critical) {
            let v = eku.value;
            let allowed = v.any
                || match role {
                    Role::Server => v.server_auth,
                    _ => v.client_auth,
                };
            if !allowed {
                return Err(format!(
                    "Certificate {file} purpose does not allow use with a TLS {}",
                    role.name()
                ));
            }
        }
    }
    Ok(())
}

/// QEMU's `qcrypto_tls_creds_check_cert_pair`: our own certificate must
/// chain to the CA.
fn check_pair(
    der: &CertificateDer<'_>,
    path: &Path,
    cas: &[CertificateDer<'static>],
    ca_path: &Path,
    role: Role,
) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(cas.iter().cloned());
    let provider = rustls::crypto::ring::default_provider();
    let algs = provider.signature_verification_algorithms;
    let result = match role {
        Role::Server => {
            let parsed =
                rustls::server::ParsedCertificate::try_from(der).map_err(|e| e.to_string());
            parsed.and_then(|p| {
                rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &p,
                    &roots,
                    &[],
                    UnixTime::now(),
                    algs.all,
                )
                .map_err(reason)
            })
        }
        _ => WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(provider))
            .build()
            .map_err(|e| e.to_string())
            .and_then(|v| {
                v.verify_client_cert(der, &[], UnixTime::now())
                    .map(|_| ())
                    .map_err(reason)
            }),
    };
    result.map_err(|why| {
        format!(
            "Our own certificate {} failed validation against {}: {why}",
            path.display(),
            ca_path.display()
        )
    })
}

/// QEMU's reasons for a failed verification.
fn reason(e: TlsError) -> String {
    match e {
        TlsError::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "The certificate hasn't got a known issuer".into()
        }
        TlsError::InvalidCertificate(CertificateError::Revoked) => {
            "The certificate has been revoked".into()
        }
        TlsError::InvalidCertificate(CertificateError::UnsupportedSignatureAlgorithmContext {
            ..
        }) => "The certificate uses an insecure algorithm".into(),
        other => format!("The certificate is not trusted ({other})"),
    }
}
