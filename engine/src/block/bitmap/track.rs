//! [`DirtyTracker`]: how a [`super::super::BlockHandle`] marks the bitmaps
//! of every node a write reaches, without a lock.
//!
//! A handle is opened on a node and flattened to its protocol leaf, so a
//! write through a `raw` node also reaches the `file` node below, at the
//! raw `offset`: the tracker keeps one layer per node of that chain, each
//! with the offset to add. Each layer caches the published set of enabled
//! bitmaps of its node, stamped with the global epoch it was read at; the
//! control plane bumps the epoch on every publish, and a layer whose stamp
//! is old re-reads its set (the only lock the data path ever takes, once
//! per change). In the steady state a mark is two loads of the epoch plus,
//! per enabled bitmap, a load of the word and (when the bit is clear) one
//! `fetch_or`.
//!
//! # Two-phase marking
//!
//! Every write, write-zeroes and discard marks twice: before it is
//! submitted and after it completed, before it is acknowledged
//! ([`DirtyGuard`]). Each mark checks the epoch, marks the current set, and
//! checks again, marking anew if a publish came in between. Against a
//! publish at instant T (QEMU drains I/O there instead):
//!
//! - a write whose data lands before T marked the set before T at its
//!   first mark, so a bitmap disabled at T (a checkpoint) has it;
//! - a write whose data lands after T marks the set after T at its second
//!   mark, so a bitmap added or enabled at T has it, and a bitmap cleared
//!   at T keeps it (the second mark comes after the clear);
//! - a mark that a concurrent copy (resize) missed is followed by an epoch
//!   check that sees the bump (all `SeqCst`), so it is redone on the copy.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::bits::DirtyBitmap;
use super::set::BitmapSet;
use crate::block::node::{BlockNode, Kind};

/// Bumped by every publish of any node's set.
static EPOCH: AtomicU64 = AtomicU64::new(1);

pub(crate) fn bump_epoch() {
    EPOCH.fetch_add(1, Ordering::SeqCst);
}

fn epoch() -> u64 {
    EPOCH.load(Ordering::SeqCst)
}

struct Layer {
    set: Arc<BitmapSet>,
    /// Added to the handle's offsets for this node.
    base: u64,
}

struct Cache {
    epoch: u64,
    /// Per layer, its published enabled bitmaps.
    active: Vec<Arc<[Arc<DirtyBitmap>]>>,
    /// Any layer has an enabled bitmap.
    any: bool,
}

/// The marking side of a handle. See the module docs.
pub(crate) struct DirtyTracker {
    layers: Vec<Layer>,
    cache: RefCell<Cache>,
}

impl DirtyTracker {
    /// The chain from `node` down to its protocol leaf.
    pub(crate) fn new(node: &Arc<BlockNode>) -> DirtyTracker {
        let mut layers = Vec::new();
        let mut n = node;
        let mut base = 0u64;
        loop {
            layers.push(Layer {
                set: n.bitmaps().clone(),
                base,
            });
            match &n.kind {
                Kind::Raw { child, offset } => {
                    base = base.saturating_add(*offset);
                    n = child;
                }
                _ => break,
            }
        }
        let t = DirtyTracker {
            layers,
            cache: RefCell::new(Cache {
                epoch: 0,
                active: Vec::new(),
                any: false,
            }),
        };
        t.refresh(epoch());
        t
    }

    fn refresh(&self, epoch: u64) {
        let active: Vec<_> = self.layers.iter().map(|l| l.set.active()).collect();
        let any = active.iter().any(|a| !a.is_empty());
        *self.cache.borrow_mut() = Cache { epoch, active, any };
    }

    /// Number of nodes in the chain.
    pub(crate) fn depth(&self) -> usize {
        self.layers.len()
    }

    /// Marks `[offset, offset + len)` (handle offsets) in every enabled
    /// bitmap of the first `layers` nodes of the chain (all of them but
    /// for a discard that a node below them ignores).
    fn mark_top(&self, offset: u64, len: u64, layers: usize) {
        let mut e = epoch();
        loop {
            if self.cache.borrow().epoch != e {
                self.refresh(e);
            }
            {
                let c = self.cache.borrow();
                if c.any {
                    for (layer, bitmaps) in self.layers.iter().zip(&c.active).take(layers) {
                        let at = offset.saturating_add(layer.base);
                        for b in bitmaps.iter() {
                            b.set(at, len);
                        }
                    }
                }
            }
            let now = epoch();
            if now == e {
                return;
            }
            e = now;
        }
    }

    /// Marks now and again when the guard is dropped (after the operation
    /// completed, before it is acknowledged).
    pub(crate) fn guard(&self, offset: u64, len: u64) -> DirtyGuard<'_> {
        self.guard_top(offset, len, usize::MAX)
    }

    /// [`Self::guard`] on the first `layers` nodes of the chain.
    pub(crate) fn guard_top(&self, offset: u64, len: u64, layers: usize) -> DirtyGuard<'_> {
        self.mark_top(offset, len, layers);
        DirtyGuard {
            tracker: self,
            offset,
            len,
            layers,
        }
    }
}

/// Marks its range again when dropped. See [`DirtyTracker::guard`].
pub(crate) struct DirtyGuard<'a> {
    tracker: &'a DirtyTracker,
    offset: u64,
    len: u64,
    layers: usize,
}

impl Drop for DirtyGuard<'_> {
    fn drop(&mut self) {
        self.tracker.mark_top(self.offset, self.len, self.layers);
    }
}
