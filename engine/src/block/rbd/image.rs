//! [`LocalImage`]: one iothread's image handle, and how librbd's
//! completions come back to that iothread.
//!
//! # Completion bridge
//!
//! ```text
//!  request task ── rbd_aio_*(.., completion(arg = Rc<Slot>)) ──► librbd
//!       ▲ wake                                                  │ its threads
//!  pump task ◄── POLL_ADD(eventfd) in this iothread's ring ◄── eventfd write
//!       └─ rbd_poll_io_events → Slot.result, waker.wake()
//! ```
//!
//! `rbd_set_image_notification` makes librbd queue every finished
//! completion of the image on its own lock-free queue and write the
//! eventfd (QEMU's rbd driver did the same before 6.1). The pump task polls
//! that eventfd in the ring like any socket, drains the queue with
//! `rbd_poll_io_events` and wakes the request tasks: everything of ours
//! stays on the iothread (`Rc`, `Cell`), with no lock and no hand-off.
//!
//! # Buffers
//!
//! A request's buffer lives in its [`Slot`], which librbd holds (as the
//! completion's argument) until the pump takes it back; a request task
//! dropped early leaves the buffer there, so librbd never writes freed
//! memory.

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::cluster::{Cluster, Image};
use super::sys::{self, CompletionT};
use crate::block::error::{BlockError, BlockResult};
use crate::block::status::BlockStatus;
use crate::buf::Buf;
use crate::op::{self, SharedFd};

/// Completions taken per `rbd_poll_io_events` call.
const POLL_BATCH: usize = 64;

/// One request in librbd's hands.
struct Slot {
    result: Cell<Option<isize>>,
    waker: Cell<Option<Waker>>,
    buf: Cell<Option<Buf>>,
}

struct Inner {
    cluster: Arc<Cluster>,
    /// `None` once closed by the pump.
    image: RefCell<Option<Image>>,
    efd: SharedFd,
    in_flight: Cell<usize>,
    /// The owner is gone: close once nothing is in flight.
    closing: Cell<bool>,
    diff: bool,
}

/// One iothread's handle on an rbd image. See the module docs.
pub(crate) struct LocalImage {
    inner: Rc<Inner>,
}

/// What to ask librbd for.
#[derive(Clone, Copy)]
enum Req {
    Read,
    Write,
    Discard { len: u64 },
    Zeroes { len: u64, unmap: bool },
    Flush,
}

