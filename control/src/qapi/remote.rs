//! Options of the drivers that reach past this host: `rbd`
//! (`BlockdevOptionsRbd`) and `nbd` (`BlockdevOptionsNbd`), and the
//! `secret` object (`SecretProperties`) whose id `key-secret` names.

use serde::Deserialize;

use super::input::{Input, InputError};
use super::nbd::SocketAddress;

/// `RbdAuthMode`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RbdAuthMode {
    Cephx,
    None,
}

impl RbdAuthMode {
    /// The name librados takes.
    pub fn as_str(self) -> &'static str {
        match self {
            RbdAuthMode::Cephx => "cephx",
            RbdAuthMode::None => "none",
        }
    }
}

/// `InetSocketAddressBase`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InetServer {
    pub host: String,
    pub port: String,
}

/// `BlockdevOptionsRbd` (`encrypt` is not supported).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RbdDriverOptions {
    pub pool: String,
    pub namespace: Option<String>,
    pub image: String,
    pub conf: Option<String>,
    pub snapshot: Option<String>,
    pub user: Option<String>,
    pub auth_client_required: Option<Vec<RbdAuthMode>>,
    pub key_secret: Option<String>,
    pub server: Option<Vec<InetServer>>,
}

/// `BlockdevOptionsNbd` without `server` (parsed as a flat union).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct NbdRest {
    export: Option<String>,
    tls_creds: Option<String>,
    tls_hostname: Option<String>,
    #[serde(rename = "x-dirty-bitmap")]
    x_dirty_bitmap: Option<String>,
    reconnect_delay: Option<u32>,
    open_timeout: Option<u32>,
}

/// `BlockdevOptionsNbd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdDriverOptions {
    pub server: SocketAddress,
    pub export: Option<String>,
    pub tls_creds: Option<String>,
    pub tls_hostname: Option<String>,
    pub x_dirty_bitmap: Option<String>,
    /// Seconds to keep requests waiting for a reconnection (0: fail at once).
    pub reconnect_delay: u32,
    /// Seconds to keep trying the first connection (0: one attempt).
    pub open_timeout: u32,
}

impl NbdDriverOptions {
    /// Parses what is left of a `blockdev-add driver=nbd` after the base.
    pub fn parse(mut input: Input) -> Result<NbdDriverOptions, InputError> {
        let server = match input.take("server") {
            Some(v) => SocketAddress::parse(input.nested("server", v)?)?,
            None => return Err(InputError::missing(&input.path("server"))),
        };
        let rest: NbdRest = input.parse()?;
        Ok(NbdDriverOptions {
            server,
            export: rest.export,
            tls_creds: rest.tls_creds,
            tls_hostname: rest.tls_hostname,
            x_dirty_bitmap: rest.x_dirty_bitmap,
            reconnect_delay: rest.reconnect_delay.unwrap_or(0),
            open_timeout: rest.open_timeout.unwrap_or(0),
        })
    }
}

/// `QCryptoSecretFormat`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SecretFormat {
    Raw,
    Base64,
}

/// `SecretProperties` (plus `id`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SecretOptions {
    pub id: String,
    pub data: Option<String>,
    pub file: Option<String>,
    pub format: Option<SecretFormat>,
    pub keyid: Option<String>,
    pub iv: Option<String>,
}
