//! Dirty bitmaps as QMP drives them: QEMU's checks for the
//! `block-dirty-bitmap-*` commands, `transaction` and the `bitmaps` of
//! NBD exports, then the changes to the nodes' [`BitmapSet`]s.
//!
//! # Transactions
//!
//! A transaction is planned, then applied. Planning runs every action's
//! checks, in order and in QEMU's words, against a model of the bitmaps as
//! the earlier actions leave them (a bitmap added earlier exists, one
//! removed earlier is busy until the end, as in QEMU), and makes the new
//! bitmaps; the first failure returns having changed nothing. Applying
//! cannot fail (only the control thread changes bitmaps), and every node
//! touched publishes once at the end, so the data path sees the whole
//! transaction at one instant (see `engine::block::bitmap`). QEMU instead
//! drains I/O, runs the actions and undoes them on failure. A single
//! command is a transaction of one action.

use std::collections::HashMap;
use std::sync::Arc;

use engine::block::bitmap::{can_store_persistent, default_granularity};
use engine::block::{BitmapError, BitmapSet, BlockNode, DirtyBitmap};

use crate::blocks::BlockGraph;
use crate::error::{ControlError, Result};
use crate::nbd::NbdBitmap;
use crate::qapi::{BitmapAction, BitmapRef};

/// What planning knows of a bitmap.
#[derive(Debug, Clone, Copy)]
struct Known {
    busy: bool,
    size: u64,
}

/// A change to make once every action passed its checks.
enum Step {
    Add {
        node: Arc<BlockNode>,
        name: String,
        bitmap: DirtyBitmap,
        enabled: bool,
        persistent: bool,
    },
    Remove(Arc<BlockNode>, String),
    Clear(Arc<BlockNode>, String),
    Enable(Arc<BlockNode>, String, bool),
    Merge {
        dst: (Arc<BlockNode>, String),
        srcs: Vec<(Arc<BlockNode>, String)>,
    },
}

/// The bitmaps as the actions planned so far leave them.
struct Model<'g> {
    graph: &'g BlockGraph,
    known: HashMap<(String, String), Option<Known>>,
}

impl<'g> Model<'g> {
    fn node(&self, name: &str) -> Option<Arc<BlockNode>> {
        self.graph.get(name).map(|e| e.node.clone())
    }

    fn bitmap(&mut self, node: &BlockNode, name: &str) -> Option<Known> {
        *self
            .known
            .entry((node.name().to_string(), name.to_string()))
            .or_insert_with(|| {
                node.bitmaps().get(name).map(|i| Known {
                    busy: i.busy,
                    size: i.bitmap.size(),
                })
            })
    }

    fn set(&mut self, node: &BlockNode, name: &str, k: Option<Known>) {
        self.known
            .insert((node.name().to_string(), name.to_string()), k);
    }

    /// QEMU's `block_dirty_bitmap_lookup`.
    fn lookup(&mut self, node: &str, name: &str) -> Result<(Arc<BlockNode>, Known)> {
        let Some(n) = self.node(node) else {
            return Err(ControlError::failed(format!("Node '{node}' not found")));
        };
        match self.bitmap(&n, name) {
            Some(k) => Ok((n, k)),
            None => Err(BitmapError::NotFound(name.to_string()).into()),
        }
    }

