//! The device's memory: IOTLB regions fetched with `VDUSE_IOTLB_GET_FD`,
//! mmapped with vm-memory, and published as an [`IovaMemory`], the
//! `GuestMemory` the virtio-blk layer reads rings and buffers through.
//!
//! ```text
//!  DRIVER_OK ──► fetch(0..=MAX)      every region the kernel has, mapped
//!  UPDATE_IOTLB(a..=b) ──► drop regions overlapping a..=b, fetch a..=b again
//!  reset ──► clear
//!          each change: a new IovaMemory published through GuestMemoryAtomic
//! ```
//!
//! Addresses are IOVAs, and each region carries the kernel's permission:
//! [`IovaMemory`] refuses a device write into a read-only region and a
//! device read of a write-only one, so a driver that points a status byte
//! or a read buffer at read-only memory gets an I/O error, never a fault.
//! Requests in flight keep the map they started on (an `Arc`), so a
//! region dropped by an update stays mapped until they finish.
//!
//! Regions are fetched eagerly (libvduse maps them on first use):
//! virtio-vdpa allocates its rings before `DRIVER_OK` and its data
//! buffers live in the bounce region, so everything a running device needs
//! is known then, and the kernel announces later changes with
//! `UPDATE_IOTLB`.

use std::fs::File;
use std::sync::Arc;

use vm_memory::guest_memory::{Error as MemError, GuestMemorySliceIterator, Result as MemResult};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemory, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap,
    GuestRegionMmap, Permissions,
};

use super::kernel::VduseDevice;
use super::sys::{IotlbEntry, ACCESS_RO, ACCESS_RW, ACCESS_WO};

/// Most regions one device may map (a VM with a vIOMMU makes many; a
/// bounce-buffered device has a handful).
pub const MAX_REGIONS: usize = 4096;

/// One mapped IOTLB region.
#[derive(Clone)]
struct Region {
    start: u64,
    last: u64,
    access: Permissions,
    mapping: Arc<GuestRegionMmap>,
}

/// IOVA space as the device may touch it: the mapped regions, each with
/// the access the kernel granted.
#[derive(Debug, Default)]
pub struct IovaMemory {
    map: GuestMemoryMmap,
    /// `(start, last, access)`, sorted, disjoint.
    spans: Vec<(u64, u64, Permissions)>,
}

impl IovaMemory {
    /// True when every byte of `addr..addr+count` is mapped with `access`.
    fn allows(&self, addr: u64, count: usize, access: Permissions) -> bool {
        if count == 0 {
            return true;
        }
        let Some(end) = addr.checked_add(count as u64 - 1) else {
            return false;
        };
        let mut at = addr;
        let mut i = self.spans.partition_point(|s| s.1 < at);
        loop {
            let Some(&(start, last, granted)) = self.spans.get(i) else {
                return false;
            };
            if start > at || granted & access != access {
                return false;
            }
            if last >= end {
                return true;
            }
            at = last + 1;
            i += 1;
        }
    }
}

impl GuestMemory for IovaMemory {
    type PhysicalMemory = GuestMemoryMmap;
    type Bitmap = ();

    fn check_range(&self, addr: GuestAddress, count: usize, access: Permissions) -> bool {
        self.allows(addr.0, count, access)
            && GuestMemoryBackend::check_range(&self.map, addr, count)
    }

    fn get_slices<'a>(
        &'a self,
        addr: GuestAddress,
        count: usize,
        access: Permissions,
    ) -> MemResult<impl GuestMemorySliceIterator<'a, ()>> {
        if !self.allows(addr.0, count, access) {
            return Err(MemError::InvalidGuestAddress(addr));
        }
        Ok(GuestMemoryBackend::get_slices(&self.map, addr, count))
    }
}

/// The kernel's permission byte as vm-memory's (`None`: not a valid one).
fn access_of(perm: u8) -> Option<(Permissions, i32)> {
    match perm {
        ACCESS_RO => Some((Permissions::Read, libc::PROT_READ)),
        ACCESS_WO => Some((Permissions::Write, libc::PROT_WRITE)),
        ACCESS_RW => Some((Permissions::ReadWrite, libc::PROT_READ | libc::PROT_WRITE)),
        _ => None,
    }
}

/// The regions of one device and the map published from them.
pub struct IotlbMap {
    regions: Vec<Region>,
    atomic: GuestMemoryAtomic<IovaMemory>,
}

impl Default for IotlbMap {
    fn default() -> Self {
        IotlbMap {
            regions: Vec::new(),
            atomic: GuestMemoryAtomic::new(IovaMemory::default()),
        }
    }
}

impl IotlbMap {
    /// What queues load their map from.
    pub fn atomic(&self) -> GuestMemoryAtomic<IovaMemory> {
        self.atomic.clone()
    }

    /// Forgets every region (device reset, removal).
    pub fn clear(&mut self) {
        self.regions.clear();
        self.publish();
    }

    /// `UPDATE_IOTLB`: drops what overlaps `start..=last` and maps what the
    /// kernel has there now, then publishes once.
    pub fn update(&mut self, dev: &dyn VduseDevice, start: u64, last: u64) {
        self.regions.retain(|r| r.last < start || r.start > last);
        self.fetch_into(dev, start, last);
        self.publish();
    }

