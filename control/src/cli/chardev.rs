//! `--chardev` and `--monitor`.
//!
//! QSD still parses `--chardev` with QEMU's legacy QemuOpts syntax, not
//! keyval: no dotted keys, the first bare value is the backend, and a bare
//! later word is a deprecated boolean flag (`server` = `server=on`,
//! `nowait` = `wait=off`).  ringstor only implements the `socket` backend,
//! over a UNIX path, a TCP host/port or an inherited socket (`fd`), which
//! is all a QMP monitor needs.
//!
//! `--monitor` is keyval (implied key `chardev`) or JSON, deserialized with
//! [`super::coerce`] like the other QSD options.

use serde::Deserialize;
use serde_json::Value;

use super::coerce::{from_option, parse_bool};
use super::error::CliError;
use super::keyval::{parse_option, take_value};

/// A socket character device to serve a QMP monitor on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChardevOpts {
    pub id: String,
    /// Always `"socket"`; kept so callers and messages can name it.
    pub backend: String,
    /// UNIX socket path (exclusive with `host`).
    pub path: Option<String>,
    /// TCP host (needs `port`).
    pub host: Option<String>,
    /// TCP port or service name, resolved when the socket is opened.
    pub port: Option<String>,
    /// An inherited listening socket: a descriptor number, or a systemd
    /// socket-activation name (exclusive with `path` and `host`).
    pub fd: Option<String>,
    /// Listen (`server=on`) rather than connect.
    pub server: bool,
    /// With `server`, block startup until a client connects (QEMU's
    /// default); `wait=off` to start at once.
    pub wait: bool,
}

/// A QMP monitor on a chardev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorOpts {
    pub chardev: String,
    pub pretty: bool,
}

/// The QemuOpts keys `--chardev socket` understands here.
const CHARDEV_KEYS: &[&str] = &[
    "backend", "id", "path", "host", "port", "fd", "server", "wait",
];