impl LocalImage {
    /// Takes an image handle for this iothread and starts its pump task.
    pub(crate) fn open(cluster: &Arc<Cluster>) -> BlockResult<LocalImage> {
        let image = cluster.take_image()?;
        let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| BlockError::io("rbd eventfd", 0, e.into()))?;
        let raw = std::os::fd::AsRawFd::as_raw_fd(&efd);
        // SAFETY: open image; the fd stays open for as long as the image
        // (the pump closes the image before the last SharedFd goes).
        let r = unsafe {
            (cluster.api.rbd_set_image_notification)(image.ptr, raw, sys::EVENT_TYPE_EVENTFD)
        };
        if r < 0 {
            return Err(BlockError::io(
                "rbd_set_image_notification",
                0,
                sys::err(r.into()),
            ));
        }
        let diff = cluster.diff_usable(&image);
        let inner = Rc::new(Inner {
            cluster: cluster.clone(),
            image: RefCell::new(Some(image)),
            efd: SharedFd::new(OwnedFd::from(efd)),
            in_flight: Cell::new(0),
            closing: Cell::new(false),
            diff,
        });
        crate::iothread::spawn_local(pump(inner.clone()));
        Ok(LocalImage { inner })
    }

    async fn submit(&self, req: Req, offset: u64, buf: Option<Buf>) -> (isize, Option<Buf>) {
        let inner = &self.inner;
        let api = inner.cluster.api;
        let image = match inner.image.borrow().as_ref() {
            Some(i) => i.ptr,
            None => return (-(libc::EIO as isize), buf),
        };
        let (ptr, len) = buf.as_ref().map_or((std::ptr::null_mut(), 0), |b| {
            (b.as_slice().as_ptr() as *mut u8, b.len())
        });
        let slot = Rc::new(Slot {
            result: Cell::new(None),
            waker: Cell::new(None),
            buf: Cell::new(buf),
        });
        let arg = Rc::into_raw(slot.clone()) as *mut c_void;
        let mut c: CompletionT = std::ptr::null_mut();
        // SAFETY: arg is a leaked Rc the pump (or the error path) takes back.
        let r = unsafe { (api.rbd_aio_create_completion)(arg, None, &mut c) };
        if r < 0 {
            // SAFETY: arg came from Rc::into_raw above and librbd did not keep it.
            drop(unsafe { Rc::from_raw(arg as *const Slot) });
            return (r as isize, slot.buf.take());
        }
        // SAFETY: image is open (checked above) and used on this thread only;
        // ptr/len describe the slot's buffer, which stays alive and unmoved
        // (heap memory) until the pump has taken the completion back.
        let r = unsafe {
            match req {
                Req::Read => (api.rbd_aio_read)(image, offset, len, ptr.cast(), c),
                Req::Write => (api.rbd_aio_write)(image, offset, len, ptr.cast(), c),
                Req::Discard { len } => (api.rbd_aio_discard)(image, offset, len, c),
                Req::Zeroes { len, unmap } => {
                    let flags = if unmap { 0 } else { sys::WRITE_ZEROES_THICK };
                    (api.rbd_aio_write_zeroes)(image, offset, len as usize, c, flags, 0)
                }
                Req::Flush => (api.rbd_aio_flush)(image, c),
            }
        };
        if r < 0 {
            // SAFETY: librbd refused the request, so the completion and arg
            // are ours again.
            unsafe {
                (api.rbd_aio_release)(c);
                drop(Rc::from_raw(arg as *const Slot));
            }
            return (r as isize, slot.buf.take());
        }
        inner.in_flight.set(inner.in_flight.get() + 1);
        let result = Wait { slot: &slot }.await;
        (result, slot.buf.take())
    }

    /// Fills `buf` from `offset` (zero-padding a short read, as QEMU).
    pub(crate) async fn read(&self, offset: u64, buf: Buf) -> (BlockResult<()>, Buf) {
        let want = buf.len();
        let (r, b) = self.submit(Req::Read, offset, Some(buf)).await;
        let Some(mut b) = b else {
            return (Err(eio("read", offset)), Buf::with_capacity(0));
        };
        if r < 0 {
            return (Err(BlockError::io("read", offset, sys::err(r as i64))), b);
        }
        if (r as usize) < want {
            b.zero(r as usize..want);
        }
        (Ok(()), b)
    }

    /// Writes `buf` at `offset`; with `fua`, flushes after (librbd has no FUA).
    pub(crate) async fn write(&self, offset: u64, buf: Buf, fua: bool) -> (BlockResult<()>, Buf) {
        let (r, b) = self.submit(Req::Write, offset, Some(buf)).await;
        let Some(b) = b else {
            return (Err(eio("write", offset)), Buf::with_capacity(0));
        };
        if r < 0 {
            return (Err(BlockError::io("write", offset, sys::err(r as i64))), b);
        }
        if fua {
            return (self.flush().await, b);
        }
        (Ok(()), b)
    }

    pub(crate) async fn flush(&self) -> BlockResult<()> {
        check("flush", 0, self.submit(Req::Flush, 0, None).await.0)
    }

    pub(crate) async fn discard(&self, offset: u64, len: u64) -> BlockResult<()> {
        check(
            "discard",
            offset,
            self.submit(Req::Discard { len }, offset, None).await.0,
        )
    }

    /// `rbd_aio_write_zeroes`; without `unmap` the zeroes stay allocated.
    pub(crate) async fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> BlockResult<()> {
        let r = self
            .submit(Req::Zeroes { len, unmap }, offset, None)
            .await
            .0;
        check("write zeroes", offset, r)
    }

    /// Grows or shrinks the image (blocking, like QEMU's `rbd_resize`).
    pub(crate) fn resize(&self, size: u64) -> BlockResult<()> {
        let image = self.inner.image.borrow();
        let Some(img) = image.as_ref() else {
            return Err(eio("resize", size));
        };
        // SAFETY: open image, used on this thread.
        let r = unsafe { (self.inner.cluster.api.rbd_resize)(img.ptr, size) };
        check("resize", size, r as isize)
    }

    /// Allocation of the run at `offset` (at most `max` long), from the
    /// object map as QEMU's `qemu_rbd_co_block_status`: whole objects that
    /// exist are data, others read as zeroes. Without a usable fast-diff
    /// everything is data. `rbd_diff_iterate2` is synchronous (it reads
    /// the object map librbd keeps in memory under the exclusive lock).
    pub(crate) fn block_status(&self, offset: u64, max: u64) -> BlockResult<(BlockStatus, u64)> {
        if !self.inner.diff {
            return Ok((BlockStatus::DATA, max));
        }
        let image = self.inner.image.borrow();
        let Some(img) = image.as_ref() else {
            return Ok((BlockStatus::DATA, max));
        };
        // librbd < 1.17 reports wrong offsets from an unaligned start: start
        // at the object boundary (whole_object answers are object-sized anyway).
        let head = offset % self.inner.cluster.object_size;
        let mut req = Diff {
            offs: offset - head,
            bytes: 0,
            exists: false,
        };
        let len = max + head;
        // SAFETY: open image; the callback only touches `req`, which outlives
        // the synchronous call.
        let r = unsafe {
            (self.inner.cluster.api.rbd_diff_iterate2)(
                img.ptr,
                std::ptr::null(),
                req.offs,
                len,
                1,
                1,
                diff_cb,
                &mut req as *mut Diff as *mut c_void,
            )
        };
        if r < 0 && r != DIFF_STOP {
            return Ok((BlockStatus::DATA, max));
        }
        if !req.exists && r == 0 {
            req.bytes = len;
        }
        let n = req.bytes.min(len).saturating_sub(head).max(1).min(max);
        let st = if req.exists {
            BlockStatus::DATA
        } else {
            BlockStatus::HOLE
        };
        Ok((st, n))
    }
}

