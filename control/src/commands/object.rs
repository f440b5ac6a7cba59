//! `object-add`, `object-del`, `query-iothreads`.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::no_args;
use crate::daemon::Daemon;
use crate::error::{ControlError, Result};
use crate::objects::duplicate;
use crate::qapi::{from_args, Input, ObjectOptions, Syntax};
use crate::tls::{check_psk, Authz, ListFile, RuleList};

/// `object-add` / `--object`.
pub fn object_add(d: &mut Daemon, input: Input) -> Result<Value> {
    match ObjectOptions::parse(input)? {
        ObjectOptions::Iothread(o) => d.objects.add_iothread(o)?,
        ObjectOptions::TlsCredsX509(o) => d.objects.add_tls_creds_x509(o)?,
        ObjectOptions::TlsCredsPsk(o) => {
            if d.objects.contains(&o.id) {
                return Err(duplicate(&o.id));
            }
            check_psk(&o).map_err(ControlError::Failed)?
        }
        ObjectOptions::AuthzSimple(o) => d.objects.add_authz(
            o.id,
            Authz::Simple {
                identity: o.identity,
            },
        )?,
        ObjectOptions::AuthzList(o) => d
            .objects
            .add_authz(o.id, Authz::List(RuleList::new(o.list)))?,
        ObjectOptions::AuthzListFile(o) => {
            if d.objects.contains(&o.id) {
                return Err(duplicate(&o.id));
            }
            let f = ListFile::open(&o.filename, o.refresh.unwrap_or(true))
                .map_err(ControlError::Failed)?;
            d.objects.add_authz(o.id, Authz::ListFile(f))?
        }
        ObjectOptions::Metrics(o) => {
            d.objects.check_new_id(&o.id)?;
            let listener = crate::sockets::listen(d, &o.addr)?;
            let control = d.internal_sender();
            d.objects.add_metrics(o, listener, control)?
        }
    }
    Ok(Value::Null)
}

pub(super) fn object_add_cmd(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    object_add(d, Input::new(args, Syntax::Json))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DelArgs {
    id: String,
}

/// `object-del`: an iothread that exports run on cannot go, nor the TLS
/// credentials of the running NBD server. An authorization object can:
/// the server looks its `tls-authz` up per client, so deleting and
/// re-adding one changes who may connect next.
pub(super) fn object_del_cmd(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    let a: DelArgs = from_args(args)?;
    let iothread_in_use = d.objects.is_iothread(&a.id) && d.exports.uses_iothread(&a.id);
    let creds_in_use = d.nbd.is_some() && d.nbd_tls_creds.as_deref() == Some(a.id.as_str());
    if iothread_in_use || creds_in_use {
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
