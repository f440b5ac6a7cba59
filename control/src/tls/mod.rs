//! TLS objects of the control plane: x509 credentials (`creds`, with
//! QEMU's `sanity-check` in `check`), authorization objects (`authz`),
//! the client certificate verifier that applies `tls-authz` (`verifier`)
//! and the subject DN it matches (`dn`).
//!
//! What the data plane gets is one `rustls::ServerConfig` per NBD server,
//! built at `nbd-server-start`, and one `rustls::ClientConfig` per `nbd`
//! block node with `tls-creds` (`client`), built at `blockdev-add`; the
//! record layer runs in the NBD driver.

pub mod authz;
mod check;
mod client;
pub mod creds;
pub mod dn;
mod verifier;

pub use authz::{Authz, AuthzTable, ListFile, RuleList};
pub use creds::{check_psk, X509Creds};
