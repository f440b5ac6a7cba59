//! [`GuestIoVecs`]: a request's data segments as iovecs into guest RAM,
//! with the guest-memory map they came from kept alive, so the engine can
//! read and write guest buffers in place (no bounce buffer).
//!
//! # Safety
//!
//! This is the one `unsafe impl` of the driver crate: it tells the engine
//! the iovecs stay valid while the value lives. It holds because the
//! pointers come from `VolatileSlice`s that `get_slices` borrowed from the
//! `M` behind the `Arc` we keep: that `M` is never dropped or mutably
//! borrowed while we hold the `Arc`, so the borrow the slices depend on
//! could last as long as we do. A memory-table change builds a new map and
//! leaves this one (and its mappings) alive until the last request on it
//! is done.

use std::sync::Arc;

use engine::buf::IoVecBuf;
use vm_memory::GuestMemory;

/// Iovecs into guest memory plus the map that keeps them valid.
pub struct GuestIoVecs<M: GuestMemory> {
    iov: Vec<libc::iovec>,
    _mem: Arc<M>,
}

impl<M: GuestMemory> GuestIoVecs<M> {
    /// Iovecs translated from guest addresses in `mem` (by the request
    /// parser, which looks each descriptor up once).
    ///
    /// # Safety
    ///
    /// Every iovec must lie inside a `VolatileSlice` that `mem`'s
    /// `get_slices` returned, with the access the I/O needs (writable for
    /// reads into it).
    pub unsafe fn from_translated(mem: Arc<M>, iov: Vec<libc::iovec>) -> GuestIoVecs<M> {
        GuestIoVecs { iov, _mem: mem }
    }
}

// SAFETY: see the module's `# Safety`: the pointers come from slices of
// the `M` we keep alive and shared in `_mem` (`from_translated`'s contract), the guest memory is only
// ever reached through raw pointers (the kernel, volatile accesses), and
// the iovec array lives on the heap in `iov`, which never changes.
unsafe impl<M: GuestMemory + 'static> IoVecBuf for GuestIoVecs<M> {
    fn iovecs(&self) -> &[libc::iovec] {
        &self.iov
    }
}
