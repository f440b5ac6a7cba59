//! TLS for the client node (`tls-creds`, `tls-hostname`): what the node
//! is given, the upgrade of the blocking first connection, and QEMU's
//! words for a failed handshake.
//!
//! The record layer in the transmission phase, and the handshake of a
//! reconnection in the ring, are the NBD server's (`nbd/tls.rs`, which
//! is generic over the side of the connection); only the blocking
//! handshake at `blockdev-add` is here, as rustls' `complete_io` on the
//! std socket, after which the session moves into the ring with the
//! socket.
//!
//! # Server names
//!
//! As QEMU, the certificate is matched against `tls-hostname`, else the
//! inet host; a unix socket without `tls-hostname` has no name to match,
//! and with `verify-peer` (the default) the handshake then fails with
//! "No hostname for certificate validation" once the chain is checked.
//! rustls needs a name anyway: such a connection, and one whose host is
//! not a valid DNS name or address, is given [`NO_NAME`], which no
//! certificate of a real server carries.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig, ClientConnection};

use crate::nbd::tls::{TlsEnd, TlsSession};

/// The name given to rustls when there is none to check (see the module docs).
const NO_NAME: &str = "no-hostname.invalid";

/// What the node's connections need for TLS.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The `tls-creds-x509` object's configuration: its CA (or, with
    /// `verify-peer=off`, no check at all) and the client certificate if
    /// the directory has one.
    pub config: Arc<ClientConfig>,
    /// `tls-hostname`, else the inet host; `None` for a unix socket
    /// without `tls-hostname`.
    pub hostname: Option<String>,
}

impl ClientTls {
    /// The name rustls checks the certificate against.
    pub(crate) fn server_name(&self) -> ServerName<'static> {
        self.hostname
            .as_deref()
            .and_then(|h| ServerName::try_from(h.to_string()).ok())
            .unwrap_or_else(|| ServerName::try_from(NO_NAME).expect("a valid DNS name"))
    }

    /// QEMU's text for a TLS failure (`qcrypto_tls_session_check_certificate`
    /// and GnuTLS' messages), else rustls' own.
    pub(crate) fn describe(&self, e: &io::Error) -> String {
        let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                // The server hung up without `close_notify` (GnuTLS' words).
                return "Cannot read from TLS channel: The TLS connection was non-properly \
                        terminated."
                    .into();
            }
            return e.to_string();
        };
        match tls {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => {
                    "The certificate hasn't got a known issuer".into()
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => match &self.hostname {
                    Some(h) => format!("Certificate does not match the hostname {h}"),
                    None => "No hostname for certificate validation".into(),
                },
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "The certificate has expired".into()
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "The certificate is not yet activated".into()
                }
                CertificateError::Revoked => "The certificate has been revoked".into(),
                other => format!("The certificate is not trusted: {other:?}"),
            },
            other => format!("TLS handshake failed: {other}"),
        }
    }

    /// Why the ring's handshake ended, in the same words.
    pub(crate) fn describe_end(&self, e: &TlsEnd) -> String {
        match e {
            TlsEnd::Closed => "The server closed the connection during the TLS handshake".into(),
            TlsEnd::Failed(e) => self.describe(e),
        }
    }

    /// Runs the handshake on a blocking socket (with its timeouts set).
    pub(crate) fn handshake_blocking<S: Read + Write>(
        &self,
        sock: &mut S,
    ) -> Result<ClientConnection, String> {
        let mut conn = ClientConnection::new(self.config.clone(), self.server_name())
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        while conn.is_handshaking() {
            conn.complete_io(sock).map_err(|e| self.describe(&e))?;
        }
        while conn.wants_write() {
            conn.write_tls(sock).map_err(|e| self.describe(&e))?;
        }
        Ok(conn)
    }
}

/// The session of the first connection, moving with its socket from the
/// control thread to the first iothread that uses the node.
pub(crate) struct Spare(pub(crate) TlsSession<ClientConnection>);

impl std::fmt::Debug for Spare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsSession")
    }
}

/// Blocking reads and writes of the first connection's handshake, plain
/// or, once upgraded, through TLS.
pub(crate) struct BlockingIo<'a, S: Read + Write + ?Sized> {
    pub(crate) sock: &'a mut S,
    pub(crate) tls: Option<ClientConnection>,
}

impl<S: Read + Write + ?Sized> BlockingIo<'_, S> {
    pub(crate) fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match &mut self.tls {
            None => self.sock.write_all(b),
            Some(c) => {
                let mut s = rustls::Stream::new(c, &mut self.sock);
                s.write_all(b)?;
                s.flush()
            }
        }
    }

    pub(crate) fn read_exact(&mut self, b: &mut [u8]) -> io::Result<()> {
        match &mut self.tls {
            None => self.sock.read_exact(b),
            Some(c) => rustls::Stream::new(c, &mut self.sock).read_exact(b),
        }
    }
}
