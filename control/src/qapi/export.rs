//! `BlockExportOptions` (`block-export-add`, `--export`) and the removal
//! arguments.
//!
//! `iothread` is a string in QAPI; ringstor also takes a list of strings
//! (spread the export over several iothreads).

use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::Value;

use super::input::{Input, InputError};
use super::vduse_blk::VduseBlkArgs;
use super::vhost_user_blk::VhostUserBlkArgs;

/// Longest NBD export name or description (QEMU's `NBD_MAX_STRING_SIZE`).
pub const NBD_MAX_STRING_SIZE: usize = 4096;

/// `BlockExportRemoveMode`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RemoveModeArg {
    Safe,
    Hard,
}

/// `iothread`: one name (QAPI) or several (ringstor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IothreadSpec(pub Vec<String>);

impl<'de> Deserialize<'de> for IothreadSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `iothread` is always a top-level member, so the message can
        // name it; QEMU calls the type `string` (our list is an extension).
        let wrong = || de::Error::custom("Invalid parameter type for 'iothread', expected: string");
        match Value::deserialize(d)? {
            Value::String(s) => Ok(IothreadSpec(vec![s])),
            Value::Array(items) if !items.is_empty() => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(wrong()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(IothreadSpec),
            _ => Err(wrong()),
        }
    }
}

/// The base of `BlockExportOptions`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ExportBase {
    pub id: String,
    pub node_name: String,
    pub writable: Option<bool>,
    pub writethrough: Option<bool>,
    pub iothread: Option<IothreadSpec>,
    pub fixed_iothread: Option<bool>,
}

const BASE_MEMBERS: &[&str] = &[
    "id",
    "node-name",
    "writable",
    "writethrough",
    "iothread",
    "fixed-iothread",
];

/// `BlockDirtyBitmapOrStr`: a bitmap name, or `{node, name}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitmapRef {
    pub node: Option<String>,
    pub name: String,
}

impl<'de> Deserialize<'de> for BitmapRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            node: String,
            name: String,
        }
        match Value::deserialize(d)? {
            Value::String(name) => Ok(BitmapRef { node: None, name }),
            v @ Value::Object(_) => {
                let f: Full = serde_json::from_value(v).map_err(de::Error::custom)?;
                Ok(BitmapRef {
                    node: Some(f.node),
                    name: f.name,
                })
            }
            _ => Err(de::Error::invalid_type(
                de::Unexpected::Other("value"),
                &"a string",
            )),
        }
    }
}

/// `BlockExportOptionsNbd`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NbdExportArgs {
    pub name: Option<String>,
    pub description: Option<String>,
    pub bitmaps: Option<Vec<BitmapRef>>,
    pub allocation_depth: Option<bool>,
}

impl NbdExportArgs {
    /// QEMU's length checks on `name` and `description`.
    pub fn check(&self) -> Result<(), InputError> {
        if let Some(n) = &self.name {
            if n.len() > NBD_MAX_STRING_SIZE {
                return Err(InputError(format!("export name '{n}' too long")));
            }
        }
        if let Some(d) = &self.description {
            if d.len() > NBD_MAX_STRING_SIZE {
                return Err(InputError(format!("description '{d}' too long")));
            }
        }
        Ok(())
    }
}

/// `FuseExportAllowOther`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FuseAllowOtherArg {
    Off,
    On,
    Auto,
}

/// `BlockExportOptionsFuse`, plus `io-uring` (QEMU's proposed name; the
/// default, on where the kernel offers FUSE over io_uring, is ringstor's).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FuseExportArgs {
    pub mountpoint: String,
    pub growable: Option<bool>,
    pub allow_other: Option<FuseAllowOtherArg>,
    pub io_uring: Option<bool>,
}

/// Driver-specific members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportKind {
    Nbd(NbdExportArgs),
    Fuse(FuseExportArgs),
    VhostUserBlk(VhostUserBlkArgs),
    VduseBlk(VduseBlkArgs),
}

/// `BlockExportOptions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockExportOptions {
    pub base: ExportBase,
    pub kind: ExportKind,
}

impl BlockExportOptions {
    /// Parses the union.
    pub fn parse(mut input: Input) -> Result<BlockExportOptions, InputError> {
        let kind = input.take_str("type")?;
        let base_input = input.split(BASE_MEMBERS);
        let base: ExportBase = base_input.parse()?;
        let kind = match kind.as_str() {
            "nbd" => {
                let nbd: NbdExportArgs = input.parse()?;
                nbd.check()?;
                ExportKind::Nbd(nbd)
            }
            "fuse" => ExportKind::Fuse(input.parse()?),
            "vhost-user-blk" => ExportKind::VhostUserBlk(VhostUserBlkArgs::parse(input)?),
            "vduse-blk" => ExportKind::VduseBlk(VduseBlkArgs::parse(input)?),
            other => return Err(InputError::bad_value("type", other)),
        };
        Ok(BlockExportOptions { base, kind })
    }
}

/// `block-export-del` arguments.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BlockExportDelArgs {
    pub id: String,
    pub mode: Option<RemoveModeArg>,
}
