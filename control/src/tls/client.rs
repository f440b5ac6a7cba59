//! The client side of a `tls-creds-x509` object (`endpoint=client`): the
//! rustls configuration an `nbd` block node connects with, as QEMU's
//! GnuTLS session is set up for a client.
//!
//! - `verify-peer=on` (the default): the server's chain must lead to
//!   `ca-cert.pem` and its certificate carry the expected host name
//!   (rustls' WebPKI verifier; the name is the node's business).
//! - `verify-peer=off`: QEMU checks nothing about the server's
//!   certificate, so neither do we; the handshake signatures are still
//!   verified, so the session is with whoever holds that certificate's key.
//! - `client-cert.pem` / `client-key.pem`, when the directory has them,
//!   are presented to servers that ask (`verify-peer` on the server).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, Error, SignatureScheme};

use super::creds::{provider, X509Creds};

impl X509Creds {
    /// The configuration of an `nbd` node's connections with these
    /// credentials. See the module docs.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let verifier: Arc<dyn ServerCertVerifier> = if self.verify_peer {
            WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider())
                .build()
                .map_err(|e| format!("Cannot use the CA certificate: {e}"))?
        } else {
            Arc::new(AnyServer {
                algorithms: provider().signature_verification_algorithms,
            })
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.identity {
            Some((certs, key)) => builder
                .with_client_auth_cert(certs.clone(), key.clone_key())
                .map_err(|e| format!("Cannot use the client certificate and key: {e}"))?,
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// `verify-peer=off`: any server certificate (see the module docs).
#[derive(Debug)]
struct AnyServer {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