    fn plan(&mut self, action: &BitmapAction) -> Result<Step> {
        let not_busy = |k: Known, name: &str| -> Result<()> {
            if k.busy {
                return Err(BitmapError::Busy(name.to_string()).into());
            }
            Ok(())
        };
        Ok(match action {
            BitmapAction::Add(a) => {
                if a.name.is_empty() {
                    return Err(ControlError::failed("Bitmap name cannot be empty"));
                }
                let Some(node) = self.node(&a.node) else {
                    return Err(ControlError::failed(format!(
                        "Cannot find device='{0}' nor node-name='{0}'",
                        a.node
                    )));
                };
                let granularity = match a.granularity {
                    Some(g) => u64::from(g),
                    None => default_granularity(&node),
                };
                if granularity < DirtyBitmap::MIN_GRANULARITY || !granularity.is_power_of_two() {
                    return Err(BitmapError::BadGranularity.into());
                }
                let persistent = a.persistent.unwrap_or(false);
                if persistent && !can_store_persistent(&node) {
                    return Err(BitmapError::CannotStore(node.name().to_string()).into());
                }
                if self.bitmap(&node, &a.name).is_some() {
                    return Err(BitmapError::Exists(a.name.clone()).into());
                }
                if a.name.len() > engine::block::bitmap::MAX_BITMAP_NAME {
                    return Err(BitmapError::NameTooLong(a.name.clone()).into());
                }
                let bitmap = DirtyBitmap::new(node.size(), granularity)?;
                self.set(
                    &node,
                    &a.name,
                    Some(Known {
                        busy: false,
                        size: bitmap.size(),
                    }),
                );
                Step::Add {
                    node,
                    name: a.name.clone(),
                    bitmap,
                    enabled: !a.disabled.unwrap_or(false),
                    persistent,
                }
            }
            BitmapAction::Remove(a) => {
                let (node, k) = self.lookup(&a.node, &a.name)?;
                not_busy(k, &a.name)?;
                // Busy for the rest of the transaction, gone at its end.
                self.set(&node, &a.name, Some(Known { busy: true, ..k }));
                Step::Remove(node, a.name.clone())
            }
            BitmapAction::Clear(a) => {
                let (node, k) = self.lookup(&a.node, &a.name)?;
                not_busy(k, &a.name)?;
                Step::Clear(node, a.name.clone())
            }
            BitmapAction::Enable(a) | BitmapAction::Disable(a) => {
                let (node, k) = self.lookup(&a.node, &a.name)?;
                not_busy(k, &a.name)?;
                let on = matches!(action, BitmapAction::Enable(_));
                Step::Enable(node, a.name.clone(), on)
            }
            BitmapAction::Merge(m) => {
                let (dst_node, dst) = self.lookup(&m.node, &m.target)?;
                let mut srcs = Vec::with_capacity(m.bitmaps.len());
                for r in &m.bitmaps {
                    let (node, k) = match &r.node {
                        None => match self.bitmap(&dst_node, &r.name) {
                            Some(k) => (dst_node.clone(), k),
                            None => return Err(BitmapError::NotFound(r.name.clone()).into()),
                        },
                        Some(n) => self.lookup(n, &r.name)?,
                    };
                    // QEMU's bdrv_merge_dirty_bitmap, source by source.
                    not_busy(dst, &m.target)?;
                    not_busy(k, &r.name)?;
                    if k.size != dst.size {
                        return Err(BitmapError::SizeMismatch {
                            dst: dst.size,
                            src: k.size,
                        }
                        .into());
                    }
                    srcs.push((node, r.name.clone()));
                }
                Step::Merge {
                    dst: (dst_node, m.target.clone()),
                    srcs,
                }
            }
            BitmapAction::Abort => {
                return Err(ControlError::failed(
                    "Transaction aborted using Abort action",
                ))
            }
        })
    }
}

fn bits(node: &BlockNode, name: &str) -> Result<Arc<DirtyBitmap>> {
    node.bitmaps()
        .get(name)
        .map(|i| i.bitmap)
        .ok_or_else(|| BitmapError::NotFound(name.to_string()).into())
}

fn apply(step: Step) -> Result<Arc<BitmapSet>> {
    Ok(match step {
        Step::Add {
            node,
            name,
            bitmap,
            enabled,
            persistent,
        } => {
            node.bitmaps().add(&name, bitmap, enabled, persistent)?;
            node.bitmaps().clone()
        }
        Step::Remove(node, name) => {
            node.bitmaps().remove(&name)?;
            node.bitmaps().clone()
        }
        Step::Clear(node, name) => {
            bits(&node, &name)?.clear();
            node.bitmaps().clone()
        }
        Step::Enable(node, name, on) => {
            node.bitmaps().set_enabled(&name, on)?;
            node.bitmaps().clone()
        }
        Step::Merge { dst, srcs } => {
            let target = bits(&dst.0, &dst.1)?;
            for (node, name) in srcs {
                target.merge(&*bits(&node, &name)?)?;
            }
            dst.0.bitmaps().clone()
        }
    })
}

