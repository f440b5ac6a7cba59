//! QOM objects: iothreads by id, the built-in default iothread, metrics
//! endpoints, TLS credentials and authorization objects (see
//! `crate::tls`). All share one id namespace, as in QEMU.
//!
//! The default iothread (`ringstor-main`) runs every export that names no
//! iothread, so the control thread never does I/O. Like QEMU's main loop
//! it is not an object: `query-iothreads` does not list it and it cannot
//! be deleted.

use std::collections::BTreeMap;
use std::sync::Arc;

use engine::iothread::{
    IoThread, IoThreadConfig, IoThreadHandle, DEFAULT_POLL_MAX_NS, DEFAULT_RING_ENTRIES,
};
use serde_json::{json, Value};

use crate::error::{ControlError, Result};
use crate::metrics::MetricsServer;
use crate::placement::Placement;
use crate::qapi::{IothreadOptions, MetricsOptions, TlsCredsX509Options};
use crate::tls::{Authz, AuthzTable, X509Creds};

/// Name of the built-in iothread.
pub const DEFAULT_IOTHREAD: &str = "ringstor-main";

struct IothreadEntry {
    thread: IoThread,
    options: IothreadOptions,
}

/// The iothreads.
pub struct Objects {
    default: IoThread,
    iothreads: BTreeMap<String, IothreadEntry>,
    /// Creation order, for QEMU's listing order.
    order: Vec<String>,
    /// `metrics` objects (OpenMetrics endpoints).
    metrics: BTreeMap<String, MetricsServer>,
    placement: Placement,
    tls: BTreeMap<String, Arc<X509Creds>>,
    /// Shared with the NBD server's client verifier, which looks its
    /// `tls-authz` object up for every client.
    authz: AuthzTable,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects")
            .field("iothreads", &self.order)
            .finish_non_exhaustive()
    }
}

impl Objects {
    /// Starts the default iothread, placed first.
    pub fn new(mut placement: Placement) -> Result<Objects> {
        let cpu = placement.place(None)?;
        let default = IoThread::spawn(IoThreadConfig {
            name: DEFAULT_IOTHREAD.to_string(),
            cpu: Some(cpu),
            movable: true,
            ring_entries: DEFAULT_RING_ENTRIES,
            poll_max_ns: DEFAULT_POLL_MAX_NS,
        })?;
        Ok(Objects {
            default,
            iothreads: BTreeMap::new(),
            order: Vec::new(),
            metrics: BTreeMap::new(),
            placement,
            tls: BTreeMap::new(),
            authz: AuthzTable::default(),
        })
    }

    /// The default iothread.
    pub fn default_handle(&self) -> &IoThreadHandle {
        self.default.handle()
    }

    /// Every iothread, the default one first.
    pub fn all_handles(&self) -> Vec<IoThreadHandle> {
        std::iter::once(self.default.handle())
            .chain(
                self.order
                    .iter()
                    .filter_map(|id| self.iothreads.get(id))
                    .map(|e| e.thread.handle()),
            )
            .cloned()
            .collect()
    }

    /// An iothread by object id (`None` for the default one).
    pub fn handle(&self, id: Option<&str>) -> Option<&IoThreadHandle> {
        match id {
            None => Some(self.default.handle()),
            Some(id) => self.iothreads.get(id).map(|e| e.thread.handle()),
        }
    }

    /// Fails if an object has this id (checked before the metrics
    /// socket is opened, so that an `fd` is not used up).
    pub fn check_new_id(&self, id: &str) -> Result<()> {
        if self.contains(id) {
            return Err(duplicate(id));
        }
        Ok(())
    }

    /// `object-add qom-type=metrics`: starts serving at once on
    /// `listener`, opened from `options.addr`.
    pub fn add_metrics(
        &mut self,
        options: MetricsOptions,
        listener: drivers::socket::Listener,
        control: crossbeam_channel::Sender<crate::daemon::Internal>,
    ) -> Result<()> {
        self.check_new_id(&options.id)?;
        let server = MetricsServer::start(&options.id, listener, control)?;
        self.metrics.insert(options.id, server);
        Ok(())
    }

    /// `object-add qom-type=iothread`.
    pub fn add_iothread(&mut self, options: IothreadOptions) -> Result<()> {
        if self.contains(&options.id) {
            return Err(duplicate(&options.id));
        }
        let poll_max_ns = poll_max_ns(&options)?;
        let cpu = self.placement.place(options.cpu)?;
        let thread = IoThread::spawn(IoThreadConfig {
            name: options.id.clone(),
            cpu: Some(cpu),
            movable: options.cpu.is_none(),
            ring_entries: DEFAULT_RING_ENTRIES,
            poll_max_ns,
        })?;
        self.order.push(options.id.clone());
        self.iothreads
            .insert(options.id.clone(), IothreadEntry { thread, options });
        Ok(())
    }

    /// `object-add qom-type=tls-creds-x509`: loads and checks the files.
    pub fn add_tls_creds_x509(&mut self, options: TlsCredsX509Options) -> Result<()> {
        if self.contains(&options.id) {
            return Err(duplicate(&options.id));
        }
        let creds = X509Creds::load(&options).map_err(ControlError::Failed)?;
        self.tls.insert(options.id, Arc::new(creds));
        Ok(())
    }

