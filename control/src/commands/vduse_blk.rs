//! The vduse-blk part of `block-export-add`: QEMU's `vduse_blk_exp_create`
//! checks, then the driver, which creates the device in the kernel (and
//! fails with "failed to create vduse device: ..." naming the missing
//! `/dev/vduse/control` where the kernel has no VDUSE).

use drivers::export::Export;
use drivers::vduse_blk::{self, VduseBlkOptions};

use crate::error::Result;
use crate::qapi::VduseBlkArgs;
use crate::registry::Prepared;

/// Builds the export from the common part decided by the registry.
pub(super) fn create(
    prepared: &Prepared,
    id: &str,
    args: &VduseBlkArgs,
) -> Result<Box<dyn Export>> {
    let checked = args.check()?;
    let export = vduse_blk::start(
        prepared.common.clone(),
        VduseBlkOptions {
            name: args.name.clone(),
            num_queues: checked.num_queues,
            queue_size: checked.queue_size,
            logical_block_size: checked.logical_block_size,
            serial: args.serial.clone().unwrap_or_else(|| id.to_string()),
        },
    )?;
    Ok(export)
}
