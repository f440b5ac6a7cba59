//! `ObjectOptions` (`object-add`, `--object`): `iothread` and `secret`.

use serde::Deserialize;

use super::input::{Input, InputError};
use super::nbd::SocketAddress;
use super::remote::SecretOptions;

/// QOM types QSD can create that ringstor cannot yet.
const QEMU_QOM_TYPES: &[&str] = &[
    "authz-list",
    "authz-listfile",
    "authz-pam",
    "authz-simple",
    "secret_keyring",
    "throttle-group",
    "tls-creds-anon",
    "tls-creds-psk",
    "tls-creds-x509",
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
    Secret(SecretOptions),
    Metrics(MetricsOptions),
}

impl ObjectOptions {
    /// Parses `ObjectOptions`.
    pub fn parse(mut input: Input) -> Result<ObjectOptions, InputError> {
        let qom_type = input.take_str("qom-type")?;
        match qom_type.as_str() {
            "iothread" => {
                let o: IothreadOptions = input.parse()?;
                if !is_identifier(&o.id) {
                    return Err(InputError("Parameter 'id' expects an identifier".into()));
                }
                Ok(ObjectOptions::Iothread(o))
            }
            "secret" => {
                let o: SecretOptions = input.parse()?;
                if !is_identifier(&o.id) {
                    return Err(InputError("Parameter 'id' expects an identifier".into()));
                }
                Ok(ObjectOptions::Secret(o))
            }
            "metrics" => parse_metrics(input).map(ObjectOptions::Metrics),
            t if QEMU_QOM_TYPES.contains(&t) => Err(InputError(format!(
                "Object type '{t}' is not supported by ringstor yet"
            ))),
            t => Err(InputError::bad_value("qom-type", t)),
        }
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
