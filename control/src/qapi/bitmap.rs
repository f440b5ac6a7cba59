//! Dirty-bitmap QAPI types: `block-dirty-bitmap-add` (`BlockDirtyBitmapAdd`),
//! the `BlockDirtyBitmap` of remove/clear/enable/disable,
//! `BlockDirtyBitmapMerge`, and `transaction` with its bitmap actions.
//!
//! Two members keep QEMU's odd wording, taken apart by hand:
//! `granularity` (visited as `uint64` with the member's path, then narrowed
//! to `uint32` with a message naming it bare) and the entries of `bitmaps`
//! (`BlockDirtyBitmapOrStr`, whose type error names `'null'`).

use serde::Deserialize;
use serde_json::Value;

use super::export::BitmapRef;
use super::input::{Input, InputError};

/// `BlockDirtyBitmapAdd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitmapAddArgs {
    pub node: String,
    pub name: String,
    pub granularity: Option<u32>,
    pub persistent: Option<bool>,
    pub disabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct AddRaw {
    node: String,
    name: String,
    granularity: Option<Value>,
    persistent: Option<bool>,
    disabled: Option<bool>,
}

impl BitmapAddArgs {
    /// Parses the arguments (or a transaction action's `data`).
    pub fn parse(input: Input) -> Result<BitmapAddArgs, InputError> {
        let path = input.path("granularity");
        let raw: AddRaw = input.parse()?;
        let granularity = match raw.granularity {
            None => None,
            Some(Value::Number(n)) => {
                // QEMU casts a negative integer to uint64, then finds it
                // out of uint32 range.
                let wide = n.as_u64().or_else(|| n.as_i64().map(|i| i as u64));
                match wide {
                    Some(w) => Some(u32::try_from(w).map_err(|_| {
                        InputError("Parameter 'granularity' expects uint32_t".into())
                    })?),
                    None => return Err(InputError(format!("Parameter '{path}' expects uint64"))),
                }
            }
            Some(_) => return Err(InputError(format!("Parameter '{path}' expects uint64"))),
        };
        Ok(BitmapAddArgs {
            node: raw.node,
            name: raw.name,
            granularity,
            persistent: raw.persistent,
            disabled: raw.disabled,
        })
    }
}

/// `BlockDirtyBitmap`: a bitmap by node and name.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BitmapArgs {
    pub node: String,
    pub name: String,
}

/// `BlockDirtyBitmapMerge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitmapMergeArgs {
    pub node: String,
    pub target: String,
    pub bitmaps: Vec<BitmapRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeRaw {
    node: String,
    target: String,
    bitmaps: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct External {
    node: String,
    name: String,
}

impl BitmapMergeArgs {
    /// Parses the arguments (or a transaction action's `data`).
    pub fn parse(input: Input) -> Result<BitmapMergeArgs, InputError> {
        let list_path = input.path("bitmaps");
        let outer = input.clone();
        let raw: MergeRaw = input.parse()?;
        let Value::Array(items) = raw.bitmaps else {
            return Err(InputError::invalid_type(&list_path, "array"));
        };
        let mut bitmaps = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            bitmaps.push(match item {
                Value::String(name) => BitmapRef { node: None, name },
                v @ Value::Object(_) => {
                    let e: External = outer.nested(&format!("bitmaps[{i}]"), v)?.parse()?;
                    BitmapRef {
                        node: Some(e.node),
                        name: e.name,
                    }
                }
                _ => return Err(InputError::invalid_type("null", "BlockDirtyBitmapOrStr")),
            });
        }
        Ok(BitmapMergeArgs {
            node: raw.node,
            target: raw.target,
            bitmaps,
        })
    }
}

/// One action of a `transaction` that ringstor can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BitmapAction {
    Add(BitmapAddArgs),
    Remove(BitmapArgs),
    Clear(BitmapArgs),
    Enable(BitmapArgs),
    Disable(BitmapArgs),
    Merge(BitmapMergeArgs),
    /// `abort`: fails the transaction.
    Abort,
}

impl BitmapAction {
    /// The QAPI name of the action.
    pub fn kind(&self) -> &'static str {
        match self {
            BitmapAction::Add(_) => "block-dirty-bitmap-add",
            BitmapAction::Remove(_) => "block-dirty-bitmap-remove",
            BitmapAction::Clear(_) => "block-dirty-bitmap-clear",
            BitmapAction::Enable(_) => "block-dirty-bitmap-enable",
            BitmapAction::Disable(_) => "block-dirty-bitmap-disable",
            BitmapAction::Merge(_) => "block-dirty-bitmap-merge",
            BitmapAction::Abort => "abort",
        }
    }

    /// Parses action `kind` from its `data`.
    pub fn parse(kind: &str, data: Input) -> Result<BitmapAction, InputError> {
        Ok(match kind {
            "block-dirty-bitmap-add" => BitmapAction::Add(BitmapAddArgs::parse(data)?),
            "block-dirty-bitmap-remove" => BitmapAction::Remove(data.parse()?),
            "block-dirty-bitmap-clear" => BitmapAction::Clear(data.parse()?),
            "block-dirty-bitmap-enable" => BitmapAction::Enable(data.parse()?),
            "block-dirty-bitmap-disable" => BitmapAction::Disable(data.parse()?),
            "block-dirty-bitmap-merge" => BitmapAction::Merge(BitmapMergeArgs::parse(data)?),
            "abort" => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Empty {}
                let Empty {} = data.parse()?;
                BitmapAction::Abort
            }
            "blockdev-backup"
            | "blockdev-snapshot"
            | "blockdev-snapshot-internal-sync"
            | "blockdev-snapshot-sync"
            | "drive-backup" => {
                return Err(InputError(format!(
                    "Transaction action '{kind}' is not supported by ringstor yet"
                )))
            }
            other => return Err(InputError::bad_value("type", other)),
        })
    }
}

/// `transaction` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionArgs {
    pub actions: Vec<BitmapAction>,
    /// `properties.completion-mode` is `grouped`.
    pub grouped: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Properties {
    completion_mode: Option<String>,
}

impl TransactionArgs {
    /// Parses `actions` (each `{"type": .., "data": {..}}`) and `properties`.
    pub fn parse(mut input: Input) -> Result<TransactionArgs, InputError> {
        let actions = input.take("actions");
        let properties = input.take("properties");
        if let Some(extra) = input.members.keys().next() {
            return Err(InputError::unexpected(&input.path(extra)));
        }
        let items = match actions {
            None => return Err(InputError::missing(&input.path("actions"))),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(InputError::invalid_type(&input.path("actions"), "array")),
        };
        let mut parsed = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let mut action = input.nested(&format!("actions[{i}]"), item)?;
            let kind = action.take_str("type")?;
            let data = match action.take("data") {
                Some(v) => action.nested("data", v)?,
                None => return Err(InputError::missing(&action.path("data"))),
            };
            if let Some(extra) = action.members.keys().next() {
                return Err(InputError::unexpected(&action.path(extra)));
            }
            parsed.push(BitmapAction::parse(&kind, data)?);
        }
        let grouped = match properties {
            None => false,
            Some(v) => {
                let p: Properties = input.nested("properties", v)?.parse()?;
                // QEMU names the enum member bare here.
                match p.completion_mode.as_deref() {
                    None | Some("individual") => false,
                    Some("grouped") => true,
                    Some(other) => return Err(InputError::bad_value("completion-mode", other)),
                }
            }
        };
        Ok(TransactionArgs {
            actions: parsed,
            grouped,
        })
    }
}
