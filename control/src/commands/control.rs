//! `query-version`, `query-commands`, `quit`.

use serde_json::{json, Map, Value};

use super::no_args;
use crate::daemon::Daemon;
use crate::error::Result;

/// `query-version`: QEMU's version ringstor is compatible with, and
/// `ringstor X` as the package.
pub fn query_version(_: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    no_args(&args)?;
    Ok(crate::qmp::version_info())
}

/// `query-commands`: `[{"name": ..}, ..]`.
pub fn query_commands(_: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    no_args(&args)?;
    Ok(Value::Array(
        super::names().map(|n| json!({ "name": n })).collect(),
    ))
}

/// `quit`: the control loop drains the exports, replies and exits.
pub fn quit(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    no_args(&args)?;
    d.quit = true;
    Ok(Value::Null)
}
