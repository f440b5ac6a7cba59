//! The NBD client block driver (`blockdev-add driver=nbd`): a block node
//! whose data lives in another NBD server, as QEMU's `block/nbd.c`.
//!
//! It lives beside the NBD server because it speaks the same protocol
//! through the same sans-I/O codec (`proto/`, whose `client` and
//! `client_handshake` files hold the client's direction); the engine's
//! block layer, which parses no peer input, sees it only through
//! [`engine::block::remote`].
//!
//! ```text
//!  control thread: connect() ── blocking probe (handshake, size) ─┐
//!  iothread A: open_local() ── Conn (first: the probe's socket) ──┤ one
//!  iothread B: open_local() ── Conn (own socket, own ring) ───────┘ server
//! ```
//!
//! - `dial`: connecting and the handshake, blocking and in the ring.
//! - `tls`: `tls-creds` (the upgrade at `blockdev-add`, QEMU's errors);
//!   `io`: a connection's byte stream, plaintext or TLS (the record
//!   layer is the server's, `nbd/tls.rs`).
//! - `conn`: one iothread's connection: queued requests, the writer,
//!   loss and reconnection within `reconnect-delay`.
//! - `reader`: replies in, routed by cookie to the waiting request.
//! - `leaf`: block operations as NBD commands.
//!
//! An iothread's connection lives as long as the node, not as long as
//! the export's clients: it is kept per thread (`leaf.rs`) and closed once
//! the node is deleted, like the connection of QEMU's nbd node.
//!
//! # Reconnection
//!
//! When the connection drops, requests in flight and new ones wait while
//! a task reconnects; requests still waiting `reconnect-delay` seconds
//! after the loss fail with EIO (at once when the delay is 0), and so do
//! new ones until a reconnection succeeds. Nothing hangs: attempts are
//! bounded by timeouts, and the exporting side just sees EIO replies.

mod conn;
mod dial;
mod io;
mod leaf;
mod reader;
mod tls;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use engine::block::remote::{RemoteDriver, RemoteLeaf};
use engine::block::{NodeOptions, RemoteOptions};

use super::proto::consts::NBD_FLAG_READ_ONLY;
use super::proto::ServerInfo;

pub use dial::DialError;
pub use tls::ClientTls;

/// Where the server is (`server` of `BlockdevOptionsNbd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    Unix(PathBuf),
    Inet { host: String, port: String },
}

/// The driver's options.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub server: ServerAddr,
    /// Export name (`""`: the default export).
    pub export: String,
    /// How long requests wait for a lost connection to come back.
    pub reconnect_delay: Duration,
    /// How long the first connection is retried (0: one attempt).
    pub open_timeout: Duration,
    /// Open read-only even if the export is writable.
    pub read_only: bool,
    /// `auto-read-only`: a read-only export makes a read-only node instead
    /// of an error.
    pub auto_read_only: bool,
    /// `tls-creds`: every connection upgrades to TLS first.
    pub tls: Option<ClientTls>,
    /// `x-dirty-bitmap`: this meta context's extents stand in for
    /// `base:allocation` in block status (QEMU's debugging aid, used to
    /// read a dirty bitmap through `qemu-img map`).
    pub x_dirty_bitmap: Option<String>,
}

/// What every iothread's connection shares: options, resolved addresses,
/// what the first handshake learned, and that handshake's socket for the
/// first iothread to take.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) opts: ClientOptions,
    pub(crate) addrs: Vec<dial::Addr>,
    pub(crate) info: ServerInfo,
    spare: Mutex<Option<(OwnedFd, Option<tls::Spare>)>>,
    /// Dead once the node is gone: each iothread then closes its connection.
    pub(crate) alive: Weak<()>,
    /// The server and export, for log lines.
    pub(crate) label: String,
}

/// The node's driver: hands each iothread its own connection.
#[derive(Debug)]
pub struct NbdClient {
    shared: Arc<Shared>,
    _alive: Arc<()>,
}

/// Connects (retrying for `open-timeout`), negotiates, and returns the
/// node options for the engine. Blocking: runs during `blockdev-add`.
pub fn connect(opts: ClientOptions) -> Result<NodeOptions, DialError> {
    let addrs = dial::resolve(&opts.server)?;
    let (fd, info, session) = dial::dial_blocking(&addrs, &opts)?;
    let remote_ro = info.transmission_flags & NBD_FLAG_READ_ONLY != 0;
    if remote_ro && !opts.read_only && !opts.auto_read_only {
        return Err(DialError::ReadOnly);
    }
    let read_only = opts.read_only || remote_ro;
    let size = info.size;
    let alive = Arc::new(());
    let label = filename(&opts);
    let shared = Arc::new(Shared {
        label,
        opts,
        addrs,
        info,
        spare: Mutex::new(Some((fd, session))),
        alive: Arc::downgrade(&alive),
    });
    Ok(NodeOptions::Remote(RemoteOptions {
        driver: Arc::new(NbdClient {
            shared,
            _alive: alive,
        }),
        size,
        read_only,
    }))
}

impl Shared {
    /// The probe's socket (and TLS session), once.
    pub(crate) fn take_spare(&self) -> Option<(OwnedFd, Option<tls::Spare>)> {
        self.spare.lock().ok().and_then(|mut s| s.take())
    }
}

impl RemoteDriver for NbdClient {
    fn open_local(&self) -> std::rc::Rc<dyn RemoteLeaf> {
        leaf::NbdLeaf::open(self.shared.clone())
    }

    fn filename(&self) -> String {
        filename(&self.shared.opts)
    }
}

/// QEMU's file name of an nbd node.
fn filename(o: &ClientOptions) -> String {
    let export = &o.export;
    match &o.server {
        ServerAddr::Unix(p) => format!("nbd+unix:///{export}?socket={}", p.display()),
        ServerAddr::Inet { host, port } => format!("nbd://{host}:{port}/{export}"),
    }
}
