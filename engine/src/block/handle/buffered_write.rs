//! How a small write to a buffered (page-cache) file is issued.
//!
//! ext4 in this kernel has no non-blocking buffered writes, so io_uring
//! cannot complete one inline: it first tries (and fails) a `RWF_NOWAIT`
//! attempt, then punts the write to an `iou-wrk` worker, and io-wq
//! serialises the buffered writes to one inode on one worker. The choices,
//! measured on the benches' page-cache randwrite rows (see
//! `benches/README.md`, "Where the time goes"), are selected with
//! `RINGSTOR_BUFFERED_WRITES`:
//!
//! * `ring` — a plain io_uring write (punted as above);
//! * `async` — the same with `IOSQE_ASYNC`: straight to the worker;
//! * `inline` (the default) — `pwrite` on the iothread for writes up to
//!   [`INLINE_MAX`] without FUA: a page-cache copy costs less than a worker
//!   hand-off and its wake-ups. Writes with `RWF_DSYNC` (FUA,
//!   writethrough) always go through the ring, since they wait for the
//!   disk. An inline write that blocks (the kernel throttles a writer when
//!   too much of the page cache is dirty) stalls every request of the
//!   iothread, so one that takes longer than [`STALL`] sends this thread's
//!   writes back to the ring for [`BACKOFF`].

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use io_uring::squeue;

use crate::buf::{iovec, Buf, BufResult, IoVecBuf};
use crate::op::{self, SharedFd};

/// Buffered writes at most this long may be written inline.
pub(crate) const INLINE_MAX: usize = 64 * 1024;

/// The issuing strategy; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Ring,
    Async,
    Inline,
}

/// The default, by measurement: over six A/B pairs of the benches' NBD
/// page-cache rows (2026-12-02; figures and spread in `benches/README.md`,
/// "Buffered writes, measured choices") `inline` led `ring` on 4k
/// randwrite qd1, qd32 and randrw70, though one pair went the other way.
/// ext4 spends the same ~25 us on a write whoever issues it, so the worker
/// hand-off and its wake-ups are overhead on top.
const DEFAULT: Mode = Mode::Inline;

/// An inline write slower than this was throttled or waited for I/O.
const STALL: Duration = Duration::from_millis(1);
/// How long writes go through the ring after a stall.
const BACKOFF: Duration = Duration::from_millis(100);

thread_local! {
    /// Until when this iothread writes through the ring (after a stall).
    static RING_UNTIL: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Whether this iothread may write inline now.
fn inline_allowed() -> bool {
    match RING_UNTIL.with(Cell::get) {
        None => true,
        Some(t) if Instant::now() >= t => {
            RING_UNTIL.with(|c| c.set(None));
            true
        }
        Some(_) => false,
    }
}

/// Runs one inline write; one that stalled the iothread (past [`STALL`])
/// sends the writes after it to the ring for [`BACKOFF`].
fn timed_inline<T>(write: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let r = write();
    let took = start.elapsed();
    if took > STALL {
        log::debug!("inline buffered write took {took:?}; using the ring for a while");
        RING_UNTIL.with(|c| c.set(Some(start + took + BACKOFF)));
    }
    r
}

fn mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(
        || match std::env::var("RINGSTOR_BUFFERED_WRITES").as_deref() {
            Ok("ring") => Mode::Ring,
            Ok("async") => Mode::Async,
            Ok("inline") => Mode::Inline,
            _ => DEFAULT,
        },
    )
}

/// Writes `buf[from..]` at `offset`; `page_cache` says `fd` is buffered.
pub(crate) async fn write_at(
    fd: &SharedFd,
    buf: Buf,
    from: usize,
    offset: u64,
    rw_flags: i32,
    page_cache: bool,
) -> BufResult<usize, Buf> {
    let len = buf.len().saturating_sub(from);
    if !page_cache || rw_flags != 0 {
        return op::write_at(fd, buf, from, offset, rw_flags).await;
    }
    match mode() {
        Mode::Inline if len <= INLINE_MAX && inline_allowed() => {
            (timed_inline(|| pwrite(fd, &buf, from, offset)), buf)
        }
        Mode::Async => {
            op::write_at_flags(fd, buf, from, len, offset, 0, squeue::Flags::ASYNC).await
        }
        _ => op::write_at(fd, buf, from, offset, 0).await,
    }
}

/// [`write_at`] for memory described by iovecs (a guest's buffers):
/// writes `bufs` after its first `skip` bytes at `offset`, by the same
/// strategy.
pub(crate) async fn writev_at<B: IoVecBuf + Unpin>(
    fd: &SharedFd,
    bufs: B,
    skip: usize,
    offset: u64,
    rw_flags: i32,
    page_cache: bool,
) -> BufResult<usize, B> {
    if !page_cache || rw_flags != 0 {
        return op::writev_at(fd, bufs, skip, offset, rw_flags).await;
    }
    let len = bufs.total_len().saturating_sub(skip);
    match mode() {
        Mode::Inline if len <= INLINE_MAX && inline_allowed() => {
            (timed_inline(|| pwritev(fd, &bufs, skip, offset)), bufs)
        }
        Mode::Async => op::writev_at_flags(fd, bufs, skip, offset, 0, squeue::Flags::ASYNC).await,
        _ => op::writev_at(fd, bufs, skip, offset, 0).await,
    }
}

fn pwritev<B: IoVecBuf>(
    fd: &SharedFd,
    bufs: &B,
    skip: usize,
    offset: u64,
) -> std::io::Result<usize> {
    let Ok(off) = libc::off_t::try_from(offset) else {
        return Err(std::io::Error::from_raw_os_error(libc::EFBIG));
    };
    // `_rest` owns the skipped-into copy of the array when there is one.
    let (_rest, iov, n) = iovec::sqe_iovecs(bufs.iovecs(), skip);
    // SAFETY: `iov` points at `n` iovecs in `_rest` or in `bufs`, both alive
    // for the call; they point into memory `bufs` keeps mapped and readable
    // for as long as it lives (IoVecBuf's contract); the kernel only reads it.
    let n = unsafe { libc::pwritev(fd.raw(), iov, n as libc::c_int, off) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn pwrite(fd: &SharedFd, buf: &Buf, from: usize, offset: u64) -> std::io::Result<usize> {
    let Some(data) = buf.as_slice().get(from..) else {
        return Ok(0);
    };
    let Ok(off) = libc::off_t::try_from(offset) else {
        return Err(std::io::Error::from_raw_os_error(libc::EFBIG));
    };
    // SAFETY: `data` is initialised memory owned by `buf`, borrowed for the
    // whole call; the kernel only reads it.
    let n = unsafe { libc::pwrite(fd.raw(), data.as_ptr().cast(), data.len(), off) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
