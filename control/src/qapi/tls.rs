//! QAPI properties of the TLS credential and authorization objects, as in
//! QEMU's `qapi/crypto.json` and `qapi/authz.json`: `tls-creds-x509`,
//! `tls-creds-psk`, `authz-simple`, `authz-list`, `authz-listfile`.

use serde::Deserialize;

/// `QCryptoTLSCredsEndpoint`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TlsEndpoint {
    /// QEMU's default.
    #[default]
    Client,
    Server,
}

impl TlsEndpoint {
    /// QEMU's name (`QCryptoTLSCredsEndpoint_str`).
    pub fn as_str(self) -> &'static str {
        match self {
            TlsEndpoint::Client => "client",
            TlsEndpoint::Server => "server",
        }
    }
}

/// `TlsCredsX509Properties` with its base `TlsCredsProperties`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TlsCredsX509Options {
    pub id: String,
    pub verify_peer: Option<bool>,
    pub dir: Option<String>,
    pub endpoint: Option<TlsEndpoint>,
    /// A GnuTLS priority string: accepted, and ignored (rustls has its own
    /// safe defaults: TLS 1.3 and 1.2 with AEAD ciphers only).
    pub priority: Option<String>,
    pub sanity_check: Option<bool>,
    pub passwordid: Option<String>,
}

/// `TlsCredsPskProperties` with its base `TlsCredsProperties`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TlsCredsPskOptions {
    pub id: String,
    pub verify_peer: Option<bool>,
    pub dir: Option<String>,
    pub endpoint: Option<TlsEndpoint>,
    pub priority: Option<String>,
    pub username: Option<String>,
}

/// `AuthZSimpleProperties`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AuthzSimpleOptions {
    pub id: String,
    pub identity: String,
}

/// `QAuthZListPolicy`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AuthzPolicy {
    /// QEMU's default for a list.
    #[default]
    Deny,
    Allow,
}

/// `QAuthZListFormat`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AuthzFormat {
    #[default]
    Exact,
    Glob,
}

/// `QAuthZListRule`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AuthzRule {
    #[serde(rename = "match")]
    pub match_: String,
    pub policy: AuthzPolicy,
    pub format: Option<AuthzFormat>,
}

/// `AuthZListProperties` (the contents of an `authz-listfile` file too).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AuthzListRules {
    pub policy: Option<AuthzPolicy>,
    pub rules: Option<Vec<AuthzRule>>,
}

/// `authz-list`: an id plus [`AuthzListRules`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzListOptions {
    pub id: String,
    pub list: AuthzListRules,
}

/// `AuthZListFileProperties`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AuthzListFileOptions {
    pub id: String,
    pub filename: String,
    /// Reload the file when it changes (QEMU's default: true).
    pub refresh: Option<bool>,
}
