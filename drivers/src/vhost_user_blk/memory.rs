//! The frontend's memory table: regions mapped from the fds it sends
//! (`SET_MEM_TABLE`, `ADD_MEM_REG`, `REM_MEM_REG`), the guest-memory map
//! built from them, and the translation of ring addresses, which the
//! frontend gives in its own virtual address space, to guest-physical ones.
//!
//! Every change builds a new `GuestMemoryMmap` and publishes it through a
//! `GuestMemoryAtomic`; queues load the current map per batch, and requests
//! in flight keep the map they started with (and so its mappings) alive.

use std::fs::File;
use std::sync::Arc;

use vhost::vhost_user::message::VhostUserMemoryRegion;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap, GuestRegionMmap};

/// Most regions a frontend may add (`GET_MAX_MEM_SLOTS`; QEMU's limit).
pub const MAX_MEM_SLOTS: u64 = 509;

/// One mapped region and where it sits in each address space.
#[derive(Clone)]
struct Region {
    guest_phys: u64,
    size: u64,
    user_addr: u64,
    mapping: Arc<GuestRegionMmap>,
}

/// Why a memory-table message is refused.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// mmap of the frontend's fd failed.
    #[error("cannot map guest memory region at {guest_phys:#x} ({size} bytes): {source}")]
    Map {
        /// Guest-physical start.
        guest_phys: u64,
        /// Length.
        size: u64,
        /// vm-memory's error.
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    /// The regions overlap, or none is left.
    #[error("bad guest memory layout: {0}")]
    Layout(#[from] vm_memory::GuestRegionCollectionError),
    /// Too many regions, a zero-sized one, or a region not found for removal.
    #[error("{0}")]
    Invalid(&'static str),
}

/// The memory table of one frontend connection.
pub struct MemoryTable {
    regions: Vec<Region>,
    atomic: GuestMemoryAtomic<GuestMemoryMmap>,
}

impl MemoryTable {
    /// No memory yet.
    pub fn new() -> MemoryTable {
        MemoryTable {
            regions: Vec::new(),
            atomic: GuestMemoryAtomic::new(GuestMemoryMmap::new()),
        }
    }

    /// What queues load their map from.
    pub fn atomic(&self) -> GuestMemoryAtomic<GuestMemoryMmap> {
        self.atomic.clone()
    }

    /// True once a table has been set.
    pub fn is_set(&self) -> bool {
        !self.regions.is_empty()
    }

    fn map(r: &VhostUserMemoryRegion, file: File) -> Result<Region, MemoryError> {
        if r.memory_size == 0 {
            return Err(MemoryError::Invalid("empty guest memory region"));
        }
        let map_err = |source| MemoryError::Map {
            guest_phys: r.guest_phys_addr,
            size: r.memory_size,
            source,
        };
        let size = usize::try_from(r.memory_size)
            .map_err(|_| MemoryError::Invalid("guest memory region too large"))?;
        let mapping = MmapRegionBuilder::new(size)
            .with_file_offset(FileOffset::new(file, r.mmap_offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_SHARED | libc::MAP_NORESERVE)
            .build()
            .map_err(map_err)?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(r.guest_phys_addr))
            .ok_or(MemoryError::Invalid("guest memory region wraps around"))?;
        Ok(Region {
            guest_phys: r.guest_phys_addr,
            size: r.memory_size,
            user_addr: r.user_addr,
            mapping: Arc::new(region),
        })
    }

    fn publish(&mut self, regions: Vec<Region>) -> Result<(), MemoryError> {
        let mut sorted = regions;
        sorted.sort_by_key(|r| r.guest_phys);
        let map = if sorted.is_empty() {
            GuestMemoryMmap::new()
        } else {
            GuestMemoryMmap::from_arc_regions(sorted.iter().map(|r| r.mapping.clone()).collect())?
        };
        match self.atomic.lock() {
            Ok(guard) => guard.replace(map),
            Err(p) => p.into_inner().replace(map),
        }
        self.regions = sorted;
        Ok(())
    }

    /// `SET_MEM_TABLE`: replaces the whole table.
    pub fn set(
        &mut self,
        regions: &[VhostUserMemoryRegion],
        files: Vec<File>,
    ) -> Result<(), MemoryError> {
        if regions.len() as u64 > MAX_MEM_SLOTS || regions.len() != files.len() {
            return Err(MemoryError::Invalid("bad number of guest memory regions"));
        }
        let mut mapped = Vec::with_capacity(regions.len());
        for (r, f) in regions.iter().zip(files) {
            mapped.push(Self::map(r, f)?);
        }
        self.publish(mapped)
    }

    /// `ADD_MEM_REG`.
    pub fn add(&mut self, r: &VhostUserMemoryRegion, file: File) -> Result<(), MemoryError> {
        if self.regions.len() as u64 >= MAX_MEM_SLOTS {
            return Err(MemoryError::Invalid("no free memory slot"));
        }
        let region = Self::map(r, file)?;
        let mut all = self.regions.clone();
        all.push(region);
        self.publish(all)
    }

    /// `REM_MEM_REG`.
    pub fn remove(&mut self, r: &VhostUserMemoryRegion) -> Result<(), MemoryError> {
        let before = self.regions.len();
        let kept: Vec<Region> = self
            .regions
            .iter()
            .filter(|x| !(x.guest_phys == r.guest_phys_addr && x.size == r.memory_size))
            .cloned()
            .collect();
        if kept.len() == before {
            return Err(MemoryError::Invalid("no such guest memory region"));
        }
        self.publish(kept)
    }

    /// Drops every region (disconnect, `RESET_OWNER`).
    pub fn clear(&mut self) {
        let _ = self.publish(Vec::new());
    }

    /// The guest-physical address of frontend virtual address `va`, when
    /// `va..va+len` lies in one region.
    pub fn va_to_gpa(&self, va: u64, len: u64) -> Option<u64> {
        self.regions.iter().find_map(|r| {
            let off = va.checked_sub(r.user_addr)?;
            let end = off.checked_add(len)?;
            (end <= r.size).then(|| r.guest_phys + off)
        })
    }
}

impl Default for MemoryTable {
    fn default() -> Self {
        MemoryTable::new()
    }
}
