//! The export registry: what every export has in common, done once.
//!
//! For each export it checks the id, attaches to the node with QEMU's
//! permissions (`consistent-read`, plus `write` when writable, sharing
//! everything, like `blk_exp_add()`), decides the iothreads, hands an
//! [`ExportCommon`] to the driver, and keeps what the driver returns until
//! the driver reports it drained.
//!
//! # Iothreads
//!
//! Every node has a home iothread (initially the default one). An export
//! runs on its node's home, unless `iothread` is given: then the node
//! moves there, provided no other live export keeps it on its current
//! home. If it cannot move, the export stays on the current home, or
//! fails when `fixed-iothread` is set. A ringstor list of iothreads moves
//! the home to the first one and spreads the export over all of them.
//!
//! # Removal
//!
//! `remove` asks the driver; the driver's `on_drained` posts
//! [`Internal::ExportDrained`] to the control thread, which calls
//! [`ExportRegistry::drained`]: that drops the export and its permissions
//! and tells the caller to emit `BLOCK_EXPORT_DELETED`, once.

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_channel::Sender;
use drivers::export::{Export, ExportCommon, RemoveMode};
use drivers::stats::ExportStats;
use engine::block::{BlockNode, Perm, PermGuard};
use engine::iothread::IoThreadHandle;
use serde_json::{json, Value};

use crate::daemon::Internal;
use crate::error::{ControlError, Result};
use crate::objects::Objects;
use crate::qapi::{is_identifier, ExportBase};

struct ExportEntry {
    id: String,
    export: Box<dyn Export>,
    kind: &'static str,
    node_name: String,
    /// Object ids of its iothreads (`None`: the default iothread).
    iothreads: Vec<Option<String>>,
    shutting_down: bool,
    stats: Arc<ExportStats>,
    _perm: PermGuard,
}

/// The live exports. See the module docs.
pub struct ExportRegistry {
    /// In creation order.
    entries: Vec<ExportEntry>,
    /// Node name → home iothread (absent: the default one).
    homes: HashMap<String, String>,
    internal: Sender<Internal>,
}

impl std::fmt::Debug for ExportRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.entries.iter().map(|e| e.id.as_str()).collect();
        f.debug_struct("ExportRegistry").field("ids", &ids).finish()
    }
}

/// What the driver needs besides [`ExportCommon`]: decided, not yet built.
pub struct Prepared {
    pub common: ExportCommon,
    perm: PermGuard,
    iothreads: Vec<Option<String>>,
    home: Option<String>,
}

impl ExportRegistry {
    /// An empty registry posting drained notices to `internal`.
    pub fn new(internal: Sender<Internal>) -> ExportRegistry {
        ExportRegistry {
            entries: Vec::new(),
            homes: HashMap::new(),
            internal,
        }
    }

    fn find(&self, id: &str) -> Option<&ExportEntry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// QEMU's checks on a new export id.
    pub fn check_id(&self, id: &str) -> Result<()> {
        if !is_identifier(id) {
            return Err(ControlError::failed("Invalid block export id"));
        }
        if self.find(id).is_some() {
            return Err(ControlError::failed(format!(
                "Block export id '{id}' is already in use"
            )));
        }
        Ok(())
    }

    /// Checks the common options and takes the permissions (letting
    /// others have `shared`); the driver
    /// then builds the export from `Prepared::common` and [`Self::insert`]
    /// records it.
    pub fn prepare(
        &self,
        base: &ExportBase,
        node: &Arc<BlockNode>,
        objects: &Objects,
        shared: Perm,
    ) -> Result<Prepared> {
        self.check_id(&base.id)?;
        let writable = base.writable.unwrap_or(false);
        let (handles, iothreads, home) = self.place(base, node.name(), objects)?;
        if writable && node.read_only() {
            return Err(ControlError::failed(
                "Cannot export read-only node as writable",
            ));
        }
        let perm = if writable {
            Perm::CONSISTENT_READ.union(Perm::WRITE)
        } else {
            Perm::CONSISTENT_READ
        };
        let guard = node.attach(&base.id, perm, shared)?;
        let tx = self.internal.clone();
        Ok(Prepared {
            common: ExportCommon {
                id: base.id.clone(),
                node: node.clone(),
                writable,
                writethrough: base.writethrough.unwrap_or(false),
                iothreads: handles,
                on_drained: Arc::new(move |id: &str| {
                    // The control thread may be gone at exit; nothing to do then.
                    let _ = tx.send(Internal::ExportDrained(id.to_string()));
                }),
                stats: ExportStats::new(&base.id, node.name()),
            },
            perm: guard,
            iothreads,
            home,
        })
    }

