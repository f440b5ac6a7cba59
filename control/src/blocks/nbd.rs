//! `nbd` nodes (QEMU's NBD client block driver) in the graph: the server
//! address, `tls-creds` / `tls-hostname` resolved against the objects with
//! QEMU's errors, and the `json:{}` form.

use std::time::Duration;

use drivers::nbd::client::{connect, ClientOptions, ClientTls, ServerAddr};
use engine::block::NodeOptions;
use serde_json::{json, Value};

use super::Refs;
use crate::error::{ControlError, Result};
use crate::qapi::{NbdDriverOptions, SocketAddress, TlsEndpoint};

fn server(a: &SocketAddress) -> Result<ServerAddr> {
    match a {
        SocketAddress::Unix { path } => Ok(ServerAddr::Unix(path.into())),
        SocketAddress::Inet { host, port } => Ok(ServerAddr::Inet {
            host: host.clone(),
            port: port.clone(),
        }),
        SocketAddress::Fd { .. } => Err(ControlError::failed(
            "An fd server address is not supported by the nbd driver of ringstor yet",
        )),
    }
}

/// QEMU's `nbd_get_tls_creds` and the host name rule of
/// `nbd_process_options`: `tls-hostname`, else the inet host. Without
/// `tls-creds`, `tls-hostname` is ignored, as in QEMU.
fn tls(n: &NbdDriverOptions, refs: Refs<'_>) -> Result<Option<ClientTls>> {
    let Some(id) = &n.tls_creds else {
        return Ok(None);
    };
    let Some(creds) = refs.objects.tls_creds(id) else {
        return Err(ControlError::failed(if refs.objects.contains(id) {
            format!("Object with id '{id}' is not TLS credentials")
        } else {
            format!("No TLS credentials with id '{id}'")
        }));
    };
    if creds.endpoint != TlsEndpoint::Client {
        return Err(ControlError::failed(
            "Expected TLS credentials for a client endpoint",
        ));
    }
    let hostname = n.tls_hostname.clone().or_else(|| match &n.server {
        SocketAddress::Inet { host, .. } => Some(host.clone()),
        _ => None,
    });
    Ok(Some(ClientTls {
        config: creds.client_config().map_err(ControlError::Failed)?,
        hostname,
    }))
}

/// Connects (blocking, for `open-timeout`) and returns the engine options.
pub(super) fn node(
    n: &NbdDriverOptions,
    read_only: bool,
    auto_read_only: bool,
    refs: Refs<'_>,
) -> Result<NodeOptions> {
    let opts = ClientOptions {
        server: server(&n.server)?,
        export: n.export.clone().unwrap_or_default(),
        reconnect_delay: Duration::from_secs(n.reconnect_delay.into()),
        open_timeout: Duration::from_secs(n.open_timeout.into()),
        read_only,
        auto_read_only,
        tls: tls(n, refs)?,
        x_dirty_bitmap: n.x_dirty_bitmap.clone(),
    };
    connect(opts).map_err(|e| ControlError::failed(e.to_string()))
}

/// The options QEMU prints in an nbd node's `json:{...}` name.
pub(super) fn json(n: &NbdDriverOptions) -> Value {
    let server = match &n.server {
        SocketAddress::Unix { path } => json!({"type": "unix", "path": path}),
        SocketAddress::Inet { host, port } => json!({"type": "inet", "host": host, "port": port}),
        SocketAddress::Fd { name } => json!({"type": "fd", "str": name}),
    };
    let mut j = json!({"driver": "nbd", "server": server});
    if let Some(e) = &n.export {
        j["export"] = json!(e);
    }
    j
}
