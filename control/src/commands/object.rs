//! `object-add`, `object-del`, `query-iothreads`.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::no_args;
use crate::daemon::Daemon;
use crate::error::{ControlError, Result};
use crate::qapi::{from_args, Input, ObjectOptions, Syntax};

/// `object-add` / `--object`.
pub fn object_add(d: &mut Daemon, input: Input) -> Result<Value> {
    match ObjectOptions::parse(input)? {
        ObjectOptions::Iothread(o) if d.secrets.contains(&o.id) => return Err(duplicate(&o.id)),
        ObjectOptions::Iothread(o) => d.objects.add_iothread(o)?,
        ObjectOptions::Secret(o) if d.secrets.contains(&o.id) => return Err(duplicate(&o.id)),
        ObjectOptions::Secret(o) => {
            d.objects.check_new_id(&o.id)?;
            d.secrets.add(o)?
        }
        ObjectOptions::Metrics(o) if d.secrets.contains(&o.id) => return Err(duplicate(&o.id)),
        ObjectOptions::Metrics(o) => {
            d.objects.check_new_id(&o.id)?;
            let listener = crate::sockets::listen(d, &o.addr)?;
            let control = d.internal_sender();
            d.objects.add_metrics(o, listener, control)?
        }
    }
    Ok(Value::Null)
}

/// QEMU's message for an id already taken by another object.
fn duplicate(id: &str) -> ControlError {
    ControlError::failed(format!(
        "attempt to add duplicate property '{id}' to object (type 'container')"
    ))
}

pub(super) fn object_add_cmd(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    object_add(d, Input::new(args, Syntax::Json))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DelArgs {
    id: String,
}

/// `object-del`: an iothread that exports run on cannot go.
pub(super) fn object_del_cmd(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    let a: DelArgs = from_args(args)?;
    if d.secrets.del(&a.id) {
        // Nodes read their secret when opened, as in QEMU: it may go.
        return Ok(Value::Null);
    }
    if d.objects.contains(&a.id) && d.exports.uses_iothread(&a.id) {
        return Err(ControlError::failed(format!(
            "object '{}' is in use, can not be deleted",
            a.id
        )));
    }
    d.objects.del(&a.id)?;
    d.exports.forget_iothread(&a.id);
    Ok(Value::Null)
}

/// `query-iothreads` (QSD lacks it; QEMU's shape plus ringstor's `cpu`).
pub(super) fn query_iothreads(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    no_args(&args)?;
    Ok(d.objects.query())
}
