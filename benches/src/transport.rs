//! A *transport* is how a server exports a backend and how fio drives that
//! export: given a server and a backend it yields the server's command line,
//! the path that shows the server is ready, and fio's client options.
//!
//! NBD over a unix socket is the first implementation ([`crate::nbd::Nbd`]),
//! NBD over TCP loopback in plaintext and with TLS the second
//! ([`crate::tcp::NbdTcp`]); vhost-user-blk (fio `libblkio`) and FUSE (fio
//! `io_uring` on the mounted file) are meant to slot in as further
//! implementations of [`Transport`].

use crate::jobs::{CacheMode, TransportKind};
use crate::servers::ServerKind;
use std::path::{Path, PathBuf};

/// The storage behind an export, the same for every server in a scenario.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The shared preallocated image file.
    File {
        /// Path of the image.
        path: PathBuf,
        /// Page cache or O_DIRECT.
        cache: CacheMode,
    },
    /// A qcow2 image (page cache) over a `file` node.
    Qcow2 {
        /// Path of the image.
        path: PathBuf,
    },
    /// A device that reads zeroes and drops writes.
    Null {
        /// Advertised size in bytes.
        size: u64,
    },
}

/// How to start one server's export and how fio reaches it.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Server arguments (after the binary).
    pub args: Vec<String>,
    /// Unix socket whose accepting a connection means "ready".
    pub ready_socket: PathBuf,
    /// Or a TCP port on 127.0.0.1 (then `ready_socket` is unused).
    pub ready_tcp: Option<u16>,
    /// fio options that select the engine and target (`--ioengine=...`).
    pub fio_args: Vec<String>,
    /// Command fio runs under (e.g. another user and `HOME`), if any.
    pub fio_prefix: Vec<String>,
    /// Environment of the server process, besides the harness's own.
    pub env: Vec<(String, String)>,
}

/// One way of exporting a backend and driving it with fio.
pub trait Transport {
    /// Short name for reports (`nbd`).
    fn id(&self) -> &'static str;

    /// The launch of `server` exporting `backend`, with sockets in `dir`;
    /// `None` when that server cannot serve that backend over this transport.
    fn launch(&self, server: ServerKind, backend: &Backend, dir: &Path) -> Option<LaunchSpec>;

    /// The client run instead of fio (it takes fio's options and writes
    /// fio's JSON); `None` runs fio.
    fn client(&self) -> Option<PathBuf> {
        None
    }
}

/// The transports of a run, by kind (TLS only when a scenario needs it:
/// it makes certificates).
pub struct Transports<'a> {
    /// The run's `--transport` (NBD or vhost-user-blk on unix sockets).
    pub unix: &'a dyn Transport,
    /// NBD over TCP, plaintext.
    pub tcp: &'a dyn Transport,
    /// NBD over TCP with TLS.
    pub tls: Option<&'a dyn Transport>,
}

impl Transports<'_> {
    /// The transport of `kind`, if this run has it.
    pub fn get(&self, kind: TransportKind) -> Option<&dyn Transport> {
        match kind {
            TransportKind::Unix => Some(self.unix),
            TransportKind::Tcp => Some(self.tcp),
            TransportKind::Tls => self.tls,
        }
    }
}
