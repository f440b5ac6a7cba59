//! The interface between the control plane's export registry and the
//! export drivers.
//!
//! The control plane implements what every export has in common once
//! (`id`, `node-name`, `writable`, `writethrough`, `iothread`,
//! `fixed-iothread`, permissions, `query-block-exports`,
//! `BLOCK_EXPORT_DELETED`); a driver only serves its protocol. A driver
//! receives an [`ExportCommon`] and returns a [`Export`] the registry keeps.
//!
//! # Removal contract
//!
//! [`Export::remove`] with [`RemoveMode::Safe`] fails while clients are
//! connected; with [`RemoveMode::Hard`] it disconnects them. In both cases,
//! once no client is left the driver calls `on_drained(id)` exactly once
//! (possibly before `remove` returns), and the registry then drops the
//! export and emits `BLOCK_EXPORT_DELETED`.

use std::sync::Arc;

use engine::block::BlockNode;
use engine::iothread::IoThreadHandle;

use crate::stats::ExportStats;

/// How to remove an export that has clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveMode {
    /// Refuse while clients are connected.
    Safe,
    /// Disconnect the clients.
    Hard,
}

/// Called once when a removed export has no client left.
pub type DrainedFn = Arc<dyn Fn(&str) + Send + Sync>;

/// What every export has, decided by the control plane.
#[derive(Clone)]
pub struct ExportCommon {
    /// The export id (`id`).
    pub id: String,
    /// The node exported (`node-name`).
    pub node: Arc<BlockNode>,
    /// Clients may write (`writable`).
    pub writable: bool,
    /// Every write is durable before it is acknowledged (`writethrough`).
    pub writethrough: bool,
    /// Where the export's connections or queues run: one iothread, or
    /// several to spread over (round robin).
    pub iothreads: Vec<IoThreadHandle>,
    /// See the module's removal contract.
    pub on_drained: DrainedFn,
    /// Where the export's queues record their I/O (one
    /// [`crate::stats::QueueRecorder`] per connection or queue).
    pub stats: Arc<ExportStats>,
}

impl std::fmt::Debug for ExportCommon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportCommon")
            .field("id", &self.id)
            .field("node", &self.node.name())
            .field("writable", &self.writable)
            .field("writethrough", &self.writethrough)
            .finish()
    }
}

/// Why an export operation failed; `Display` is the QMP `desc`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Generic failure with QEMU's wording.
    #[error("{0}")]
    Failed(String),
    /// Safe removal while clients are connected.
    #[error("export '{0}' still in use")]
    InUse(String),
    /// The driver cannot work on this host (e.g. no /dev/vduse).
    #[error("{0}")]
    Unavailable(String),
}

/// A running export, owned by the control plane's registry.
pub trait Export: Send {
    /// The export id.
    fn id(&self) -> &str;
    /// QAPI `BlockExportType` name (`nbd`, `vhost-user-blk`, ...).
    fn kind(&self) -> &'static str;
    /// Starts removal. See the module's removal contract.
    fn remove(&mut self, mode: RemoveMode) -> Result<(), ExportError>;
    /// Connected clients (or active queues).
    fn clients(&self) -> usize;
}
