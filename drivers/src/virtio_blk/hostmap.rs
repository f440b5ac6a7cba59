//! [`HostMap`]: where each region of a guest-memory map sits in this
//! process, for the lookups of the request path (descriptors, header,
//! data, status byte).
//!
//! vm-memory's `read_obj` and `get_slices` find the region, build a
//! `VolatileSlice` and iterate over its pieces for every access; with
//! about ten accesses per 4 KiB read, that was 11-13 % of the iothread's
//! time serving guest reads from the page cache (benches/README, "Where
//! the time goes"). A request touches one or two regions, so the table
//! keeps the region of the last hit and checks it first; a range that
//! crosses regions, or a map behind an IOMMU, misses here and the caller
//! takes vm-memory's checked path, which is the reference behaviour.
//!
//! # Safety
//!
//! The host addresses are those of the map the table was built from and
//! are valid only while that map (the `Arc<M>` the caller keeps beside the
//! table) lives. [`HostMap::get`] bounds-checks every range against a
//! region, so a pointer it returns covers `len` mapped bytes.

use std::cell::Cell;

use vm_memory::{GuestMemory, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

/// One region: guest-physical `[start, start + len)` at `host`.
#[derive(Debug, Clone, Copy)]
struct HostRegion {
    start: u64,
    len: u64,
    host: *mut u8,
}

/// The regions of one guest-memory map and their host addresses.
#[derive(Debug, Default)]
pub struct HostMap {
    regions: Vec<HostRegion>,
    /// Index of the region of the last hit.
    last: Cell<usize>,
}

impl HostMap {
    /// The table of `mem`. Empty, so that every lookup misses, when `mem`
    /// translates through an IOMMU or a region has no host mapping.
    pub fn new<M: GuestMemory + ?Sized>(mem: &M) -> HostMap {
        let Some(phys) = mem.physical_memory() else {
            return HostMap::default();
        };
        let mut regions = Vec::new();
        for r in phys.iter() {
            let Ok(host) = r.get_host_address(MemoryRegionAddress(0)) else {
                return HostMap::default();
            };
            regions.push(HostRegion {
                start: r.start_addr().0,
                len: r.len(),
                host,
            });
        }
        HostMap {
            regions,
            last: Cell::new(0),
        }
    }

    /// The host address of the `len` (> 0) bytes at guest-physical `addr`,
    /// when all of them lie in one region.
    #[inline]
    pub fn get(&self, addr: u64, len: u64) -> Option<*mut u8> {
        let hit = |r: &HostRegion| {
            let off = addr.checked_sub(r.start)?;
            // off < r.len, so the subtraction cannot wrap.
            (len > 0 && off < r.len && len <= r.len - off)
                .then(|| r.host.wrapping_add(off as usize))
        };
        if let Some(p) = self.regions.get(self.last.get()).and_then(hit) {
            return Some(p);
        }
        let (i, p) = self
            .regions
            .iter()
            .enumerate()
            .find_map(|(i, r)| hit(r).map(|p| (i, p)))?;
        self.last.set(i);
        Some(p)
    }
}

/// Copies `out.len()` bytes of guest memory at `src` into `out`, one
/// volatile load per byte (the guest may write them meanwhile).
///
/// # Safety
///
/// `src..src + out.len()` must be mapped and readable for the call.
pub unsafe fn read_volatile_bytes(src: *const u8, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        // SAFETY: i < out.len(), inside the range the caller vouches for.
        *b = unsafe { std::ptr::read_volatile(src.add(i)) };
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    use super::*;

    #[test]
    fn ranges_inside_one_region_hit_and_others_miss() {
        let m = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x1000), 0x1000),
            (GuestAddress(0x10_0000), 0x2000),
        ])
        .expect("guest memory");
        let h = HostMap::new(&m);
        m.write_obj(0xA5u8, GuestAddress(0x10_1fff)).expect("write");
        let p = h.get(0x10_1fff, 1).expect("last byte of a region");
        let mut b = [0u8];
        // SAFETY: `get` vouched for one mapped byte of `m`, which lives.
        unsafe { read_volatile_bytes(p, &mut b) };
        assert_eq!(b[0], 0xA5);
        assert!(h.get(0x800, 0x800).is_some(), "up to a region's end");
        assert!(h.get(0x800, 0x801).is_none(), "across two regions");
        assert!(h.get(0x2000, 1).is_none(), "in the hole");
        assert!(h.get(0x10_2000, 1).is_none(), "past the end");
        assert!(h.get(0x10_0000, 0).is_none(), "nothing to map");
        assert!(h.get(u64::MAX, u64::MAX).is_none(), "no overflow");
        assert!(h.get(0x10_0001, u64::MAX).is_none(), "no overflow");
        // The last hit is tried first, then the others.
        assert!(h.get(0x0, 16).is_some());
        assert!(h.get(0x1010, 16).is_some());
    }
}
