//! `BlockdevOptions` (`blockdev-add`, `--blockdev`) for the drivers
//! ringstor has: `file`, `host_device`, `raw`, `null-co`, `null-aio`,
//! `rbd`, `nbd` (their options: `remote.rs`).
//!
//! The union is split by hand (serde's `flatten` defeats
//! `deny_unknown_fields`): the base members go into [`BlockdevBase`], the
//! rest into the driver's struct.
//!
//! `discard` (`ignore`, QEMU's default, or `unmap`) decides whether
//! discards reach the store, for every driver. Accepted and ignored, as
//! they change nothing for ringstor: `aio` (always
//! io_uring), `aio-max-batch`, `auto-read-only`, `detect-zeroes`
//! (reported back by `query-named-block-nodes`), `force-share`,
//! `latency-ns`.

use serde::Deserialize;
use serde_json::Value;

use super::input::{Input, InputError};
use super::remote::{NbdDriverOptions, RbdDriverOptions};

/// Drivers known to ringstor.
const DRIVERS: &[&str] = &[
    "file",
    "host_device",
    "raw",
    "null-co",
    "null-aio",
    "qcow2",
    "rbd",
    "nbd",
];

/// Drivers QEMU has that ringstor does not (so the error says so).
const QEMU_DRIVERS: &[&str] = &[
    "blkdebug",
    "blklogwrites",
    "blkverify",
    "bochs",
    "cloop",
    "compress",
    "copy-before-write",
    "copy-on-read",
    "dmg",
    "ftp",
    "ftps",
    "gluster",
    "host_cdrom",
    "http",
    "https",
    "io_uring",
    "iscsi",
    "luks",
    "nfs",
    "nvme",
    "parallels",
    "preallocate",
    "qcow",
    "qed",
    "quorum",
    "replication",
    "snapshot-access",
    "ssh",
    "throttle",
    "vdi",
    "vhdx",
    "virtio-blk-vfio-pci",
    "virtio-blk-vhost-user",
    "virtio-blk-vhost-vdpa",
    "vmdk",
    "vpc",
    "vvfat",
];

/// `BlockdevCacheOptions`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CacheOptions {
    pub direct: Option<bool>,
    pub no_flush: Option<bool>,
}

/// `BlockdevDetectZeroesOptions`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DetectZeroes {
    #[default]
    Off,
    On,
    Unmap,
}

impl DetectZeroes {
    /// The QAPI name.
    pub fn as_str(self) -> &'static str {
        match self {
            DetectZeroes::Off => "off",
            DetectZeroes::On => "on",
            DetectZeroes::Unmap => "unmap",
        }
    }
}

/// `BlockdevDiscardOptions`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Discard {
    Ignore,
    Unmap,
}

/// Members every driver has (`cache` is parsed on its own so errors say
/// `cache.direct`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BlockdevBase {
    pub node_name: Option<String>,
    pub read_only: Option<bool>,
    pub auto_read_only: Option<bool>,
    pub discard: Option<Discard>,
    pub detect_zeroes: Option<DetectZeroes>,
    pub force_share: Option<bool>,
}

const BASE_MEMBERS: &[&str] = &[
    "node-name",
    "read-only",
    "auto-read-only",
    "discard",
    "detect-zeroes",
    "force-share",
    "cache",
];

/// `BlockdevAioOptions`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Aio {
    Threads,
    Native,
    IoUring,
}

/// `BlockdevOnOffAuto` for `locking`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnOffAuto {
    Auto,
    On,
    Off,
}

/// `BlockdevOptionsFile` (also `host_device`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileDriverOptions {
    pub filename: String,
    pub aio: Option<Aio>,
    pub aio_max_batch: Option<i64>,
    pub locking: Option<OnOffAuto>,
    pub drop_cache: Option<bool>,
    #[serde(rename = "x-check-cache-dropped")]
    pub x_check_cache_dropped: Option<bool>,
}

/// `BlockdevOptionsNull`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NullDriverOptions {
    pub size: Option<u64>,
    pub latency_ns: Option<u64>,
    pub read_zeroes: Option<bool>,
}

/// A child reference: the name of an existing node, or a new node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockdevRef {
    Reference(String),
    Definition(Box<BlockdevOptions>),
}

/// `BlockdevOptionsRaw` (`file` is parsed separately as a `BlockdevRef`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawRest {
    offset: Option<u64>,
    size: Option<u64>,
}

/// `BlockdevOptionsRaw`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDriverOptions {
    pub file: BlockdevRef,
    pub offset: Option<u64>,
    pub size: Option<u64>,
}

/// Driver-specific members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverOptions {
    File(FileDriverOptions),
    HostDevice(FileDriverOptions),
    Raw(RawDriverOptions),
    Null(NullDriverOptions),
    Qcow2(super::qcow2::Qcow2DriverOptions),
    Rbd(RbdDriverOptions),
    Nbd(NbdDriverOptions),
}

/// `BlockdevOptions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockdevOptions {
    /// QEMU's driver name.
    pub driver: &'static str,
    pub base: BlockdevBase,
    /// `cache` parsed.
    pub cache: CacheOptions,
    pub options: DriverOptions,
}

impl BlockdevOptions {
    /// Parses a `BlockdevOptions` object.
    pub fn parse(mut input: Input) -> Result<BlockdevOptions, InputError> {
        let driver_name = input.take_str("driver")?;
        let Some(driver) = DRIVERS.iter().copied().find(|d| *d == driver_name) else {
            if QEMU_DRIVERS.contains(&driver_name.as_str()) {
                return Err(InputError(format!(
                    "Block driver '{driver_name}' is not supported by ringstor yet"
                )));
            }
            return Err(InputError::bad_value(&input.path("driver"), &driver_name));
        };
        let mut base_input = input.split(BASE_MEMBERS);
        let cache_value = base_input.take("cache");
        let base: BlockdevBase = base_input.clone().parse()?;
        let cache = match cache_value {
            Some(v) => base_input.nested("cache", v)?.parse()?,
            None => CacheOptions::default(),
        };
        let options = match driver {
            "file" => DriverOptions::File(input.parse()?),
            "host_device" => DriverOptions::HostDevice(input.parse()?),
            "null-co" | "null-aio" => DriverOptions::Null(input.parse()?),
            "qcow2" => DriverOptions::Qcow2(super::qcow2::parse(input)?),
            "rbd" => DriverOptions::Rbd(input.parse()?),
            "nbd" => DriverOptions::Nbd(NbdDriverOptions::parse(input)?),
            _ => {
                let Some(file) = take_ref(&mut input, "file")? else {
                    return Err(InputError::missing(&input.path("file")));
                };
                let rest: RawRest = input.parse()?;
                DriverOptions::Raw(RawDriverOptions {
                    file,
                    offset: rest.offset,
                    size: rest.size,
                })
            }
        };
        Ok(BlockdevOptions {
            driver,
            base,
            cache,
            options,
        })
    }
}

/// Takes member `name` as a `BlockdevRef` (a node name or an inline node).
pub(super) fn take_ref(input: &mut Input, name: &str) -> Result<Option<BlockdevRef>, InputError> {
    Ok(Some(match input.take(name) {
        None => return Ok(None),
        Some(Value::String(s)) => BlockdevRef::Reference(s),
        Some(v @ Value::Object(_)) => {
            let nested = input.nested(name, v)?;
            BlockdevRef::Definition(Box::new(BlockdevOptions::parse(nested)?))
        }
        Some(_) => return Err(InputError::invalid_type(&input.path(name), "BlockdevRef")),
    }))
}