impl Drop for LocalImage {
    fn drop(&mut self) {
        // The pump closes the image once nothing is in flight; wake it.
        self.inner.closing.set(true);
        let one = 1u64;
        // SAFETY: writing 8 bytes from a local u64 to our own eventfd.
        let _ =
            unsafe { libc::write(self.inner.efd.raw(), &one as *const u64 as *const c_void, 8) };
    }
}

fn eio(op: &'static str, offset: u64) -> BlockError {
    BlockError::io(op, offset, std::io::Error::from_raw_os_error(libc::EIO))
}

fn check(op: &'static str, offset: u64, r: isize) -> BlockResult<()> {
    if r < 0 {
        Err(BlockError::io(op, offset, sys::err(r as i64)))
    } else {
        Ok(())
    }
}

/// Waits for the pump to fill in the slot's result.
struct Wait<'a> {
    slot: &'a Rc<Slot>,
}

impl Future for Wait<'_> {
    type Output = isize;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<isize> {
        match self.slot.result.get() {
            Some(r) => Poll::Ready(r),
            None => {
                self.slot.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }
}

/// Drains librbd's completion queue whenever the eventfd fires; closes
/// the image once its owner is gone and nothing is in flight.
async fn pump(inner: Rc<Inner>) {
    let api = inner.cluster.api;
    let mut comps = [std::ptr::null_mut::<c_void>(); POLL_BATCH];
    loop {
        loop {
            let n = match inner.image.borrow().as_ref() {
                // SAFETY: open image; comps has room for POLL_BATCH entries.
                Some(img) => unsafe {
                    (api.rbd_poll_io_events)(img.ptr, comps.as_mut_ptr(), POLL_BATCH as i32)
                },
                None => 0,
            };
            let n = n.clamp(0, POLL_BATCH as i32) as usize;
            for &c in comps.iter().take(n) {
                // SAFETY: c is a finished completion librbd handed back; its
                // argument is the Rc<Slot> leaked by submit(), taken back once.
                let slot = unsafe {
                    let arg = (api.rbd_aio_get_arg)(c);
                    let r = (api.rbd_aio_get_return_value)(c);
                    (api.rbd_aio_release)(c);
                    let slot = Rc::from_raw(arg as *const Slot);
                    slot.result.set(Some(r));
                    slot
                };
                inner.in_flight.set(inner.in_flight.get().saturating_sub(1));
                if let Some(w) = slot.waker.take() {
                    w.wake();
                }
            }
            if n < POLL_BATCH {
                break;
            }
        }
        if inner.closing.get() && inner.in_flight.get() == 0 {
            inner.image.borrow_mut().take();
            return;
        }
        if op::poll_readable(&inner.efd).await.is_err() {
            log::error!(
                "rbd {}: completion eventfd failed",
                inner.cluster.description
            );
            return;
        }
        let mut v = 0u64;
        // SAFETY: reading 8 bytes into a local from our non-blocking eventfd
        // (EAGAIN just means someone else's read emptied it).
        let _ = unsafe { libc::read(inner.efd.raw(), &mut v as *mut u64 as *mut c_void, 8) };
    }
}

/// `rbd_diff_iterate2` callback return that stops the walk early.
const DIFF_STOP: i32 = -9000;

struct Diff {
    offs: u64,
    bytes: u64,
    exists: bool,
}

/// Grows the run that starts at `offs` while its allocation stays the
/// same (QEMU's `qemu_rbd_diff_iterate_cb`).
unsafe extern "C" fn diff_cb(offs: u64, len: usize, exists: i32, arg: *mut c_void) -> i32 {
    // SAFETY: arg is the &mut Diff block_status passed, alive for the call.
    let req = unsafe { &mut *(arg as *mut Diff) };
    if exists == 0 {
        return 0;
    }
    if !req.exists && offs > req.offs {
        req.bytes = offs - req.offs;
        return DIFF_STOP;
    }
    if req.exists && offs > req.offs + req.bytes {
        return DIFF_STOP;
    }
    req.bytes += len as u64;
    req.exists = true;
    0
}
