//! The vhost-user-blk part of `block-export-add`: QEMU's
//! `vu_blk_exp_create` checks, the address, then the driver.

use drivers::export::Export;
use drivers::vhost_user_blk::{self, VhostUserAddr, VhostUserBlkOptions};

use crate::daemon::Daemon;
use crate::error::{ControlError, Result};
use crate::qapi::{SocketAddress, VhostUserBlkArgs};
use crate::registry::Prepared;

/// ringstor's `num-queues` default: one queue per CPU the daemon may run
/// on (see `qapi::vhost_user_blk`).
pub fn default_num_queues() -> u16 {
    u16::try_from(engine::iothread::allowed_cpus().len().max(1)).unwrap_or(u16::MAX)
}

/// Builds the export from the common part decided by the registry. The
/// address goes through the daemon's shared listener (`sockets::listen`),
/// so `unix` and `fd` addresses work as for every other server; `inet` is
/// refused first, with QSD's words.
pub(super) fn create(
    d: &Daemon,
    prepared: &Prepared,
    args: &VhostUserBlkArgs,
) -> Result<Box<dyn Export>> {
    let logical_block_size = args.check()?;
    let num_queues = args.num_queues.unwrap_or_else(default_num_queues);
    if let SocketAddress::Inet { .. } = args.addr {
        return Err(ControlError::failed(
            "Only socket address types 'unix' and 'fd' are supported",
        ));
    }
    let addr = VhostUserAddr::from_listener(crate::sockets::listen(d, &args.addr)?)?;
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
