//! `nbd-server-start`, `nbd-server-stop`, and the deprecated
//! `nbd-server-add` / `nbd-server-remove`.

use std::time::Duration;

use drivers::export::RemoveMode;
use serde_json::{Map, Value};

use super::export::add_export;
use super::no_args;
use crate::daemon::{Daemon, HARD_DEL_WAIT};
use crate::error::{ControlError, Result};
use crate::nbd::{NbdServer, NbdServerConfig};
use crate::qapi::{
    from_args, BitmapRef, ExportBase, ExportKind, Input, NbdExportArgs, NbdServerAddOptions,
    NbdServerOptions, NbdServerRemoveArgs, RemoveModeArg, Syntax, TlsEndpoint,
};

const NOT_RUNNING: &str = "NBD server not running";

/// `--nbd-server` (flat `addr`) or `nbd-server-start` (`legacy`).
pub fn nbd_server_start(d: &mut Daemon, input: Input, legacy: bool) -> Result<Value> {
    let opts = if legacy {
        NbdServerOptions::parse_legacy(input)?
    } else {
        NbdServerOptions::parse(input)?
    };
    if d.nbd.is_some() {
        return Err(ControlError::failed("NBD server already running"));
    }
    let tls = match &opts.tls_creds {
        Some(id) => Some(tls_config(d, id, opts.tls_authz.as_deref())?),
        None => None,
    };
    let listener = crate::sockets::listen(d, &opts.addr)?;
    let server = NbdServer::start(
        NbdServerConfig {
            listener,
            max_connections: opts.max_connections,
            handshake_timeout: match opts.handshake_max_seconds {
                0 => None,
                n => Some(Duration::from_secs(u64::from(n))),
            },
            tls,
        },
        d.objects.default_handle().clone(),
    )?;
    d.nbd = Some(server);
    d.nbd_tls_creds = opts.tls_creds;
    Ok(Value::Null)
}

/// The server's TLS configuration from `tls-creds` (and `tls-authz`, whose
/// object is looked up per client, so it need not exist yet), with
/// QEMU's errors.
fn tls_config(
    d: &Daemon,
    creds_id: &str,
    authz: Option<&str>,
) -> Result<std::sync::Arc<rustls::ServerConfig>> {
    let Some(creds) = d.objects.tls_creds(creds_id) else {
        return Err(ControlError::failed(if d.objects.contains(creds_id) {
            format!("Object with id '{creds_id}' is not TLS credentials")
        } else {
            format!("No TLS credentials with id '{creds_id}'")
        }));
    };
    if creds.endpoint != TlsEndpoint::Server {
        return Err(ControlError::failed(
            "Expected TLS credentials for a server endpoint",
        ));
    }
    if let (Some(a), false) = (authz, creds.verify_peer) {
        log::warn!(
            "nbd: tls-authz '{a}' has no effect: '{creds_id}' has verify-peer=off, \
             so clients present no certificate"
        );
    }
    creds
        .server_config(authz.map(|a| (d.objects.authz_table(), a.to_string())))
        .map_err(ControlError::Failed)
}

pub(super) fn nbd_server_start_cmd(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    nbd_server_start(d, Input::new(args, Syntax::Json), true)
}

/// `nbd-server-stop`: hard-removes every NBD export (events first), then
/// closes the listener.
pub(super) fn nbd_server_stop(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    no_args(&args)?;
    if d.nbd.is_none() {
        return Err(ControlError::failed(NOT_RUNNING));
    }
    d.remove_exports(Some("nbd"));
    if let Some(server) = d.nbd.take() {
        server.stop();
    }
    Ok(Value::Null)
}

/// `nbd-server-add` (deprecated): an NBD export whose id is its name.
pub(super) fn nbd_server_add(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    let a: NbdServerAddOptions = from_args(args)?;
    if d.nbd.is_none() {
        return Err(ControlError::failed(NOT_RUNNING));
    }
    let name = a.name.unwrap_or_else(|| a.device.clone());
    let base = ExportBase {
        id: name.clone(),
        node_name: a.device,
        writable: a.writable,
        writethrough: None,
        iothread: None,
        fixed_iothread: None,
    };
    let nbd = NbdExportArgs {
        name: Some(name),
        description: a.description,
        bitmaps: a.bitmap.map(|b| {
            vec![BitmapRef {
                node: None,
                name: b,
            }]
        }),
        allocation_depth: None,
    };
    nbd.check()?;
    add_export(d, base, ExportKind::Nbd(nbd))
}

/// `nbd-server-remove` (deprecated): `block-export-del` for NBD exports.
pub(super) fn nbd_server_remove(d: &mut Daemon, args: Map<String, Value>) -> Result<Value> {
    let a: NbdServerRemoveArgs = from_args(args)?;
    if d.nbd.is_none() {
        return Err(ControlError::failed(NOT_RUNNING));
    }
    match d.exports.kind_of(&a.name) {
        None => {
            return Err(ControlError::failed(format!(
                "Export '{}' is not found",
                a.name
            )))
        }
        Some("nbd") => {}
        Some(_) => {
            return Err(ControlError::failed(format!(
                "Export '{}' is not an NBD export",
                a.name
            )))
        }
    }
    let mode = match a.mode {
        Some(RemoveModeArg::Hard) => RemoveMode::Hard,
        _ => RemoveMode::Safe,
    };
    d.exports.remove(&a.name, mode)?;
    if mode == RemoveMode::Hard {
        d.wait_drained(std::slice::from_ref(&a.name), HARD_DEL_WAIT);
    }
    Ok(Value::Null)
}