    /// Maps every region the kernel has in `start..=last` (at `DRIVER_OK`).
    pub fn fetch(&mut self, dev: &dyn VduseDevice, start: u64, last: u64) {
        self.fetch_into(dev, start, last);
        self.publish();
    }

    fn fetch_into(&mut self, dev: &dyn VduseDevice, start: u64, last: u64) {
        let mut cursor = start;
        while cursor <= last {
            if self.regions.len() >= MAX_REGIONS {
                log::warn!(
                    "vduse {}: more than {MAX_REGIONS} IOTLB regions; the rest stay unmapped",
                    dev.name()
                );
                return;
            }
            let (file, entry) = match dev.iotlb_fd(cursor, last) {
                Ok(Some(found)) => found,
                Ok(None) => return,
                Err(e) => {
                    log::warn!("vduse {}: VDUSE_IOTLB_GET_FD {cursor:#x}: {e}", dev.name());
                    return;
                }
            };
            // The kernel returns the first region overlapping the range; one
            // that does not (or is malformed) would make us loop.
            if entry.start > entry.last || entry.last < cursor || entry.start > last {
                log::warn!(
                    "vduse {}: IOTLB answered {:#x}..={:#x} for {cursor:#x}..={last:#x}; ignored",
                    dev.name(),
                    entry.start,
                    entry.last
                );
                return;
            }
            match map_region(file, &entry) {
                Ok(r) => self.insert(r),
                Err(why) => log::warn!(
                    "vduse {}: IOTLB region {:#x}..={:#x} not mapped: {why}",
                    dev.name(),
                    entry.start,
                    entry.last
                ),
            }
            match entry.last.checked_add(1) {
                Some(next) => cursor = next,
                None => return,
            }
        }
    }

    /// Adds `r`, replacing any region it overlaps (the kernel's newest
    /// answer wins).
    fn insert(&mut self, r: Region) {
        self.regions
            .retain(|x| x.last < r.start || x.start > r.last);
        let at = self.regions.partition_point(|x| x.start < r.start);
        self.regions.insert(at, r);
    }

    fn publish(&mut self) {
        let map = if self.regions.is_empty() {
            GuestMemoryMmap::new()
        } else {
            match GuestMemoryMmap::from_arc_regions(
                self.regions.iter().map(|r| r.mapping.clone()).collect(),
            ) {
                Ok(m) => m,
                Err(e) => {
                    // Regions are kept sorted and disjoint, so this means a
                    // bug; serve nothing rather than a wrong map.
                    log::error!("vduse: cannot build the IOVA map: {e}");
                    self.regions.clear();
                    GuestMemoryMmap::new()
                }
            }
        };
        let spans = self
            .regions
            .iter()
            .map(|r| (r.start, r.last, r.access))
            .collect();
        let mem = IovaMemory { map, spans };
        match self.atomic.lock() {
            Ok(guard) => guard.replace(mem),
            Err(p) => p.into_inner().replace(mem),
        }
    }
}

/// Maps one region from its fd.
fn map_region(file: File, e: &IotlbEntry) -> Result<Region, String> {
    let (access, prot) = access_of(e.perm).ok_or_else(|| format!("bad permission {}", e.perm))?;
    let size = e
        .last
        .checked_sub(e.start)
        .and_then(|n| n.checked_add(1))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or("region too large")?;
    let mapping = MmapRegionBuilder::new(size)
        .with_file_offset(FileOffset::new(file, e.offset))
        .with_mmap_prot(prot)
        .with_mmap_flags(libc::MAP_SHARED)
        .build()
        .map_err(|err| err.to_string())?;
    let region =
        GuestRegionMmap::new(mapping, GuestAddress(e.start)).ok_or("region wraps around")?;
    Ok(Region {
        start: e.start,
        last: e.last,
        access,
        mapping: Arc::new(region),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(v: &[(u64, u64, Permissions)]) -> IovaMemory {
        IovaMemory {
            map: GuestMemoryMmap::new(),
            spans: v.to_vec(),
        }
    }

    #[test]
    fn access_is_checked_across_regions() {
        let m = spans(&[
            (0x1000, 0x1fff, Permissions::ReadWrite),
            (0x2000, 0x2fff, Permissions::Read),
            (0x4000, 0x4fff, Permissions::Write),
        ]);
        assert!(m.allows(0x1800, 0x1000, Permissions::Read));
        assert!(!m.allows(0x1800, 0x1000, Permissions::Write));
        assert!(m.allows(0x1000, 0x1000, Permissions::Write));
        // A hole between regions.
        assert!(!m.allows(0x2800, 0x2000, Permissions::Read));
        assert!(m.allows(0x4000, 1, Permissions::Write));
        assert!(!m.allows(0x4000, 1, Permissions::Read));
        assert!(!m.allows(0x0fff, 2, Permissions::Read));
        assert!(!m.allows(u64::MAX, 2, Permissions::Read));
        assert!(m.allows(0x9999, 0, Permissions::Write));
    }
}
