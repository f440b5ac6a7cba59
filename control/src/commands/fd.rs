//! `getfd` and `closefd`, as in QEMU (qemu-storage-daemon lacks them):
//! a client passes a descriptor with `SCM_RIGHTS` on a unix monitor
//! connection, `getfd` stores it under a name on that monitor, and an `fd`
//! socket address (`nbd-server-start`) can then name it.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::daemon::Daemon;
use crate::error::{ControlError, Result};
use crate::qapi::{from_args, InputError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FdName {
    fdname: String,
}

/// `getfd`: stores the descriptor that came with the command.
pub(super) fn getfd(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    let a: FdName = from_args(args)?;
    let Some((monitor, fd)) = d.take_request_fd() else {
        return Err(ControlError::failed(
            "No file descriptor supplied via SCM_RIGHTS",
        ));
    };
    // Only now, as QEMU's `monitor_add_fd` (the descriptor is closed).
    if a.fdname.starts_with(|c: char| c.is_ascii_digit()) {
        drop(fd);
        return Err(ControlError::Input(InputError(
            "Parameter 'fdname' expects a name not starting with a digit".into(),
        )));
    }
    monitor.insert(a.fdname, fd);
    Ok(Value::Null)
}

/// `closefd`: closes a descriptor `getfd` stored.
pub(super) fn closefd(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    let a: FdName = from_args(args)?;
    match d.request_monitor().and_then(|m| m.take(&a.fdname)) {
        Some(fd) => {
            drop(fd);
            Ok(Value::Null)
        }
        None => Err(ControlError::failed(format!(
            "File descriptor named '{}' not found",
            a.fdname
        ))),
    }
}
