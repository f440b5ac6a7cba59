//! The vhost-user-blk part of `block-export-add`: QEMU's
//! `vu_blk_exp_create` checks, the address, then the driver.

use std::path::PathBuf;

use drivers::export::Export;
use drivers::vhost_user_blk::{self, VhostUserAddr, VhostUserBlkOptions};

use crate::error::{ControlError, Result};
use crate::qapi::{SocketAddress, VhostUserBlkArgs};
use crate::registry::Prepared;

/// ringstor's `num-queues` default: one queue per CPU the daemon may run
/// on (see `qapi::vhost_user_blk`).
pub fn default_num_queues() -> u16 {
    u16::try_from(engine::iothread::allowed_cpus().len().max(1)).unwrap_or(u16::MAX)
}

/// The listening address: one place, so `fd` addresses plug in here.
fn address(addr: &SocketAddress) -> Result<VhostUserAddr> {
    match addr {
        SocketAddress::Unix { path } => Ok(VhostUserAddr::Unix(PathBuf::from(path))),
        SocketAddress::Fd { .. } => Err(ControlError::failed(
            "fd socket addresses are not supported by ringstor yet",
        )),
        SocketAddress::Inet { .. } => Err(ControlError::failed(
            "Only socket address types 'unix' and 'fd' are supported",
        )),
    }
}

/// Builds the export from the common part decided by the registry.
pub(super) fn create(prepared: &Prepared, args: &VhostUserBlkArgs) -> Result<Box<dyn Export>> {
    let logical_block_size = args.check()?;
    let num_queues = args.num_queues.unwrap_or_else(default_num_queues);
    let addr = address(&args.addr)?;
    let export = vhost_user_blk::start(
        prepared.common.clone(),
        VhostUserBlkOptions {
            addr,
            logical_block_size,
            num_queues,
        },
    )?;
    Ok(export)
}
