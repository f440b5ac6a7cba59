//! The registered buffer arena of an iothread.
//!
//! At ring setup, one page-aligned region is split into equal slots and
//! registered with `IORING_REGISTER_BUFFERS`, one iovec per slot. Requests up
//! to a slot's size take a slot ([`take`]); the slot returns when its [`Buf`]
//! is dropped. The region's size comes from `RLIMIT_MEMLOCK` (io_uring
//! charges registered memory to it unless the process has `CAP_IPC_LOCK`):
//! when the limit leaves no room or registration fails, the iothread logs a
//! line and every buffer comes from the heap instead.
//!
//! # Safety
//!
//! The arena's memory is never freed while a slot is out: a slot dropped on
//! another thread (which cannot return it) is leaked, and at thread exit the
//! region is freed only if every slot came back.

use std::alloc::{self, Layout};
use std::cell::{Cell, RefCell};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use io_uring::Submitter;

use super::Buf;

/// Size of one slot: covers 4 KiB to 64 KiB requests, the hot sizes.
pub(crate) const SLOT: usize = 64 * 1024;
/// Upper bound of an arena when memory is not limited.
const MAX_ARENA: usize = 16 << 20;
/// Iothreads that may share the memlock budget of an unprivileged process.
const BUDGET_SHARE: usize = 4;

static NEXT_ARENA: AtomicU32 = AtomicU32::new(1);

struct Arena {
    id: u32,
    base: NonNull<u8>,
    layout: Layout,
    free: Vec<u16>,
    slots: usize,
}

thread_local! {
    static ARENA: RefCell<Option<Arena>> = const { RefCell::new(None) };
    static ARENA_ID: Cell<u32> = const { Cell::new(0) };
}

fn budget() -> usize {
    if nix::unistd::Uid::effective().is_root() {
        return MAX_ARENA;
    }
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK) {
        Ok((soft, _)) if soft == nix::sys::resource::RLIM_INFINITY => MAX_ARENA,
        Ok((soft, _)) => ((soft as usize) / BUDGET_SHARE).min(MAX_ARENA),
        Err(_) => 0,
    }
}

/// Allocates and registers this thread's arena on `ring`.
pub(crate) fn init(submitter: Submitter<'_>) {
    let slots = (budget() / SLOT).min(u16::MAX as usize);
    if slots == 0 {
        log::info!("registered buffers: RLIMIT_MEMLOCK leaves no room; using unregistered buffers");
        return;
    }
    let Ok(layout) = Layout::from_size_align(slots * SLOT, 4096) else {
        return;
    };
    // SAFETY: non-zero size.
    let raw = unsafe { alloc::alloc_zeroed(layout) };
    let Some(base) = NonNull::new(raw) else {
        log::info!(
            "registered buffers: cannot allocate {} bytes; using unregistered buffers",
            layout.size()
        );
        return;
    };
    let iov: Vec<libc::iovec> = (0..slots)
        .map(|i| libc::iovec {
            // SAFETY: i * SLOT < slots * SLOT, inside the allocation.
            iov_base: unsafe { base.as_ptr().add(i * SLOT) } as *mut libc::c_void,
            iov_len: SLOT,
        })
        .collect();
    // SAFETY: the iovecs cover memory this arena owns and keeps until the
    // thread exits (after the ring is gone, see the module's Safety).
    match unsafe { submitter.register_buffers(&iov) } {
        Ok(()) => {
            let id = NEXT_ARENA.fetch_add(1, Ordering::Relaxed);
            log::debug!("registered buffers: {slots} x {SLOT} bytes");
            ARENA_ID.with(|c| c.set(id));
            ARENA.with(|a| {
                *a.borrow_mut() = Some(Arena {
                    id,
                    base,
                    layout,
                    free: (0..slots as u16).rev().collect(),
                    slots,
                })
            });
        }
        Err(e) => {
            log::info!("registered buffers unavailable ({e}); using unregistered buffers");
            // SAFETY: allocated above with this layout, never handed out.
            unsafe { alloc::dealloc(base.as_ptr(), layout) };
        }
    }
}

/// A slot for a request of `len` bytes, if one is free.
pub(crate) fn take(len: usize) -> Option<Buf> {
    if len > SLOT {
        return None;
    }
    ARENA.with(|a| {
        let mut a = a.borrow_mut();
        let arena = a.as_mut()?;
        let index = arena.free.pop()?;
        // SAFETY: index < slots, so the slot lies inside the allocation.
        let ptr =
            unsafe { NonNull::new_unchecked(arena.base.as_ptr().add(usize::from(index) * SLOT)) };
        // SAFETY: the slot is page-aligned, initialised (zeroed at allocation,
        // then only written through Bufs), and was free.
        Some(unsafe { Buf::from_fixed(ptr, SLOT, arena.id, index) })
    })
}

/// True when `arena` is this thread's arena.
pub(crate) fn is_current(arena: u32) -> bool {
    ARENA_ID.with(|c| c.get()) == arena
}

/// Returns a slot (from `Buf::drop`).
pub(crate) fn release(arena: u32, index: u16) {
    let returned = ARENA.try_with(|a| {
        let Ok(mut a) = a.try_borrow_mut() else {
            return false;
        };
        match a.as_mut() {
            Some(ar) if ar.id == arena => {
                ar.free.push(index);
                true
            }
            _ => false,
        }
    });
    if !matches!(returned, Ok(true)) {
        log::debug!("registered buffer slot {index} dropped off its iothread; leaked");
    }
}

/// Frees the arena at thread exit if every slot came back.
pub(crate) fn teardown() {
    ARENA.with(|a| {
        let mut a = a.borrow_mut();
        if let Some(ar) = a.take() {
            if ar.free.len() == ar.slots {
                // SAFETY: allocated in init with this layout; no slot is out.
                unsafe { alloc::dealloc(ar.base.as_ptr(), ar.layout) };
            } else {
                log::debug!(
                    "registered arena: {} slots still out at exit; leaked",
                    ar.slots - ar.free.len()
                );
            }
        }
    });
    ARENA_ID.with(|c| c.set(0));
}
