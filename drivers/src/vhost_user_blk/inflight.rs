//! `VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD`: a shared-memory log of the
//! requests in flight, in libvhost-user's split-ring layout, which the
//! frontend keeps across a backend restart and hands to the next backend
//! (`SET_INFLIGHT_FD`) so it can resubmit what was lost.
//!
//! Per queue, `queue_region_len(size)` bytes:
//!
//! ```text
//!  0  u64 features   8  u16 version   10 u16 desc_num
//!  12 u16 last_batch_head             14 u16 used_idx
//!  16 + 16*i: desc[i] { u8 inflight, u8 pad[5], u16 next, u64 counter }
//! ```
//!
//! A request is marked in flight when its chain is taken from the avail
//! ring and cleared after its used entry is written; `last_batch_head` is
//! set before the used entry so a crash between the two can be undone.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use crate::virtio_blk::InflightLog;

/// libvhost-user's `INFLIGHT_VERSION`.
const VERSION: u16 = 1;
/// libvhost-user's `INFLIGHT_ALIGNMENT`.
const ALIGN: u64 = 64;
const HEADER: u64 = 16;
const DESC: u64 = 16;

/// Bytes of one queue's part (libvhost-user's `vu_inflight_queue_size`).
pub fn queue_region_len(queue_size: u16) -> u64 {
    (DESC * u64::from(queue_size) + 2).div_ceil(ALIGN) * ALIGN
}

/// Why the inflight region could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InflightError {
    /// memfd_create or ftruncate failed.
    #[error("cannot create the inflight region: {0}")]
    Create(#[source] std::io::Error),
    /// mmap failed or the layout is impossible.
    #[error("cannot map the inflight region: {0}")]
    Map(String),
}

/// A mapped inflight region.
pub struct InflightRegion {
    mem: GuestMemoryMmap,
    queue_size: u16,
    num_queues: u16,
    counters: Vec<AtomicU64>,
}

