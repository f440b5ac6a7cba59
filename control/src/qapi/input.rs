//! Turning a JSON object into a QAPI type, with QEMU's error wording.
//!
//! Types derive `Deserialize` with `deny_unknown_fields`. Unions are taken
//! apart here by hand ([`Input::take_str`], [`Input::split`]), because
//! serde's `flatten` defeats `deny_unknown_fields`; each part then goes
//! through the CLI's deserializer (`cli::coerce`), which tracks member
//! paths and speaks QEMU's wording: strictly for QMP and JSON options
//! (`Invalid parameter type for 'read-only', expected: boolean`), with
//! QEMU's string conversions for keyval (`Parameter 'size' expects size`).

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::cli::coerce;

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
        let value = Value::Object(self.members);
        let r = match self.syntax {
            Syntax::Json => coerce::from_strict(value),
            Syntax::Keyval => coerce::from_keyval(value),
        };
        r.map_err(|e| InputError(prefixed(&self.prefix, &e.to_string())))
    }
}

/// Parses a whole object of type `T` from QMP arguments.
pub fn from_args<T: DeserializeOwned>(args: Map<String, Value>) -> Result<T, InputError> {
    Input::new(args, Syntax::Json).parse()
}

/// The CLI's deserializer names members relative to the object parsed;
/// QEMU names them from the top (`file.filename`).
fn prefixed(prefix: &str, msg: &str) -> String {
    // Every CLI message that names a member quotes it first.
    match msg.find('\'') {
        Some(i) if !prefix.is_empty() => format!("{}{prefix}{}", &msg[..=i], &msg[i + 1..]),
        _ => msg.to_string(),
    }
}
