//! Typed deserialization of parsed options with QEMU's rules.
//!
//! Keyval leaves are all strings, so the target type decides what they mean,
//! as QEMU's keyval QObject input visitor does: bools accept
//! `on/off/yes/no/true/false/y/n`, integers accept C `strtoll(.., 0)` syntax
//! (decimal, `0x` hex, leading-`0` octal), sizes accept suffixes (see
//! [`parse_size`]).  [`from_keyval`] does that; [`from_strict`] takes JSON
//! input strictly but with the same QEMU error wording; [`from_option`] picks
//! the right one for a [`ParsedOption`].
//!
//! Errors name the full parameter path (`cache.direct`, `addr.0.host`).
//!
//! Limitation: serde buffers internally tagged enums (`#[serde(tag = ..)]`)
//! and `#[serde(flatten)]` through untyped content, so keyval strings inside
//! them are not converted.  For QAPI flat unions, take the discriminator
//! with [`take_discriminator`] and deserialize the variant's struct directly.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::Deserializer;
use serde_json::{Map, Value};

use super::error::CliError;
use super::keyval::ParsedOption;

mod access;
mod scalar;
#[cfg(test)]
mod tests;

pub use scalar::{parse_bool, parse_int, parse_size, parse_uint};

/// Newtype-struct name [`deserialize_size`] uses to ask for a QEMU `size`.
/// Deserializers that do not know it (serde_json) just see a newtype around
/// a `u64`, which keeps JSON strict.
const SIZE_TOKEN: &str = "$ringstor::cli::size";

/// Deserialize keyval output, converting string leaves to the target types.
pub fn from_keyval<T: DeserializeOwned>(v: Value) -> Result<T, CliError> {
    T::deserialize(ValueDe::new(v, String::new(), true)).map_err(DeError::finish)
}

/// Deserialize JSON strictly (no string conversion), with QEMU's wording.
pub fn from_strict<T: DeserializeOwned>(v: Value) -> Result<T, CliError> {
    T::deserialize(ValueDe::new(v, String::new(), false)).map_err(DeError::finish)
}

/// Deserialize an option in the mode its syntax calls for.
pub fn from_option<T: DeserializeOwned>(opt: ParsedOption) -> Result<T, CliError> {
    let value = Value::Object(opt.value);
    if opt.keyval {
        from_keyval(value)
    } else {
        from_strict(value)
    }
}

/// Remove and return a QAPI flat union's discriminator (`driver`, `type`,
/// `qom-type`) so the caller can choose the variant type to deserialize the
/// rest into.
pub fn take_discriminator(map: &mut Map<String, Value>, tag: &str) -> Result<String, CliError> {
    match map.remove(tag) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(CliError::InvalidType {
            name: tag.to_string(),
            expected: "string".into(),
        }),
        None => Err(CliError::Missing(tag.to_string())),
    }
}

/// `#[serde(deserialize_with = "deserialize_size")]` for QAPI `size` fields:
/// a JSON number, or in keyval mode a string like `64k`, `1.5G`, `0x1000`.
pub fn deserialize_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_newtype_struct(SIZE_TOKEN, SizeVisitor)
}

/// [`deserialize_size`] for `Option<u64>`; pair it with `#[serde(default)]`.
pub fn deserialize_opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    deserialize_size(d).map(Some)
}

struct SizeVisitor;

impl<'de> Visitor<'de> for SizeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("size")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        // Reached only from deserializers that ignore SIZE_TOKEN: strict.
        <u64 as de::Deserialize>::deserialize(d)
    }
}

/// Error while deserializing.  Serde reports some errors without knowing
/// where they happened (`unknown_field`, `missing_field`, ...); those stay
/// `Pending` until the deserializer that knows the path resolves them.
#[derive(Debug)]
pub struct DeError(Pending);

#[derive(Debug)]
enum Pending {
    Done(CliError),
    UnknownField(String),
    MissingField(String),
    UnknownVariant(String),
    InvalidType,
    Custom(String),
}

impl DeError {
    fn done(e: CliError) -> Self {
        DeError(Pending::Done(e))
    }

