//! The client certificate verifier of an NBD server with `tls-authz`:
//! rustls' WebPKI verifier (chain to the CA, validity, revocation), then
//! the client's subject DN checked against the authorization object that
//! has the `tls-authz` id when the client connects.
//!
//! A refusal is an `access_denied` alert to the client and one log line
//! with QEMU's wording (`TLS x509 authz check for <DN> is denied`).

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use super::authz::AuthzTable;
use super::dn::subject_dn;

/// See the module docs.
#[derive(Debug)]
pub struct AuthzVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    table: AuthzTable,
    authz_id: String,
}

impl AuthzVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, table: AuthzTable, authz_id: String) -> Self {
        AuthzVerifier {
            inner,
            table,
            authz_id,
        }
    }
}

fn denied() -> Error {
    Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

impl ClientCertVerifier for AuthzVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let dn = subject_dn(end_entity.as_ref())
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        match self.table.is_allowed(&self.authz_id, &dn) {
            Ok(true) => Ok(verified),
            Ok(false) => {
                log::warn!("nbd: TLS x509 authz check for {dn} is denied");
                Err(denied())
            }
            Err(why) => {
                log::warn!("nbd: TLS x509 authz check for {dn} failed: {why}");
                Err(denied())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