/// Runs `actions` as one transaction (see the module docs). `grouped` is
/// `completion-mode=grouped`, which only backup jobs support in QEMU.
pub fn transaction(graph: &BlockGraph, actions: &[BitmapAction], grouped: bool) -> Result<()> {
    let mut model = Model {
        graph,
        known: HashMap::new(),
    };
    let mut steps = Vec::with_capacity(actions.len());
    for a in actions {
        if grouped {
            return Err(ControlError::failed(format!(
                "Action '{}' does not support transaction property completion-mode = grouped",
                a.kind()
            )));
        }
        steps.push(model.plan(a)?);
    }
    let mut touched: Vec<Arc<BitmapSet>> = Vec::new();
    let mut first_err = None;
    for step in steps {
        match apply(step) {
            Ok(set) => {
                if !touched.iter().any(|t| Arc::ptr_eq(t, &set)) {
                    touched.push(set);
                }
            }
            // Planning rules this out; say so rather than stop halfway.
            Err(e) => {
                log::error!("bitmap transaction: a planned step failed: {e}");
                first_err.get_or_insert(e);
            }
        }
    }
    for set in touched {
        set.publish();
    }
    first_err.map_or(Ok(()), Err)
}

/// The `bitmaps` of an NBD export of `node`, with QEMU's checks: a name
/// is looked up on the exported node, `{node, name}` anywhere; an enabled
/// bitmap cannot go out read-only from a node opened writable; a busy one
/// cannot go out at all. All are held only once all passed.
pub fn for_export(
    graph: &BlockGraph,
    node: &Arc<BlockNode>,
    refs: &[BitmapRef],
    writable: bool,
) -> Result<Vec<NbdBitmap>> {
    let mut found = Vec::with_capacity(refs.len());
    for r in refs {
        let (owner, info) = match &r.node {
            None => {
                let Some(info) = node.bitmaps().get(&r.name) else {
                    return Err(ControlError::failed(format!(
                        "Bitmap '{}' is not found",
                        r.name
                    )));
                };
                if !writable && !node.read_only() && info.recording {
                    return Err(ControlError::failed(format!(
                        "Enabled bitmap '{}' incompatible with readonly export",
                        r.name
                    )));
                }
                (node.clone(), info)
            }
            Some(n) => {
                let Some(owner) = graph.get(n).map(|e| e.node.clone()) else {
                    return Err(ControlError::failed(format!("Node '{n}' not found")));
                };
                let Some(info) = owner.bitmaps().get(&r.name) else {
                    return Err(BitmapError::NotFound(r.name.clone()).into());
                };
                (owner, info)
            }
        };
        if info.busy {
            return Err(BitmapError::Busy(r.name.clone()).into());
        }
        found.push((owner, info));
    }
    found
        .into_iter()
        .map(|(owner, info)| {
            Ok(NbdBitmap {
                hold: owner.bitmaps().hold(&info.name)?,
                name: info.name,
                bitmap: info.bitmap,
            })
        })
        .collect()
}

/// `dirty-bitmaps` of `query-named-block-nodes` (QEMU's `BlockDirtyInfo`,
/// newest first); `None` when the node has none, as QEMU leaves it out.
pub fn query(node: &BlockNode) -> Option<serde_json::Value> {
    let list = node.bitmaps().list();
    if list.is_empty() {
        return None;
    }
    Some(serde_json::Value::Array(
        list.into_iter()
            .map(|b| {
                serde_json::json!({
                    "name": b.name,
                    "recording": b.recording,
                    "persistent": b.persistent,
                    "busy": b.busy,
                    "granularity": b.granularity,
                    "count": b.count,
                })
            })
            .collect(),
    ))
}

/// Whether node `name` has a bitmap an export holds.
pub fn exported_from(graph: &BlockGraph, name: &str) -> bool {
    graph
        .get(name)
        .is_some_and(|e| e.node.bitmaps().list().iter().any(|b| b.busy))
}
