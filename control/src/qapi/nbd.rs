//! NBD server options: `NbdServerOptions` (`--nbd-server`, with the flat
//! `SocketAddress`) and `nbd-server-start` (with `SocketAddressLegacy`,
//! `{"type": "unix", "data": {"path": ...}}`), plus `nbd-server-add` and
//! `nbd-server-remove`.

use serde::Deserialize;

use super::export::RemoveModeArg;
use super::input::{Input, InputError};

/// A listening address, whichever syntax it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAddress {
    Unix { path: String },
    Inet { host: String, port: String },
    Fd { name: String },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct UnixAddr {
    path: String,
    #[serde(rename = "abstract")]
    abstract_: Option<bool>,
    tight: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct InetAddr {
    host: String,
    port: String,
    numeric: Option<bool>,
    to: Option<u16>,
    ipv4: Option<bool>,
    ipv6: Option<bool>,
    keep_alive: Option<bool>,
    mptcp: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FdAddr {
    str: String,
}

impl SocketAddress {
    /// The flat `SocketAddress` union (`addr.type=unix,addr.path=...`).
    pub fn parse(mut input: Input) -> Result<SocketAddress, InputError> {
        let kind = input.take_str("type")?;
        Self::parse_variant(&kind, input)
    }

    /// `SocketAddressLegacy`: `{"type": .., "data": {..}}`.
    pub fn parse_legacy(mut input: Input) -> Result<SocketAddress, InputError> {
        let kind = input.take_str("type")?;
        if !matches!(kind.as_str(), "unix" | "inet" | "fd" | "vsock") {
            return Err(InputError::bad_value(&input.path("type"), &kind));
        }
        let data = match input.take("data") {
            Some(v) => input.nested("data", v)?,
            None => return Err(InputError::missing(&input.path("data"))),
        };
        if let Some(extra) = input.members.keys().next() {
            return Err(InputError::unexpected(&input.path(extra)));
        }
        Self::parse_variant(&kind, data)
    }

    fn parse_variant(kind: &str, input: Input) -> Result<SocketAddress, InputError> {
        match kind {
            "unix" => {
                let a: UnixAddr = input.parse()?;
                if a.abstract_ == Some(true) {
                    return Err(InputError(
                        "abstract unix sockets are not supported by ringstor yet".into(),
                    ));
                }
                let _ = a.tight;
                Ok(SocketAddress::Unix { path: a.path })
            }
            "inet" => {
                let a: InetAddr = input.parse()?;
                let _ = (a.numeric, a.to, a.ipv4, a.ipv6, a.keep_alive, a.mptcp);
                Ok(SocketAddress::Inet {
                    host: a.host,
                    port: a.port,
                })
            }
            "fd" => {
                let a: FdAddr = input.parse()?;
                Ok(SocketAddress::Fd { name: a.str })
            }
            "vsock" => Err(InputError(
                "vsock addresses are not supported by ringstor yet".into(),
            )),
            other => Err(InputError::bad_value(&input.path("type"), other)),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ServerRest {
    tls_creds: Option<String>,
    tls_authz: Option<String>,
    max_connections: Option<u32>,
    handshake_max_seconds: Option<u32>,
}

/// `NbdServerOptions` / `nbd-server-start` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdServerOptions {
    pub addr: SocketAddress,
    pub tls_creds: Option<String>,
    pub tls_authz: Option<String>,
    /// Connections served at once (0: unlimited; default 100, as QEMU's).
    pub max_connections: u32,
    /// Seconds a client may take to finish the handshake; 0 is no limit
    /// (QEMU's default is 10).
    pub handshake_max_seconds: u32,
}

impl NbdServerOptions {
    /// `--nbd-server` (flat `addr`).
    pub fn parse(input: Input) -> Result<NbdServerOptions, InputError> {
        Self::parse_with(input, SocketAddress::parse)
    }

    /// `nbd-server-start` (legacy `addr`).
    pub fn parse_legacy(input: Input) -> Result<NbdServerOptions, InputError> {
        Self::parse_with(input, SocketAddress::parse_legacy)
    }

    fn parse_with(
        mut input: Input,
        addr: fn(Input) -> Result<SocketAddress, InputError>,
    ) -> Result<NbdServerOptions, InputError> {
        let addr_value = input.take("addr");
        let rest: ServerRest = input.clone().parse()?;
        let addr = match addr_value {
            Some(v) => addr(input.nested("addr", v)?)?,
            None => return Err(InputError::missing("addr")),
        };
        Ok(NbdServerOptions {
            addr,
            tls_creds: rest.tls_creds,
            tls_authz: rest.tls_authz,
            // QEMU's NBD_DEFAULT_MAX_CONNECTIONS since 9.1 (CVE-2024-7409).
            max_connections: rest.max_connections.unwrap_or(100),
            // QEMU's NBD_DEFAULT_HANDSHAKE_MAX_SECS.
            handshake_max_seconds: rest.handshake_max_seconds.unwrap_or(10),
        })
    }
}

/// `NbdServerAddOptions` (deprecated `nbd-server-add`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NbdServerAddOptions {
    pub device: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub writable: Option<bool>,
    pub bitmap: Option<String>,
}

/// `nbd-server-remove` arguments.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NbdServerRemoveArgs {
    pub name: String,
    pub mode: Option<RemoveModeArg>,
}
