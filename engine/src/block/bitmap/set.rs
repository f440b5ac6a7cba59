//! [`BitmapSet`]: the named dirty bitmaps of one node, as the control
//! plane manages them, and the set of enabled ones the data path marks.
//!
//! Names, flags (`enabled`, `busy`, `persistent`) and the list live behind
//! a mutex that only the control thread takes, plus each iothread once
//! after a change (to pick up the new set). The data path never looks at
//! the list: it marks the bitmaps of the last *published* set.
//!
//! # Publishing
//!
//! Adding, removing, enabling and disabling change the list at once but
//! reach the data path only at [`BitmapSet::publish`], which swaps in the
//! new set of enabled bitmaps and bumps the global epoch (see `track.rs`).
//! Callers make all the changes of one command or one `transaction`, then
//! publish once: so "add a new bitmap, disable the old one" is one instant
//! for the data path, and every write lands in the old bitmap, the new one,
//! or (while it straddles the instant) both.

use std::sync::{Arc, Mutex, MutexGuard};

use super::bits::DirtyBitmap;
use super::error::BitmapError;
use super::track;

/// Longest bitmap name (QEMU's `BDRV_BITMAP_MAX_NAME_SIZE`).
pub const MAX_BITMAP_NAME: usize = 1023;

/// What `query-named-block-nodes` shows of a bitmap, plus the bitmap.
#[derive(Debug, Clone)]
pub struct BitmapInfo {
    /// The name.
    pub name: String,
    /// Bytes per bit.
    pub granularity: u64,
    /// Dirty bytes (dirty granules times the granularity).
    pub count: u64,
    /// Enabled: writes mark it.
    pub recording: bool,
    /// Held by an export.
    pub busy: bool,
    /// To be stored in the image (only formats that can store bitmaps).
    pub persistent: bool,
    /// The bits.
    pub bitmap: Arc<DirtyBitmap>,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    name: String,
    bitmap: Arc<DirtyBitmap>,
    enabled: bool,
    /// Busy guards alive.
    holds: usize,
    persistent: bool,
}

#[derive(Debug, Default)]
struct State {
    /// In creation order.
    entries: Vec<Entry>,
    next_id: u64,
}

/// The named bitmaps of one node. See the module docs.
#[derive(Debug, Default)]
pub struct BitmapSet {
    state: Mutex<State>,
    /// The enabled bitmaps as last published (read by `track.rs`).
    active: Mutex<Arc<[Arc<DirtyBitmap>]>>,
}

