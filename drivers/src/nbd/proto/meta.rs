//! Metadata-context query matching for `NBD_OPT_LIST_META_CONTEXT` and
//! `NBD_OPT_SET_META_CONTEXT`, following the rules of the spec's
//! "Metadata querying" section and QEMU's `nbd_negotiate_meta_queries`:
//!
//! * `base:allocation` selects itself; `base:` lists it (LIST only).
//! * `qemu:` lists allocation-depth and every bitmap (LIST only).
//! * `qemu:allocation-depth` selects itself if the export enables it.
//! * `qemu:dirty-bitmap:` lists every bitmap (LIST only);
//!   `qemu:dirty-bitmap:NAME` selects that bitmap if exported.
//! * Unknown namespaces and leaf names are ignored, never errors.
//! * LIST with zero queries lists everything; SET with zero selects nothing.
//!
//! Context ids are stable per export: 0 = `base:allocation`,
//! 1 = `qemu:allocation-depth`, 2 + i = the export's i-th bitmap.
#![forbid(unsafe_code)]

use super::consts::*;
use super::export::{ExportInfo, MetaContext};

/// Id of `base:allocation`.
pub const META_ID_BASE_ALLOCATION: u32 = 0;
/// Id of `qemu:allocation-depth`.
pub const META_ID_ALLOCATION_DEPTH: u32 = 1;
/// Id of the first dirty bitmap; bitmap `i` has id `META_ID_DIRTY_BITMAP + i`.
pub const META_ID_DIRTY_BITMAP: u32 = 2;

/// Which contexts of one export a query list matched.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection {
    base: bool,
    depth: bool,
    bitmaps: Vec<bool>,
}

impl Selection {
    pub(crate) fn none(info: &ExportInfo) -> Self {
        Selection {
            base: false,
            depth: false,
            bitmaps: vec![false; info.bitmaps.len()],
        }
    }

    pub(crate) fn all(info: &ExportInfo) -> Self {
        Selection {
            base: true,
            depth: info.allocation_depth,
            bitmaps: vec![true; info.bitmaps.len()],
        }
    }

    /// Apply one query. `list` is true for LIST (wildcards allowed).
    pub(crate) fn apply(&mut self, info: &ExportInfo, query: &str, list: bool) {
        if let Some(leaf) = query.strip_prefix("base:") {
            if leaf == "allocation" || (leaf.is_empty() && list) {
                self.base = true;
            }
        } else if let Some(leaf) = query.strip_prefix("qemu:") {
            if leaf.is_empty() {
                if list {
                    self.depth = info.allocation_depth;
                    self.bitmaps.iter_mut().for_each(|b| *b = true);
                }
            } else if leaf == "allocation-depth" {
                self.depth |= info.allocation_depth;
            } else if let Some(bm) = leaf.strip_prefix("dirty-bitmap:") {
                if bm.is_empty() {
                    if list {
                        self.bitmaps.iter_mut().for_each(|b| *b = true);
                    }
                } else if let Some(i) = info.bitmaps.iter().position(|n| n == bm) {
                    if let Some(slot) = self.bitmaps.get_mut(i) {
                        *slot = true;
                    }
                }
            }
        }
    }

    /// Selected contexts with their ids, in id order.
    pub(crate) fn contexts(&self, info: &ExportInfo) -> Vec<(u32, MetaContext)> {
        let mut out = Vec::new();
        if self.base {
            out.push((META_ID_BASE_ALLOCATION, MetaContext::BaseAllocation));
        }
        if self.depth {
            out.push((META_ID_ALLOCATION_DEPTH, MetaContext::AllocationDepth));
        }
        for (i, (sel, name)) in self.bitmaps.iter().zip(&info.bitmaps).enumerate() {
            let id = u32::try_from(i)
                .ok()
                .and_then(|i| META_ID_DIRTY_BITMAP.checked_add(i));
            // Names longer than the string limit cannot be sent; skip them.
            let fits = CONTEXT_QEMU_DIRTY_BITMAP_PREFIX.len() + name.len() <= NBD_MAX_STRING_SIZE;
            if let (true, Some(id), true) = (*sel, id, fits) {
                out.push((id, MetaContext::DirtyBitmap(name.clone())));
            }
        }
        out
    }
}