    /// Decides the iothreads (see the module docs).
    #[allow(clippy::type_complexity)]
    fn place(
        &self,
        base: &ExportBase,
        node: &str,
        objects: &Objects,
    ) -> Result<(Vec<IoThreadHandle>, Vec<Option<String>>, Option<String>)> {
        let current = self.homes.get(node).cloned();
        let handle_of = |id: Option<&str>| -> Result<IoThreadHandle> {
            objects.handle(id).cloned().ok_or_else(|| {
                ControlError::failed(format!("iothread \"{}\" not found", id.unwrap_or("")))
            })
        };
        let Some(spec) = &base.iothread else {
            let h = handle_of(current.as_deref())?;
            return Ok((vec![h], vec![current.clone()], current));
        };
        let mut handles = Vec::new();
        for name in &spec.0 {
            handles.push(handle_of(Some(name))?);
        }
        let wanted = spec.0.first().cloned();
        if wanted == current || self.can_move(node, wanted.as_deref()) {
            let ids = spec.0.iter().cloned().map(Some).collect();
            return Ok((handles, ids, wanted));
        }
        if base.fixed_iothread.unwrap_or(false) {
            return Err(ControlError::failed(
                "Cannot change iothread of active block backend",
            ));
        }
        let h = handle_of(current.as_deref())?;
        Ok((vec![h], vec![current.clone()], current))
    }

    /// A node can move unless a live export keeps it on another iothread.
    fn can_move(&self, node: &str, to: Option<&str>) -> bool {
        !self.entries.iter().any(|e| {
            !e.shutting_down
                && e.node_name == node
                && e.iothreads.first().map(|t| t.as_deref()) != Some(to)
        })
    }

    /// Records an export the driver built from `prepared`.
    pub fn insert(&mut self, prepared: Prepared, export: Box<dyn Export>) {
        let node_name = prepared.common.node.name().to_string();
        match prepared.home {
            Some(h) => self.homes.insert(node_name.clone(), h),
            None => self.homes.remove(&node_name),
        };
        self.entries.push(ExportEntry {
            id: prepared.common.id.clone(),
            kind: export.kind(),
            export,
            node_name,
            iothreads: prepared.iothreads,
            shutting_down: false,
            stats: prepared.common.stats.clone(),
            _perm: prepared.perm,
        });
    }

    /// `block-export-del`: starts removal; the drained notice finishes it.
    pub fn remove(&mut self, id: &str, mode: RemoveMode) -> Result<()> {
        let Some(e) = self.entries.iter_mut().find(|e| e.id == id) else {
            return Err(ControlError::failed(format!("Export '{id}' is not found")));
        };
        if e.shutting_down {
            return Err(ControlError::failed(format!(
                "Export '{id}' is already shutting down"
            )));
        }
        e.export.remove(mode)?;
        e.shutting_down = true;
        Ok(())
    }

    /// The driver reported `id` drained: drop it. True if it was there
    /// (the caller then emits `BLOCK_EXPORT_DELETED`).
    pub fn drained(&mut self, id: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.id != id);
        before != self.entries.len()
    }

    /// The type of export `id`, if it exists.
    pub fn kind_of(&self, id: &str) -> Option<&'static str> {
        self.find(id).map(|e| e.kind)
    }

    /// Ids of the exports of a type (`None`: all), live or shutting down.
    pub fn ids(&self, kind: Option<&str>) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| kind.is_none_or(|k| e.kind == k))
            .map(|e| e.id.clone())
            .collect()
    }

    /// Whether an export uses node `name`.
    pub fn uses_node(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.node_name == name)
    }

    /// Whether an export runs on iothread `id`.
    pub fn uses_iothread(&self, id: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e.iothreads.iter().any(|t| t.as_deref() == Some(id)))
    }

    /// Forgets nodes' homes on a deleted iothread (they go back to the
    /// default one).
    pub fn forget_iothread(&mut self, id: &str) {
        self.homes.retain(|_, h| h != id);
    }

    /// Forgets a deleted node's home.
    pub fn forget_node(&mut self, name: &str) {
        self.homes.remove(name);
    }

    /// Each export's id, type, node name and statistics, newest first.
    pub fn stats_entries(
        &self,
    ) -> impl Iterator<Item = (&str, &'static str, &str, &Arc<ExportStats>)> {
        self.entries
            .iter()
            .rev()
            .map(|e| (e.id.as_str(), e.kind, e.node_name.as_str(), &e.stats))
    }

    /// The statistics of export `id`.
    pub fn stats_of(&self, id: &str) -> Option<Arc<ExportStats>> {
        self.find(id).map(|e| e.stats.clone())
    }

    /// `query-block-exports`, newest first like QEMU.
    pub fn query(&self) -> Value {
        Value::Array(
            self.entries
                .iter()
                .rev()
                .map(|e| {
                    json!({
                        "id": e.id,
                        "type": e.kind,
                        "node-name": e.node_name,
                        "shutting-down": e.shutting_down,
                    })
                })
                .collect(),
        )
    }
}