    /// Turn a pending error into its final form for the value at `path`,
    /// which was expected to be of QEMU type `expected`.
    fn resolve(self, path: &str, expected: &str) -> Self {
        let e = match self.0 {
            Pending::Done(e) => e,
            Pending::UnknownField(f) => CliError::Unexpected(join(path, &f)),
            Pending::MissingField(f) => CliError::Missing(join(path, &f)),
            Pending::UnknownVariant(v) => CliError::BadValue {
                name: path.to_string(),
                value: v,
            },
            Pending::InvalidType => CliError::InvalidType {
                name: path.to_string(),
                expected: expected.to_string(),
            },
            Pending::Custom(m) => CliError::Message(m),
        };
        DeError::done(e)
    }

    fn finish(self) -> CliError {
        match self.resolve("", "value").0 {
            Pending::Done(e) => e,
            _ => CliError::Message("internal error: unresolved".into()),
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.0 {
            Pending::Done(e) => e.fmt(f),
            Pending::UnknownField(x) => write!(f, "Parameter '{x}' is unexpected"),
            Pending::MissingField(x) => write!(f, "Parameter '{x}' is missing"),
            Pending::UnknownVariant(x) => write!(f, "Value '{x}' is not accepted"),
            Pending::InvalidType => f.write_str("Invalid parameter type"),
            Pending::Custom(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError(Pending::Custom(msg.to_string()))
    }
    fn invalid_type(_: de::Unexpected, _: &dyn de::Expected) -> Self {
        DeError(Pending::InvalidType)
    }
    fn unknown_variant(variant: &str, _: &'static [&'static str]) -> Self {
        DeError(Pending::UnknownVariant(variant.to_string()))
    }
    fn unknown_field(field: &str, _: &'static [&'static str]) -> Self {
        DeError(Pending::UnknownField(field.to_string()))
    }
    fn missing_field(field: &'static str) -> Self {
        DeError(Pending::MissingField(field.to_string()))
    }
}

/// `path.name`, or `name` at the root.
fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// A deserializer over one JSON value at a known parameter path.
struct ValueDe {
    value: Value,
    path: String,
    keyval: bool,
}

impl ValueDe {
    fn new(value: Value, path: String, keyval: bool) -> Self {
        ValueDe {
            value,
            path,
            keyval,
        }
    }

    fn type_error(&self, expected: &str) -> DeError {
        DeError::done(CliError::InvalidType {
            name: self.path.clone(),
            expected: expected.to_string(),
        })
    }

    /// The string to convert, if keyval mode gave us one.
    fn keyval_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) if self.keyval => Some(s),
            _ => None,
        }
    }

    fn signed(&self) -> Result<i64, DeError> {
        if let Some(s) = self.keyval_str() {
            return parse_int(s)
                .ok_or_else(|| DeError::done(CliError::ExpectsInt(self.path.clone())));
        }
        match &self.value {
            Value::Number(n) => n
                .as_i64()
                .ok_or_else(|| DeError::done(CliError::ExpectsInt(self.path.clone()))),
            _ => Err(self.type_error("integer")),
        }
    }

    fn unsigned(&self) -> Result<u64, DeError> {
        if let Some(s) = self.keyval_str() {
            return parse_uint(s)
                .ok_or_else(|| DeError::done(CliError::ExpectsInt(self.path.clone())));
        }
        match &self.value {
            Value::Number(n) => n
                .as_u64()
                .ok_or_else(|| DeError::done(CliError::ExpectsInt(self.path.clone()))),
            _ => Err(self.type_error("integer")),
        }
    }

    fn float(&self) -> Result<f64, DeError> {
        if let Some(s) = self.keyval_str() {
            return s
                .trim_start()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| DeError::done(CliError::ExpectsNumber(self.path.clone())));
        }
        match &self.value {
            Value::Number(n) => n.as_f64().ok_or_else(|| self.type_error("number")),
            _ => Err(self.type_error("number")),
        }
    }

    fn size(&self) -> Result<u64, DeError> {
        if let Some(s) = self.keyval_str() {
            return parse_size(s)
                .ok_or_else(|| DeError::done(CliError::ExpectsSize(self.path.clone())));
        }
        match &self.value {
            Value::Number(n) => n
                .as_u64()
                .ok_or_else(|| DeError::done(CliError::ExpectsSize(self.path.clone()))),
            _ => Err(self.type_error("integer")),
        }
    }
}

