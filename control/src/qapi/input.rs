//! Turning a JSON object into a QAPI type, with QEMU's error wording.
//!
//! Types derive `Deserialize` with `deny_unknown_fields`; this module runs
//! serde through `serde_path_to_error` (serde's own errors carry no field
//! name) and rewrites serde's messages into the ones QEMU's QMP input
//! visitor prints:
//!
//! ```text
//! unknown field `foo`           -> Parameter 'foo' is unexpected
//! missing field `filename`      -> Parameter 'filename' is missing
//! invalid type: .. expected a boolean
//!                               -> Invalid parameter type for 'read-only', expected: boolean
//! unknown variant `x`           -> Parameter 'aio' does not accept value 'x'
//! ```
//!
//! Keyval input (`--blockdev driver=file,...`) goes through the CLI's
//! coercing deserializer, which already speaks QEMU's keyval wording.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A QAPI input error; `Display` is QEMU's `desc`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

impl InputError {
    /// `Parameter 'name' is missing`.
    pub fn missing(name: &str) -> Self {
        InputError(format!("Parameter '{name}' is missing"))
    }
    /// `Parameter 'name' is unexpected`.
    pub fn unexpected(name: &str) -> Self {
        InputError(format!("Parameter '{name}' is unexpected"))
    }
    /// `Invalid parameter type for 'name', expected: ty`.
    pub fn invalid_type(name: &str, ty: &str) -> Self {
        InputError(format!(
            "Invalid parameter type for '{name}', expected: {ty}"
        ))
    }
    /// `Parameter 'name' does not accept value 'value'`.
    pub fn bad_value(name: &str, value: &str) -> Self {
        InputError(format!(
            "Parameter '{name}' does not accept value '{value}'"
        ))
    }
}

/// Where an object came from: it decides how scalars are typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// QMP or a JSON `--blockdev '{...}'`: types are strict.
    Json,
    /// `key=value,...` on the command line: every scalar is a string.
    Keyval,
}

/// An object being taken apart: the members left, where it sits in the
/// whole input (`prefix`, e.g. `file.`) and its syntax.
#[derive(Debug, Clone)]
pub struct Input {
    pub members: Map<String, Value>,
    pub prefix: String,
    pub syntax: Syntax,
}

impl Input {
    /// A top-level object.
    pub fn new(members: Map<String, Value>, syntax: Syntax) -> Input {
        Input {
            members,
            prefix: String::new(),
            syntax,
        }
    }

    /// A nested object at member `name` of `self` (e.g. `addr`).
    pub fn nested(&self, name: &str, value: Value) -> Result<Input, InputError> {
        match value {
            Value::Object(members) => Ok(Input {
                members,
                prefix: format!("{}{name}.", self.prefix),
                syntax: self.syntax,
            }),
            _ => Err(InputError::invalid_type(&self.path(name), "object")),
        }
    }

    /// The full name of member `name`, as QEMU prints it.
    pub fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Removes and returns a member.
    pub fn take(&mut self, name: &str) -> Option<Value> {
        self.members.remove(name)
    }

    /// Removes a required string member (a union discriminator).
    pub fn take_str(&mut self, name: &str) -> Result<String, InputError> {
        match self.members.remove(name) {
            None => Err(InputError::missing(&self.path(name))),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(InputError::invalid_type(&self.path(name), "string")),
        }
    }

    /// Splits off the members named in `names` into their own input (the
    /// base of a union), leaving the rest for the variant.
    pub fn split(&mut self, names: &[&str]) -> Input {
        let mut base = Map::new();
        for n in names {
            if let Some(v) = self.members.remove(*n) {
                base.insert((*n).to_string(), v);
            }
        }
        Input {
            members: base,
            prefix: self.prefix.clone(),
            syntax: self.syntax,
        }
    }

    /// Deserializes what is left into `T` (a `deny_unknown_fields` struct).
    pub fn parse<T: DeserializeOwned>(self) -> Result<T, InputError> {
        let prefix = self.prefix;
        let value = Value::Object(self.members);
        match self.syntax {
            Syntax::Json => {
                serde_path_to_error::deserialize(value).map_err(|e| map_error(&prefix, &e))
            }
            Syntax::Keyval => keyval::parse(value).map_err(|e| InputError(prefixed(&prefix, &e))),
        }
    }
}

/// Parses a whole object of type `T` from QMP arguments.
pub fn from_args<T: DeserializeOwned>(args: Map<String, Value>) -> Result<T, InputError> {
    Input::new(args, Syntax::Json).parse()
}

mod keyval {
    //! Bridge to the CLI's keyval deserializer.
    use serde::de::DeserializeOwned;
    use serde_json::Value;

    // Until the CLI's coercing deserializer is merged, keyval input is
    // parsed strictly (so `on`/`off` and numbers as strings fail).
    pub(super) fn parse<T: DeserializeOwned>(value: Value) -> Result<T, String> {
        serde_path_to_error::deserialize(value).map_err(|e| super::map_error("", &e).to_string())
    }
}

/// Keyval errors name members relative to the object parsed; QEMU names
/// them from the top (`file.filename`).
fn prefixed(prefix: &str, msg: &str) -> String {
    if prefix.is_empty() {
        return msg.to_string();
    }
    match msg.find("Parameter '") {
        Some(i) => {
            let at = i + "Parameter '".len();
            format!("{}{prefix}{}", &msg[..at], &msg[at..])
        }
        None => msg.to_string(),
    }
}

fn map_error(prefix: &str, e: &serde_path_to_error::Error<serde_json::Error>) -> InputError {
    let path = e.path().to_string();
    let at = |leaf: &str| -> String {
        let mut s = prefix.to_string();
        if path != "." && !path.is_empty() {
            s.push_str(&path);
            if !leaf.is_empty() {
                s.push('.');
            }
        }
        s.push_str(leaf);
        s
    };
    let msg = e.inner().to_string();
    // serde_json appends " at line L column C" only when parsing text; a
    // Value has no position, but strip it anyway to be safe.
    let msg = match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    if let Some(name) = backticked(&msg, "unknown field `") {
        return InputError::unexpected(&at(name));
    }
    if let Some(name) = backticked(&msg, "missing field `") {
        return InputError::missing(&at(name));
    }
    if let Some(value) = backticked(&msg, "unknown variant `") {
        return InputError::bad_value(&at(""), value);
    }
    if msg.starts_with("invalid type:") || msg.starts_with("invalid value:") {
        let expected = msg.rsplit("expected ").next().unwrap_or("");
        return InputError::invalid_type(&at(""), qapi_type_name(expected));
    }
    // Our own `de::Error::custom` messages are already in QEMU's words.
    InputError(msg)
}

/// The text between `start` and the next backtick.
fn backticked<'a>(msg: &'a str, start: &str) -> Option<&'a str> {
    let rest = msg.strip_prefix(start)?;
    rest.split('`').next()
}

/// serde's "expected ..." wording to QAPI's type names.
fn qapi_type_name(expected: &str) -> &'static str {
    let e = expected.trim();
    if e.contains("bool") {
        "boolean"
    } else if e.contains("string") || e.contains("variant") || e.contains("str") {
        "string"
    } else if e.starts_with('u') || e.starts_with('i') || e.contains("integer") {
        "integer"
    } else if e.contains("sequence") || e.contains("array") {
        "array"
    } else if e.contains("f32") || e.contains("f64") || e.contains("number") {
        "number"
    } else {
        "object"
    }
}
