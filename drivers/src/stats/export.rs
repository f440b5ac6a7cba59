//! [`ExportStats`]: an export's statistics identity, shared by its queues.
//!
//! The control plane makes one per export (in `ExportCommon::stats`); a
//! driver makes a [`QueueRecorder`] from it for every connection or queue,
//! on the iothread that queue runs on. It also owns the export's log
//! limiter, so that connection and protocol-error lines of a hostile
//! client cannot flood the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::log::RateLimit;
use super::recorder::QueueRecorder;

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// Whether recording is on for this process: `RINGSTOR_STATS=off` in the
/// environment turns it off (to measure its cost; every count reads zero).
pub fn recording_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        !matches!(
            std::env::var("RINGSTOR_STATS").as_deref(),
            Ok("off") | Ok("0") | Ok("no") | Ok("false")
        )
    })
}

/// One export's statistics identity. See the module docs.
pub struct ExportStats {
    instance: u64,
    id: String,
    node: String,
    enabled: bool,
    log: RateLimit,
}

impl std::fmt::Debug for ExportStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportStats")
            .field("instance", &self.instance)
            .field("id", &self.id)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl ExportStats {
    /// Statistics for export `id` of node `node`.
    pub fn new(id: &str, node: &str) -> Arc<ExportStats> {
        Arc::new(ExportStats {
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            id: id.to_string(),
            node: node.to_string(),
            enabled: recording_enabled(),
            log: RateLimit::default(),
        })
    }

    /// Unique over the process's life (ids can be reused).
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// The export id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The exported node's name.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// Whether its queues record.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A recorder for a new connection or queue, on the current iothread.
    /// `queue` names it (an NBD connection number, a virtqueue index);
    /// `client` is the peer's address when there is one.
    pub fn queue(
        self: &Arc<Self>,
        queue: impl Into<String>,
        client: Option<String>,
    ) -> QueueRecorder {
        QueueRecorder::new(self.clone(), queue.into(), client)
    }

    pub(crate) fn log_open(&self, queue: &str, client: Option<&str>) {
        self.log.info(format_args!(
            "export '{}': {} connected (queue {queue})",
            self.id,
            client.unwrap_or("client")
        ));
    }

    pub(crate) fn log_close(&self, queue: &str, client: Option<&str>, requests: u64) {
        self.log.info(format_args!(
            "export '{}': {} disconnected (queue {queue}, {requests} requests)",
            self.id,
            client.unwrap_or("client")
        ));
    }

    pub(crate) fn log_protocol_error(
        &self,
        queue: &str,
        client: Option<&str>,
        what: &dyn std::fmt::Display,
    ) {
        self.log.warn(format_args!(
            "export '{}': protocol error from {} (queue {queue}): {what}",
            self.id,
            client.unwrap_or("client")
        ));
    }
}