/// Narrow an integer to the width the target asked for.
macro_rules! int_method {
    ($method:ident, $visit:ident, $ty:ty, $wide:ident) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let wide = self.$wide()?;
            let narrow = <$ty>::try_from(wide)
                .map_err(|_| DeError::done(CliError::ExpectsInt(self.path.clone())))?;
            visitor
                .$visit(narrow)
                .map_err(|e: DeError| e.resolve(&self.path, "integer"))
        }
    };
}

impl<'de> Deserializer<'de> for ValueDe {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let path = self.path.clone();
        let r = match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => visitor.visit_u64(u),
                (_, Some(i), _) => visitor.visit_i64(i),
                (_, _, Some(f)) => visitor.visit_f64(f),
                _ => Err(DeError(Pending::InvalidType)),
            },
            Value::String(s) => visitor.visit_string(s),
            Value::Array(a) => visitor.visit_seq(access::Seq::new(a, path.clone(), self.keyval)),
            Value::Object(m) => visitor.visit_map(access::MapA::new(m, path.clone(), self.keyval)),
        };
        r.map_err(|e: DeError| e.resolve(&path, "value"))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let b = match (&self.value, self.keyval_str()) {
            (_, Some(s)) => parse_bool(s)
                .ok_or_else(|| DeError::done(CliError::ExpectsBool(self.path.clone())))?,
            (Value::Bool(b), None) => *b,
            _ => return Err(self.type_error("boolean")),
        };
        visitor
            .visit_bool(b)
            .map_err(|e: DeError| e.resolve(&self.path, "boolean"))
    }

    int_method!(deserialize_i8, visit_i8, i8, signed);
    int_method!(deserialize_i16, visit_i16, i16, signed);
    int_method!(deserialize_i32, visit_i32, i32, signed);
    int_method!(deserialize_i64, visit_i64, i64, signed);
    int_method!(deserialize_u8, visit_u8, u8, unsigned);
    int_method!(deserialize_u16, visit_u16, u16, unsigned);
    int_method!(deserialize_u32, visit_u32, u32, unsigned);
    int_method!(deserialize_u64, visit_u64, u64, unsigned);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let f = self.float()?;
        visitor
            .visit_f64(f)
            .map_err(|e: DeError| e.resolve(&self.path, "number"))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::String(s) => visitor
                .visit_string(s)
                .map_err(|e: DeError| e.resolve(&self.path, "string")),
            _ => Err(self.type_error("string")),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            _ => Err(self.type_error("null")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == SIZE_TOKEN {
            let size = self.size()?;
            return visitor
                .visit_u64(size)
                .map_err(|e: DeError| e.resolve(&self.path, "size"));
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::Array(a) => visitor
                .visit_seq(access::Seq::new(a, self.path.clone(), self.keyval))
                .map_err(|e: DeError| e.resolve(&self.path, "array")),
            _ => Err(self.type_error("array")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::Object(m) => visitor
                .visit_map(access::MapA::new(m, self.path.clone(), self.keyval))
                .map_err(|e: DeError| e.resolve(&self.path, "object")),
            _ => Err(self.type_error("object")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let path = self.path.clone();
        let r = match self.value {
            // Unit variant given by name, the only form QAPI enums take.
            Value::String(s) => visitor.visit_enum(s.into_deserializer()),
            // Externally tagged `{"variant": payload}`.
            Value::Object(m) if m.len() == 1 => {
                visitor.visit_enum(access::Enum::new(m, path.clone(), self.keyval))
            }
            _ => return Err(self.type_error("string")),
        };
        r.map_err(|e: DeError| e.resolve(&path, "string"))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

/// Lets a [`ValueDe`] be used as a `DeserializeSeed` target in the access
/// helpers.
fn deserialize_child<'de, S: DeserializeSeed<'de>>(
    seed: S,
    value: Value,
    path: String,
    keyval: bool,
) -> Result<S::Value, DeError> {
    seed.deserialize(ValueDe::new(value, path, keyval))
}
