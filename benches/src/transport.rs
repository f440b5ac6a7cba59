//! A *transport* is how a server exports a backend and how fio drives that
//! export: given a server and a backend it yields the server's command line,
//! the path that shows the server is ready, and fio's client options.
//!
//! NBD over a unix socket is the first implementation ([`crate::nbd::Nbd`]);
//! vhost-user-blk (fio `libblkio`) and FUSE (fio `io_uring` on the mounted
//! file) are meant to slot in as further implementations of [`Transport`].

use crate::jobs::CacheMode;
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
    /// An RBD image (see `rbd.rs`).
    Rbd(crate::rbd::RbdImage),
}

/// How to start one server's export and how fio reaches it.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Server arguments (after the binary).
    pub args: Vec<String>,
    /// Unix socket whose accepting a connection means "ready".
    pub ready_socket: PathBuf,
    /// fio options that select the engine and target (`--ioengine=...`).
    pub fio_args: Vec<String>,
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