impl InflightRegion {
    /// `GET_INFLIGHT_FD`: a fresh zeroed region and its fd.
    pub fn create(
        num_queues: u16,
        queue_size: u16,
    ) -> Result<(InflightRegion, File, u64), InflightError> {
        let len = queue_region_len(queue_size) * u64::from(num_queues);
        let fd = nix::sys::memfd::memfd_create(
            c"ringstor-inflight",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .map_err(|e| InflightError::Create(e.into()))?;
        let file = File::from(fd);
        file.set_len(len).map_err(InflightError::Create)?;
        let dup = file.try_clone().map_err(InflightError::Create)?;
        let r = Self::map(file, 0, len, num_queues, queue_size)?;
        for q in 0..num_queues {
            r.init_queue(q);
        }
        Ok((r, dup, len))
    }

    /// `SET_INFLIGHT_FD`: maps a region the frontend kept.
    pub fn map(
        file: File,
        offset: u64,
        len: u64,
        num_queues: u16,
        queue_size: u16,
    ) -> Result<InflightRegion, InflightError> {
        if num_queues == 0
            || queue_size == 0
            || len < queue_region_len(queue_size) * u64::from(num_queues)
        {
            return Err(InflightError::Map("region smaller than its queues".into()));
        }
        let size = usize::try_from(len).map_err(|_| InflightError::Map("too large".into()))?;
        let mapping = MmapRegionBuilder::new(size)
            .with_file_offset(FileOffset::new(file, offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_SHARED)
            .build()
            .map_err(|e| InflightError::Map(e.to_string()))?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(0))
            .ok_or_else(|| InflightError::Map("bad region".into()))?;
        let mem = GuestMemoryMmap::from_regions(vec![region])
            .map_err(|e| InflightError::Map(e.to_string()))?;
        Ok(InflightRegion {
            mem,
            queue_size,
            num_queues,
            counters: (0..num_queues).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    fn base(&self, queue: u16) -> u64 {
        queue_region_len(self.queue_size) * u64::from(queue)
    }

    fn init_queue(&self, queue: u16) {
        let b = self.base(queue);
        let _ = self.mem.write_obj(VERSION, GuestAddress(b + 8));
        let _ = self.mem.write_obj(self.queue_size, GuestAddress(b + 10));
    }

    /// Heads of `queue` a previous backend left in flight, oldest first,
    /// after undoing a completion cut short between the used entry and the
    /// log (`used_idx` is the used index the ring shows now). Marks the
    /// region initialised when it is new.
    pub fn take_resubmits(&self, queue: u16, used_idx: u16) -> Vec<u16> {
        if queue >= self.num_queues {
            return Vec::new();
        }
        let b = self.base(queue);
        let version: u16 = self.mem.read_obj(GuestAddress(b + 8)).unwrap_or(0);
        if version == 0 {
            self.init_queue(queue);
            return Vec::new();
        }
        let logged: u16 = self.mem.read_obj(GuestAddress(b + 14)).unwrap_or(used_idx);
        if logged != used_idx {
            let last: u16 = self.mem.read_obj(GuestAddress(b + 12)).unwrap_or(0);
            if last < self.queue_size {
                let _ = self
                    .mem
                    .write_obj(0u8, GuestAddress(b + HEADER + DESC * u64::from(last)));
            }
            let _ = self.mem.write_obj(used_idx, GuestAddress(b + 14));
        }
        let mut heads: Vec<(u64, u16)> = (0..self.queue_size)
            .filter_map(|i| {
                let at = b + HEADER + DESC * u64::from(i);
                let flag: u8 = self.mem.read_obj(GuestAddress(at)).ok()?;
                let counter: u64 = self.mem.read_obj(GuestAddress(at + 8)).ok()?;
                (flag == 1).then_some((counter, i))
            })
            .collect();
        heads.sort_unstable();
        let max = heads.last().map_or(0, |h| h.0);
        if let Some(c) = self.counters.get(queue as usize) {
            c.store(max, Ordering::Relaxed);
        }
        heads.into_iter().map(|(_, h)| h).collect()
    }

    fn desc_at(&self, queue: u16, head: u16) -> Option<u64> {
        (queue < self.num_queues && head < self.queue_size)
            .then(|| self.base(queue) + HEADER + DESC * u64::from(head))
    }
}

impl InflightLog for InflightRegion {
    fn begin(&self, queue: u16, head: u16) {
        let Some(at) = self.desc_at(queue, head) else {
            return;
        };
        let n = self.counters[queue as usize].fetch_add(1, Ordering::Relaxed) + 1;
        let _ = self.mem.write_obj(n, GuestAddress(at + 8));
        let _ = self.mem.write_obj(1u8, GuestAddress(at));
    }

    fn completing(&self, queue: u16, head: u16) {
        if self.desc_at(queue, head).is_some() {
            let _ = self
                .mem
                .write_obj(head, GuestAddress(self.base(queue) + 12));
        }
    }

    fn end(&self, queue: u16, head: u16, next_used: u16) {
        let Some(at) = self.desc_at(queue, head) else {
            return;
        };
        let _ = self.mem.write_obj(0u8, GuestAddress(at));
        std::sync::atomic::fence(Ordering::Release);
        let _ = self
            .mem
            .write_obj(next_used, GuestAddress(self.base(queue) + 14));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resubmits_what_was_left_in_flight_oldest_first() {
        let (r, file, len) = InflightRegion::create(2, 16).expect("create");
        assert_eq!(len, 2 * queue_region_len(16));
        // Queue 1: heads 5, 3, 9 taken in that order; 3 completed (used idx 1).
        for h in [5, 3, 9] {
            r.begin(1, h);
        }
        r.completing(1, 3);
        r.end(1, 3, 1);
        // A new backend maps the same fd and sees 5 then 9 to resubmit.
        let again = InflightRegion::map(file, 0, len, 2, 16).expect("map");
        assert_eq!(again.take_resubmits(1, 1), vec![5, 9]);
        assert!(again.take_resubmits(0, 0).is_empty());
        // Cut between the used entry and the log: the ring shows used idx 2
        // after head 9 completed, the log still says 1 with 9 in flight.
        again.completing(1, 9);
        assert_eq!(again.take_resubmits(1, 2), vec![5]);
        // Out-of-range queues and heads are ignored, never a panic.
        again.begin(7, 1);
        again.end(1, 999, 0);
        assert!(again.take_resubmits(9, 0).is_empty());
    }
}
