//! `BlockdevOptionsQcow2`: QEMU's members of the `qcow2` driver.
//!
//! Accepted and ignored, as ringstor's driver has no such knob: the cache
//! sizes and `cache-clean-interval` (L2 tables stay loaded; refcounts are
//! written through), `overlap-check` (allocation never hands out a cluster
//! with a refcount), the `pass-discard-*` switches and `discard-no-unref`
//! (freed clusters are always given back to the file), `lazy-refcounts`
//! (refcounts are always exact). Refused: `encrypt` and `data-file`.

use serde::Deserialize;
use serde_json::Value;

use super::block::{take_ref, BlockdevRef};
use super::input::{Input, InputError};

/// The `backing` member of a COW format.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BackingChoice {
    /// Not given: open the backing file the image names.
    #[default]
    FromImage,
    /// `null` (or the deprecated `""`): no backing file at all.
    None,
    /// A node by name or a new inline node.
    Node(BlockdevRef),
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Qcow2Rest {
    lazy_refcounts: Option<bool>,
    pass_discard_request: Option<bool>,
    pass_discard_snapshot: Option<bool>,
    pass_discard_other: Option<bool>,
    discard_no_unref: Option<bool>,
    overlap_check: Option<Value>,
    cache_size: Option<u64>,
    l2_cache_size: Option<u64>,
    l2_cache_entry_size: Option<u64>,
    refcount_cache_size: Option<u64>,
    cache_clean_interval: Option<u64>,
}

/// `BlockdevOptionsQcow2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2DriverOptions {
    pub file: BlockdevRef,
    pub backing: BackingChoice,
}

/// Parses the members after `driver` and the base.
pub(super) fn parse(mut input: Input) -> Result<Qcow2DriverOptions, InputError> {
    let file =
        take_ref(&mut input, "file")?.ok_or_else(|| InputError::missing(&input.path("file")))?;
    let backing = match input.take("backing") {
        None => BackingChoice::FromImage,
        Some(Value::Null) => BackingChoice::None,
        Some(Value::String(s)) if s.is_empty() => BackingChoice::None,
        Some(v) => match v {
            Value::String(s) => BackingChoice::Node(BlockdevRef::Reference(s)),
            v @ Value::Object(_) => {
                let nested = input.nested("backing", v)?;
                BackingChoice::Node(BlockdevRef::Definition(Box::new(
                    super::BlockdevOptions::parse(nested)?,
                )))
            }
            _ => {
                return Err(InputError::invalid_type(
                    &input.path("backing"),
                    "BlockdevRefOrNull",
                ))
            }
        },
    };
    if input.take("encrypt").is_some() {
        return Err(InputError(
            "Encrypted qcow2 images are not supported by ringstor".into(),
        ));
    }
    if input.take("data-file").is_some() {
        return Err(InputError(
            "qcow2 images with an external data file are not supported by ringstor".into(),
        ));
    }
    let _rest: Qcow2Rest = input.parse()?;
    Ok(Qcow2DriverOptions { file, backing })
}
