//! `BlockExportOptionsVhostUserBlk`: `addr` (a flat `SocketAddress`),
//! `logical-block-size` (`size`), `num-queues` (`uint16`).
//!
//! `num-queues` defaults to the number of CPUs the daemon may run on (QSD's
//! default is 1): a multi-vCPU QEMU guest whose `vhost-user-blk-pci` keeps
//! its default of one queue per vCPU then starts, where QSD makes QEMU
//! fail with "The maximum number of queues supported by the backend is 1".
//! A ringstor extension, documented in the README.

use serde::Deserialize;
use serde_json::Value;

use super::input::{Input, InputError, Syntax};
use super::nbd::SocketAddress;

/// QEMU's `VIRTIO_BLK_SECTOR_SIZE`: the default and smallest block size.
pub const MIN_LOGICAL_BLOCK_SIZE: u64 = 512;
/// QEMU's `MAX_BLOCK_SIZE` (2 MiB) for `check_block_size`.
pub const MAX_LOGICAL_BLOCK_SIZE: u64 = 2 << 20;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Rest {
    #[serde(default, deserialize_with = "crate::cli::coerce::deserialize_opt_size")]
    logical_block_size: Option<u64>,
    num_queues: Option<u64>,
}

/// QEMU's JSON input visitor for unsigned members: any integer (a negative
/// one wraps, "for backward compatibility"), else `expects uint64`.
pub(super) fn json_unsigned(input: &mut Input, name: &str) -> Result<Option<Value>, InputError> {
    let Some(v) = input.take(name) else {
        return Ok(None);
    };
    let n = match &v {
        Value::Number(n) => n.as_u64().or_else(|| n.as_i64().map(|i| i as u64)),
        _ => None,
    };
    match n {
        Some(n) => Ok(Some(Value::from(n))),
        None => Err(InputError(format!(
            "Parameter '{}' expects uint64",
            input.path(name)
        ))),
    }
}

/// `BlockExportOptionsVhostUserBlk` as parsed; [`VhostUserBlkArgs::check`]
/// does QEMU's `vu_blk_exp_create` checks (after the common ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostUserBlkArgs {
    pub addr: SocketAddress,
    pub logical_block_size: Option<u64>,
    /// `None`: ringstor's default (see the module docs).
    pub num_queues: Option<u16>,
}

impl VhostUserBlkArgs {
    /// Parses the variant members left after the export base.
    pub fn parse(mut input: Input) -> Result<VhostUserBlkArgs, InputError> {
        let addr_value = input.take("addr");
        if input.syntax == Syntax::Json {
            for name in ["logical-block-size", "num-queues"] {
                if let Some(v) = json_unsigned(&mut input, name)? {
                    input.members.insert(name.to_string(), v);
                }
            }
        }
        let rest: Rest = input.clone().parse()?;
        let addr = match addr_value {
            Some(v) => SocketAddress::parse(input.nested("addr", v)?)?,
            None => return Err(InputError::missing(&input.path("addr"))),
        };
        let num_queues = match rest.num_queues {
            None => None,
            Some(n) => Some(u16::try_from(n).map_err(|_| {
                InputError(format!(
                    "Parameter '{}' expects uint16_t",
                    input.path("num-queues")
                ))
            })?),
        };
        Ok(VhostUserBlkArgs {
            addr,
            logical_block_size: rest.logical_block_size,
            num_queues,
        })
    }

    /// The logical block size, in QEMU's order of checks: block size, then
    /// queue count.
    pub fn check(&self) -> Result<u32, InputError> {
        let lbs = self.logical_block_size.unwrap_or(MIN_LOGICAL_BLOCK_SIZE);
        if !(MIN_LOGICAL_BLOCK_SIZE..=MAX_LOGICAL_BLOCK_SIZE).contains(&lbs)
            || !lbs.is_power_of_two()
        {
            return Err(InputError(format!(
                "parameter logical-block-size must be a power of 2 between {MIN_LOGICAL_BLOCK_SIZE} and {MAX_LOGICAL_BLOCK_SIZE}"
            )));
        }
        if self.num_queues == Some(0) {
            return Err(InputError("num-queues must be greater than 0".into()));
        }
        Ok(lbs as u32)
    }
}
