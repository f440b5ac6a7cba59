//! `BlockExportOptionsVduseBlk`: `name` (`str`), `num-queues` and
//! `queue-size` (`uint16`), `logical-block-size` (`size`), `serial`
//! (`str`). Defaults and checks as QEMU's `vduse_blk_exp_create`:
//! one queue of 256 entries, 512-byte blocks, the export id as serial.

use serde::Deserialize;

use super::input::{Input, InputError, Syntax};
use super::vhost_user_blk::{json_unsigned, MAX_LOGICAL_BLOCK_SIZE, MIN_LOGICAL_BLOCK_SIZE};

/// QEMU's `VDUSE_DEFAULT_NUM_QUEUE`.
pub const DEFAULT_NUM_QUEUES: u16 = 1;
/// QEMU's `VDUSE_DEFAULT_QUEUE_SIZE`.
pub const DEFAULT_QUEUE_SIZE: u16 = 256;
/// QEMU's `VIRTQUEUE_MAX_SIZE`.
pub const MAX_QUEUE_SIZE: u16 = 1024;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Members {
    name: String,
    num_queues: Option<u64>,
    queue_size: Option<u64>,
    #[serde(default, deserialize_with = "crate::cli::coerce::deserialize_opt_size")]
    logical_block_size: Option<u64>,
    serial: Option<String>,
}

/// `BlockExportOptionsVduseBlk` as parsed; [`VduseBlkArgs::check`] does
/// QEMU's checks (after the common ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VduseBlkArgs {
    pub name: String,
    pub num_queues: Option<u16>,
    pub queue_size: Option<u16>,
    pub logical_block_size: Option<u64>,
    pub serial: Option<String>,
}

/// What [`VduseBlkArgs::check`] settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VduseBlkChecked {
    pub num_queues: u16,
    pub queue_size: u16,
    pub logical_block_size: u32,
}

fn uint16(input: &Input, name: &str, v: Option<u64>) -> Result<Option<u16>, InputError> {
    v.map(|n| {
        u16::try_from(n)
            .map_err(|_| InputError(format!("Parameter '{}' expects uint16_t", input.path(name))))
    })
    .transpose()
}

impl VduseBlkArgs {
    /// Parses the variant members left after the export base.
    pub fn parse(mut input: Input) -> Result<VduseBlkArgs, InputError> {
        if input.syntax == Syntax::Json {
            for name in ["logical-block-size", "num-queues", "queue-size"] {
                if let Some(v) = json_unsigned(&mut input, name)? {
                    input.members.insert(name.to_string(), v);
                }
            }
        }
        let m: Members = input.clone().parse()?;
        Ok(VduseBlkArgs {
            num_queues: uint16(&input, "num-queues", m.num_queues)?,
            queue_size: uint16(&input, "queue-size", m.queue_size)?,
            name: m.name,
            logical_block_size: m.logical_block_size,
            serial: m.serial,
        })
    }

    /// QEMU's order: queue count, queue size, block size.
    pub fn check(&self) -> Result<VduseBlkChecked, InputError> {
        let num_queues = self.num_queues.unwrap_or(DEFAULT_NUM_QUEUES);
        if num_queues == 0 {
            return Err(InputError("num-queues must be greater than 0".into()));
        }
        let queue_size = self.queue_size.unwrap_or(DEFAULT_QUEUE_SIZE);
        if queue_size <= 2 || !queue_size.is_power_of_two() || queue_size > MAX_QUEUE_SIZE {
            return Err(InputError("queue-size is invalid".into()));
        }
        let lbs = self.logical_block_size.unwrap_or(MIN_LOGICAL_BLOCK_SIZE);
        if !(MIN_LOGICAL_BLOCK_SIZE..=MAX_LOGICAL_BLOCK_SIZE).contains(&lbs)
            || !lbs.is_power_of_two()
        {
            return Err(InputError(format!(
                "parameter logical-block-size must be a power of 2 between {MIN_LOGICAL_BLOCK_SIZE} and {MAX_LOGICAL_BLOCK_SIZE}"
            )));
        }
        Ok(VduseBlkChecked {
            num_queues,
            queue_size,
            logical_block_size: lbs as u32,
        })
    }
}