    /// `object-add` of an `authz-*` object.
    pub fn add_authz(&mut self, id: String, authz: Authz) -> Result<()> {
        if self.contains(&id) {
            return Err(duplicate(&id));
        }
        self.authz.insert(id, authz);
        Ok(())
    }

    /// x509 credentials by id.
    pub fn tls_creds(&self, id: &str) -> Option<Arc<X509Creds>> {
        self.tls.get(id).cloned()
    }

    /// The authorization objects, as the TLS verifier sees them.
    pub fn authz_table(&self) -> AuthzTable {
        self.authz.clone()
    }

    /// Whether an object with this id exists.
    pub fn contains(&self, id: &str) -> bool {
        self.iothreads.contains_key(id)
            || self.metrics.contains_key(id)
            || self.tls.contains_key(id)
            || self.authz.get(id).is_some()
    }

    /// Whether `id` is an iothread.
    pub fn is_iothread(&self, id: &str) -> bool {
        self.iothreads.contains_key(id)
    }

    /// `object-del`; the caller has checked the object is unused.
    pub fn del(&mut self, id: &str) -> Result<()> {
        if let Some(m) = self.metrics.remove(id) {
            m.stop();
            return Ok(());
        }
        if let Some(e) = self.iothreads.remove(id) {
            self.order.retain(|i| i != id);
            e.thread.stop();
            return Ok(());
        }
        if self.tls.remove(id).is_some() || self.authz.remove(id) {
            return Ok(());
        }
        Err(ControlError::failed(format!("object '{id}' not found")))
    }

    /// `query-iothreads`.
    pub fn query(&self) -> Value {
        let list = self
            .order
            .iter()
            .filter_map(|id| self.iothreads.get(id))
            .map(|e| {
                let h = e.thread.handle();
                json!({
                    "id": e.options.id,
                    "thread-id": h.thread_id(),
                    "poll-max-ns": e.options.poll_max_ns.unwrap_or(DEFAULT_POLL_MAX_NS as i64),
                    "poll-grow": e.options.poll_grow.unwrap_or(0),
                    "poll-shrink": e.options.poll_shrink.unwrap_or(0),
                    "aio-max-batch": e.options.aio_max_batch.unwrap_or(0),
                    "cpu": h.cpu(),
                })
            })
            .collect();
        Value::Array(list)
    }

    /// Stops every iothread (at exit, after the exports are gone).
    pub fn stop_all(&mut self) {
        for (_, m) in std::mem::take(&mut self.metrics) {
            m.stop();
        }
        for (_, e) in std::mem::take(&mut self.iothreads) {
            e.thread.stop();
        }
        self.order.clear();
    }
}

/// The `poll-max-ns` of `options`, after checking its numeric properties
/// as QEMU does (negative values refused; QEMU checks `poll-grow` first).
/// `poll-grow` and `poll-shrink` are accepted but not used (see the
/// engine's `iothread/poll.rs`).
fn poll_max_ns(options: &IothreadOptions) -> Result<u64> {
    let checked = [
        ("poll-grow", options.poll_grow),
        ("poll-shrink", options.poll_shrink),
        ("poll-max-ns", options.poll_max_ns),
        ("aio-max-batch", options.aio_max_batch),
        ("thread-pool-min", options.thread_pool_min),
        ("thread-pool-max", options.thread_pool_max),
    ];
    for (name, v) in checked {
        if v.is_some_and(|v| v < 0) {
            return Err(ControlError::failed(format!(
                "{name} value must be in range [0, {}]",
                i64::MAX
            )));
        }
    }
    Ok(options
        .poll_max_ns
        .map_or(DEFAULT_POLL_MAX_NS, |v| v as u64))
}

/// QEMU's error for an object id that is taken (by any object type).
pub(crate) fn duplicate(id: &str) -> ControlError {
    ControlError::failed(format!(
        "attempt to add duplicate property '{id}' to object (type 'container')"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(grow: Option<i64>, shrink: Option<i64>, max: Option<i64>) -> IothreadOptions {
        IothreadOptions {
            id: "t".into(),
            poll_grow: grow,
            poll_shrink: shrink,
            poll_max_ns: max,
            ..IothreadOptions::default()
        }
    }

    #[test]
    fn poll_params_take_qemu_defaults_and_values() {
        assert_eq!(
            poll_max_ns(&opts(None, None, None)).unwrap(),
            DEFAULT_POLL_MAX_NS
        );
        assert_eq!(
            poll_max_ns(&opts(Some(4), Some(2), Some(50000))).unwrap(),
            50000
        );
    }

    #[test]
    fn negative_poll_params_are_refused_as_qsd_does() {
        // QSD 10: `--object iothread,id=t,poll-max-ns=-1,poll-grow=-1`
        // names poll-grow.
        let e = poll_max_ns(&opts(Some(-1), None, Some(-1))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "poll-grow value must be in range [0, 9223372036854775807]"
        );
        let e = poll_max_ns(&opts(None, None, Some(-1))).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("poll-max-ns value must be in range"));
    }
}