/// Parse a `--chardev` argument.  Returns the options and the deprecation
/// warnings QEMU would print for short-form booleans.
pub fn parse_chardev(input: &str) -> Result<(ChardevOpts, Vec<String>), CliError> {
    let mut warnings = Vec::new();
    let pairs = if input.starts_with('{') {
        json_pairs(input)?
    } else {
        qemu_opts_pairs(input, &mut warnings)
    };

    let mut seen: Vec<(String, String)> = Vec::new();
    for (key, value) in pairs {
        if !CHARDEV_KEYS.contains(&key.as_str()) {
            return Err(CliError::InvalidParameter(key));
        }
        if seen.iter().any(|(k, _)| *k == key) {
            return Err(CliError::Duplicate(key));
        }
        seen.push((key, value));
    }
    let get = |k: &str| {
        seen.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let get_bool = |k: &str| -> Result<Option<bool>, CliError> {
        match get(k) {
            None => Ok(None),
            Some(v) => parse_bool(&v)
                .map(Some)
                .ok_or_else(|| CliError::ExpectsBool(k.to_string())),
        }
    };

    let id = get("id").ok_or_else(|| CliError::Message("chardev: no id specified".into()))?;
    if !is_identifier(&id) {
        return Err(CliError::ExpectsIdentifier("id".into()));
    }
    let backend = get("backend")
        .ok_or_else(|| CliError::Message(format!("chardev: \"{id}\" missing backend")))?;
    if backend != "socket" {
        return Err(CliError::Message(format!(
            "chardev backend '{backend}' is not supported (ringstor supports only 'socket')"
        )));
    }

    // QemuOpts reads an empty `fd=` as no fd.
    let fd = get("fd").filter(|f| !f.is_empty());
    let (path, host, port) = (get("path"), get("host"), get("port"));
    if [path.is_some(), host.is_some(), fd.is_some()]
        .iter()
        .filter(|&&b| b)
        .count()
        > 1
    {
        return Err(CliError::Message(
            "None or one of 'path', 'fd' or 'host' option required.".into(),
        ));
    }
    match (&path, &host, &port) {
        (Some(_), None, None) | (None, Some(_), Some(_)) => {}
        // QEMU ignores `port` next to `fd`.
        (None, None, _) if fd.is_some() => {}
        (None, Some(_), None) => {
            return Err(CliError::Message("chardev: socket: no port given".into()))
        }
        (None, None, _) => {
            return Err(CliError::Message(
                "chardev: socket: 'path', 'host' or 'fd' option required".into(),
            ))
        }
        (Some(_), _, _) => {
            return Err(CliError::Message(
                "chardev: socket: 'path' cannot be combined with 'host' or 'port'".into(),
            ))
        }
    }

    let server = get_bool("server")?.unwrap_or(false);
    let wait = get_bool("wait")?;
    if wait.is_some() && !server {
        return Err(CliError::Message(
            "'wait' option is incompatible with socket in client connect mode".into(),
        ));
    }
    let opts = ChardevOpts {
        id,
        backend,
        path,
        host,
        port,
        fd,
        server,
        wait: wait.unwrap_or(true),
    };
    Ok((opts, warnings))
}

/// Split QemuOpts text into key/value pairs (QEMU's `get_opt_name_value`).
fn qemu_opts_pairs(input: &str, warnings: &mut Vec<String>) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = input;
    let mut first = true;
    while !rest.is_empty() {
        let len = rest.find(['=', ',']).unwrap_or(rest.len());
        if rest[len..].starts_with('=') {
            let (value, after) = take_value(&rest[len + 1..]);
            pairs.push((rest[..len].to_string(), value));
            rest = after;
        } else if first {
            // The implicitly named first option is the backend.
            let (value, after) = take_value(rest);
            pairs.push(("backend".to_string(), value));
            rest = after;
        } else {
            // A bare word is a boolean flag; "noX" means X=off.
            let name = &rest[..len];
            let (key, value, replacement) = match name.strip_prefix("no") {
                Some(key) => (key, "off", format!("{key}=off")),
                None => (name, "on", format!("{name}=on")),
            };
            warnings.push(format!(
                "warning: short-form boolean option '{name}' deprecated, please use {replacement} instead"
            ));
            pairs.push((key.to_string(), value.to_string()));
            rest = rest[len..].strip_prefix(',').unwrap_or(&rest[len..]);
        }
        first = false;
    }
    pairs
}

/// QSD also takes `--chardev` as a flat JSON object; QemuOpts stores its
/// scalars as strings, so convert them the same way.
fn json_pairs(input: &str) -> Result<Vec<(String, String)>, CliError> {
    let parsed = parse_option(input, None)?;
    parsed
        .value
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(s) => s,
                Value::Bool(b) => if b { "on" } else { "off" }.to_string(),
                Value::Number(n) => n.to_string(),
                _ => {
                    return Err(CliError::InvalidType {
                        name: key,
                        expected: "string".into(),
                    })
                }
            };
            Ok((key, text))
        })
        .collect()
}

/// QEMU's `id_wellformed`: a letter, then letters, digits, `-`, `.`, `_`.
fn is_identifier(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMonitor {
    chardev: String,
    /// Accepted for QSD compatibility; ringstor has no use for it.
    #[allow(dead_code)]
    id: Option<String>,
    mode: Option<MonitorMode>,
    pretty: Option<bool>,
}

#[derive(Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum MonitorMode {
    Readline,
    Control,
}

/// Parse a `--monitor` argument: `[chardev=]ID[,mode=control][,pretty=on|off]`.
pub fn parse_monitor(input: &str) -> Result<MonitorOpts, CliError> {
    let raw: RawMonitor = from_option(parse_option(input, Some("chardev"))?)?;
    if raw.mode == Some(MonitorMode::Readline) {
        return Err(CliError::Message("Only QMP is supported".into()));
    }
    Ok(MonitorOpts {
        chardev: raw.chardev,
        pretty: raw.pretty.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests;
