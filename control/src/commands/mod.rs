//! QMP commands, one file per family, and the dispatch table.
//!
//! Each handler takes the daemon and the command's arguments and returns
//! the value of `"return"` (`Value::Null` prints as `{}`). The command
//! line reuses the same handlers with keyval input.

mod bitmap;
mod block;
mod control;
mod export;
mod fd;
mod nbd;
mod object;
mod stats;
mod vduse_blk;
mod vhost_user_blk;

pub use block::blockdev_add;
pub use export::block_export_add;
pub use nbd::nbd_server_start;
pub use object::object_add;

use serde_json::{Map, Value};

use crate::daemon::Daemon;
use crate::error::{ControlError, Result};
use crate::qapi::InputError;
use crate::qmp::QmpError;

type Handler = fn(&mut Daemon, Map<String, Value>) -> Result<Value>;

/// Every command ringstor implements, in `query-commands` order.
/// `qmp_capabilities` is handled by the monitor but listed too.
const COMMANDS: &[(&str, Handler)] = &[
    ("object-del", object::object_del_cmd),
    ("object-add", object::object_add_cmd),
    ("query-iothreads", object::query_iothreads),
    ("quit", control::quit),
    ("query-commands", control::query_commands),
    ("query-version", control::query_version),
    ("transaction", bitmap::transaction),
    ("query-block-exports", export::query_block_exports),
    ("block-export-del", export::block_export_del),
    ("block-export-add", export::block_export_add_cmd),
    ("nbd-server-stop", nbd::nbd_server_stop),
    ("nbd-server-remove", nbd::nbd_server_remove),
    ("nbd-server-add", nbd::nbd_server_add),
    ("nbd-server-start", nbd::nbd_server_start_cmd),
    ("blockdev-del", block::blockdev_del),
    ("blockdev-add", block::blockdev_add_cmd),
    ("block-dirty-bitmap-merge", bitmap::merge),
    ("block-dirty-bitmap-disable", bitmap::disable),
    ("block-dirty-bitmap-enable", bitmap::enable),
    ("block-dirty-bitmap-clear", bitmap::clear),
    ("block-dirty-bitmap-remove", bitmap::remove),
    ("block-dirty-bitmap-add", bitmap::add),
    ("query-named-block-nodes", block::query_named_block_nodes),
    ("getfd", fd::getfd),
    ("closefd", fd::closefd),
    ("query-blockstats", stats::query_blockstats),
    ("x-query-export-stats", stats::x_query_export_stats),
];

/// Runs command `name`.
pub fn dispatch(
    d: &mut Daemon,
    name: &str,
    args: Map<String, Value>,
) -> std::result::Result<Value, QmpError> {
    match COMMANDS.iter().find(|(n, _)| *n == name) {
        Some((_, handler)) => handler(d, args).map_err(QmpError::from),
        None => Err(QmpError::unknown_command(name)),
    }
}

/// Whether a command of that name exists (`qmp_capabilities` included).
pub(crate) fn exists(name: &str) -> bool {
    names().any(|n| n == name)
}

/// The names for `query-commands`.
pub(crate) fn names() -> impl Iterator<Item = &'static str> {
    COMMANDS
        .iter()
        .map(|(n, _)| *n)
        .chain(std::iter::once("qmp_capabilities"))
}

/// For commands without arguments: any member is unexpected.
pub(crate) fn no_args(args: &Map<String, Value>) -> Result<()> {
    match args.keys().next() {
        Some(k) => Err(ControlError::Input(InputError::unexpected(k))),
        None => Ok(()),
    }
}
