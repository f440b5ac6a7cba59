//! `ObjectOptions` (`object-add`, `--object`): `iothread`, the TLS
//! credentials and the authorization objects (their properties are in
//! `tls.rs`).

use serde::Deserialize;

use super::input::{Input, InputError};
use super::nbd::SocketAddress;
use super::tls::{
    AuthzListFileOptions, AuthzListOptions, AuthzSimpleOptions, TlsCredsPskOptions,
    TlsCredsX509Options,
};

/// QOM types QSD can create that ringstor cannot yet.
const QEMU_QOM_TYPES: &[&str] = &[
    "authz-pam",
    "secret",
    "secret_keyring",
    "throttle-group",
    "tls-creds-anon",
    "tls-cipher-suites",
    "pr-manager-helper",
];

/// `IothreadProperties`, plus ringstor's `cpu`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct IothreadOptions {
    pub id: String,
    pub poll_max_ns: Option<i64>,
    pub poll_grow: Option<i64>,
    pub poll_shrink: Option<i64>,
    pub aio_max_batch: Option<i64>,
    pub thread_pool_min: Option<i64>,
    pub thread_pool_max: Option<i64>,
    /// ringstor extension: the CPU to pin the thread to.
    pub cpu: Option<usize>,
}

/// ringstor's `metrics` object: an OpenMetrics endpoint at `addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsOptions {
    pub id: String,
    pub addr: SocketAddress,
}

/// `ObjectOptions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectOptions {
    Iothread(IothreadOptions),
    TlsCredsX509(TlsCredsX509Options),
    TlsCredsPsk(TlsCredsPskOptions),
    AuthzSimple(AuthzSimpleOptions),
    AuthzList(AuthzListOptions),
    AuthzListFile(AuthzListFileOptions),
    Metrics(MetricsOptions),
}

impl ObjectOptions {
    /// Parses `ObjectOptions`.
    pub fn parse(mut input: Input) -> Result<ObjectOptions, InputError> {
        let qom_type = input.take_str("qom-type")?;
        match qom_type.as_str() {
            "iothread" => {
                let o: IothreadOptions = input.parse()?;
                check_id(&o.id)?;
                Ok(ObjectOptions::Iothread(o))
            }
            "tls-creds-x509" => {
                let o: TlsCredsX509Options = input.parse()?;
                check_id(&o.id)?;
                Ok(ObjectOptions::TlsCredsX509(o))
            }
            "tls-creds-psk" => {
                let o: TlsCredsPskOptions = input.parse()?;
                check_id(&o.id)?;
                Ok(ObjectOptions::TlsCredsPsk(o))
            }
            "authz-simple" => {
                let o: AuthzSimpleOptions = input.parse()?;
                check_id(&o.id)?;
                Ok(ObjectOptions::AuthzSimple(o))
            }
            "authz-list" => {
                let id = input.take_str("id")?;
                let list = input.parse()?;
                check_id(&id)?;
                Ok(ObjectOptions::AuthzList(AuthzListOptions { id, list }))
            }
            "authz-listfile" => {
                let o: AuthzListFileOptions = input.parse()?;
                check_id(&o.id)?;
                Ok(ObjectOptions::AuthzListFile(o))
            }
            "metrics" => parse_metrics(input).map(ObjectOptions::Metrics),
            t if QEMU_QOM_TYPES.contains(&t) => Err(InputError(format!(
                "Object type '{t}' is not supported by ringstor yet"
            ))),
            t => Err(InputError::bad_value("qom-type", t)),
        }
    }
}

fn check_id(id: &str) -> Result<(), InputError> {
    if is_identifier(id) {
        Ok(())
    } else {
        Err(InputError("Parameter 'id' expects an identifier".into()))
    }
}

fn parse_metrics(mut input: Input) -> Result<MetricsOptions, InputError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Rest {
        id: String,
    }
    let addr = input.take("addr");
    let rest: Rest = input.clone().parse()?;
    if !is_identifier(&rest.id) {
        return Err(InputError("Parameter 'id' expects an identifier".into()));
    }
    let addr = match addr {
        Some(v) => SocketAddress::parse(input.nested("addr", v)?)?,
        None => return Err(InputError::missing("addr")),
    };
    Ok(MetricsOptions { id: rest.id, addr })
}

/// QEMU's `id_wellformed()`: a letter, then letters, digits, `-`, `.`, `_`.
pub fn is_identifier(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}