impl BitmapSet {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The published enabled bitmaps.
    pub(crate) fn active(&self) -> Arc<[Arc<DirtyBitmap>]> {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Adds `bitmap` as `name` (QEMU's checks, in QEMU's order: the name
    /// is free, then not too long). The caller makes the bitmap, so a
    /// transaction allocates before it changes anything.
    pub fn add(
        &self,
        name: &str,
        bitmap: DirtyBitmap,
        enabled: bool,
        persistent: bool,
    ) -> Result<Arc<DirtyBitmap>, BitmapError> {
        let mut st = self.lock();
        if st.entries.iter().any(|e| e.name == name) {
            return Err(BitmapError::Exists(name.to_string()));
        }
        if name.len() > MAX_BITMAP_NAME {
            return Err(BitmapError::NameTooLong(name.to_string()));
        }
        let bitmap = Arc::new(bitmap);
        st.next_id += 1;
        let id = st.next_id;
        st.entries.push(Entry {
            id,
            name: name.to_string(),
            bitmap: bitmap.clone(),
            enabled,
            holds: 0,
            persistent,
        });
        Ok(bitmap)
    }

    fn info(e: &Entry) -> BitmapInfo {
        BitmapInfo {
            name: e.name.clone(),
            granularity: e.bitmap.granularity(),
            count: e.bitmap.count(),
            recording: e.enabled,
            busy: e.holds > 0,
            persistent: e.persistent,
            bitmap: e.bitmap.clone(),
        }
    }

    /// The bitmap named `name`.
    pub fn get(&self, name: &str) -> Option<BitmapInfo> {
        self.lock()
            .entries
            .iter()
            .find(|e| e.name == name)
            .map(Self::info)
    }

    /// Every bitmap, newest first (QEMU's order).
    pub fn list(&self) -> Vec<BitmapInfo> {
        self.lock().entries.iter().rev().map(Self::info).collect()
    }

    /// True when the node has no bitmap.
    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// Removes a bitmap that no export holds.
    pub fn remove(&self, name: &str) -> Result<(), BitmapError> {
        let mut st = self.lock();
        let Some(i) = st.entries.iter().position(|e| e.name == name) else {
            return Err(BitmapError::NotFound(name.to_string()));
        };
        if st.entries[i].holds > 0 {
            return Err(BitmapError::Busy(name.to_string()));
        }
        st.entries.remove(i);
        Ok(())
    }

    /// Starts or stops recording writes (effective at the next publish).
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), BitmapError> {
        let mut st = self.lock();
        let e = st
            .entries
            .iter_mut()
            .find(|e| e.name == name)
            .ok_or_else(|| BitmapError::NotFound(name.to_string()))?;
        e.enabled = enabled;
        Ok(())
    }

    /// Marks a bitmap busy until the guard is dropped (an export holds
    /// it). Callers check [`BitmapInfo::busy`] first where QEMU refuses.
    pub fn hold(self: &Arc<Self>, name: &str) -> Result<BusyGuard, BitmapError> {
        let mut st = self.lock();
        let e = st
            .entries
            .iter_mut()
            .find(|e| e.name == name)
            .ok_or_else(|| BitmapError::NotFound(name.to_string()))?;
        e.holds += 1;
        Ok(BusyGuard {
            set: self.clone(),
            id: e.id,
        })
    }

    fn release(&self, id: u64) {
        if let Some(e) = self.lock().entries.iter_mut().find(|e| e.id == id) {
            e.holds = e.holds.saturating_sub(1);
        }
    }

    /// Makes the current enabled bitmaps the ones writes mark. See the
    /// module docs.
    pub fn publish(&self) {
        let st = self.lock();
        self.publish_locked(&st);
    }

    fn publish_locked(&self, st: &State) {
        let enabled: Arc<[Arc<DirtyBitmap>]> = st
            .entries
            .iter()
            .filter(|e| e.enabled)
            .map(|e| e.bitmap.clone())
            .collect();
        *self.active.lock().unwrap_or_else(|p| p.into_inner()) = enabled;
        track::bump_epoch();
    }

    /// The node now has `size` bytes: every bitmap no export holds is
    /// replaced by one of the new size with the same bits (held ones keep
    /// their size; exports do not let their node be resized).
    pub(crate) fn resize(&self, size: u64) {
        let mut st = self.lock();
        let mut copies = Vec::new();
        for e in st.entries.iter_mut() {
            if e.holds > 0 || e.bitmap.size() == size {
                continue;
            }
            match DirtyBitmap::new(size, e.bitmap.granularity()) {
                Ok(new) => {
                    let new = Arc::new(new);
                    let old = std::mem::replace(&mut e.bitmap, new.clone());
                    copies.push((old, new));
                }
                Err(err) => log::warn!("bitmap {}: not resized: {err}", e.name),
            }
        }
        if copies.is_empty() {
            return;
        }
        // Publish the new bitmaps first, then copy: a mark on an old bitmap
        // that the copy misses is followed by an epoch check that sees the
        // bump, and is redone on the new bitmap (see track.rs).
        self.publish_locked(&st);
        for (old, new) in copies {
            new.copy_from(&old);
        }
    }
}

/// An export's hold on a bitmap; see [`BitmapSet::hold`].
#[derive(Debug)]
pub struct BusyGuard {
    set: Arc<BitmapSet>,
    id: u64,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.set.release(self.id);
    }
}
