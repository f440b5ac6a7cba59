//! Serde access helpers (sequence, map, enum) for the keyval deserializer;
//! their only job beyond iteration is extending the parameter path so that
//! errors name `addr.0.host` rather than `host`.

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde_json::{Map, Value};

use super::{deserialize_child, join, DeError};

/// Elements of an array.  Keyval names element 0 of `addr` `addr.0`;
/// JSON input names it `addr[0]`, as QEMU's QObject visitors do.
pub(super) struct Seq {
    iter: std::vec::IntoIter<Value>,
    index: usize,
    path: String,
    keyval: bool,
}

impl Seq {
    pub(super) fn new(items: Vec<Value>, path: String, keyval: bool) -> Self {
        Seq {
            iter: items.into_iter(),
            index: 0,
            path,
            keyval,
        }
    }
}

impl<'de> de::SeqAccess<'de> for Seq {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(value) = self.iter.next() else {
            return Ok(None);
        };
        let path = if self.keyval {
            join(&self.path, &self.index.to_string())
        } else {
            format!("{}[{}]", self.path, self.index)
        };
        self.index += 1;
        deserialize_child(seed, value, path, self.keyval).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// Members of an object.
pub(super) struct MapA {
    iter: serde_json::map::IntoIter,
    pending: Option<(String, Value)>,
    path: String,
    keyval: bool,
}

impl MapA {
    pub(super) fn new(map: Map<String, Value>, path: String, keyval: bool) -> Self {
        MapA {
            iter: map.into_iter(),
            pending: None,
            path,
            keyval,
        }
    }
}

impl<'de> de::MapAccess<'de> for MapA {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.iter.next() else {
            return Ok(None);
        };
        // An unknown field is reported against its full name.
        let k = seed
            .deserialize(key.clone().into_deserializer())
            .map_err(|e: DeError| e.resolve(&self.path, "string"))?;
        self.pending = Some((key, value));
        Ok(Some(k))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.pending.take() {
            Some((key, value)) => {
                deserialize_child(seed, value, join(&self.path, &key), self.keyval)
            }
            None => Err(de::Error::custom("value requested before key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// An externally tagged enum written as `{"variant": payload}`.
pub(super) struct Enum {
    variant: String,
    payload: Value,
    path: String,
    keyval: bool,
}

impl Enum {
    /// `map` has exactly one member (checked by the caller).
    pub(super) fn new(map: Map<String, Value>, path: String, keyval: bool) -> Self {
        let (variant, payload) = map.into_iter().next().unwrap_or_default();
        Enum {
            variant,
            payload,
            path,
            keyval,
        }
    }
}

impl<'de> de::EnumAccess<'de> for Enum {
    type Error = DeError;
    type Variant = Variant;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Variant), DeError> {
        let v = seed.deserialize(self.variant.clone().into_deserializer())?;
        let path = join(&self.path, &self.variant);
        Ok((
            v,
            Variant {
                payload: self.payload,
                path,
                keyval: self.keyval,
            },
        ))
    }
}

/// The payload of an externally tagged variant.
pub(super) struct Variant {
    payload: Value,
    path: String,
    keyval: bool,
}

impl<'de> de::VariantAccess<'de> for Variant {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.payload {
            Value::Null => Ok(()),
            _ => Err(de::Error::invalid_type(
                de::Unexpected::Map,
                &"unit variant",
            )),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        deserialize_child(seed, self.payload, self.path, self.keyval)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(
            super::ValueDe::new(self.payload, self.path, self.keyval),
            visitor,
        )
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_map(
            super::ValueDe::new(self.payload, self.path, self.keyval),
            visitor,
        )
    }
}
