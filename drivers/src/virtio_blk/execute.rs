//! Executing a parsed [`Request`] on a [`BlockHandle`]: bounds and
//! alignment checks, then the I/O straight into or out of guest memory.
//! Returns the status and the bytes written into guest buffers; the queue
//! layer writes the status byte and the used-ring entry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use engine::block::{BlockError, BlockHandle, BlockNode};

use crate::stats::{self, ErrorKind, ExportStats, OpKind};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::hostmap::HostMap;
use super::request::{Request, RequestKind, Segment};
use super::spec::{
    DWZ_SEGMENT_LEN, ID_BYTES, MAX_DWZ_SECTORS, SECTOR_SHIFT, S_IOERR, S_OK, S_UNSUPP,
    WZ_FLAG_UNMAP,
};

/// What every request of one export needs, as the transport decides it
/// (`Send`: built on the control side, opened on the iothread).
#[derive(Debug, Clone)]
pub struct ExecParams {
    /// The node exported.
    pub node: Arc<BlockNode>,
    /// Writes are allowed (else they fail with IOERR, as in QEMU).
    pub writable: bool,
    /// Every write durable before completion; the driver may flip it
    /// through the `writeback` config field (`VIRTIO_BLK_F_CONFIG_WCE`).
    pub writethrough: Arc<AtomicBool>,
    /// Logical block size in bytes (a power of two, at least 512).
    pub block_size: u32,
    /// The GET_ID string (the export id, at most 20 bytes).
    pub id: Vec<u8>,
    /// Where each queue's recorder goes (`query-blockstats` and friends).
    pub stats: Arc<ExportStats>,
}

/// [`ExecParams`] with the node's handle on the current iothread.
pub struct ExecContext {
    /// The node's data path on this iothread.
    pub handle: BlockHandle,
    writable: bool,
    writethrough: Arc<AtomicBool>,
    block_size: u32,
    id: Vec<u8>,
}

impl ExecContext {
    /// Opens the node's handle on this iothread.
    ///
    /// # Panics
    ///
    /// Off an iothread.
    pub fn open(p: ExecParams) -> ExecContext {
        ExecContext {
            handle: BlockHandle::open(&p.node),
            writable: p.writable,
            writethrough: p.writethrough,
            block_size: p.block_size,
            id: p.id,
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// `VIRTIO_BLK_S_*`.
    pub status: u8,
    /// Bytes written into the request's device-writable data buffers.
    pub written: u32,
    /// How the statistics count it.
    pub record: stats::Outcome,
}

impl Outcome {
    /// Success with nothing written into guest buffers.
    fn ok() -> Outcome {
        Outcome::done(0)
    }

    fn done(written: u32) -> Outcome {
        Outcome {
            status: S_OK,
            written,
            record: stats::Outcome::Ok,
        }
    }

    /// A request refused before any I/O.
    pub fn refused(status: u8, kind: ErrorKind) -> Outcome {
        Outcome {
            status,
            written: 0,
            record: stats::Outcome::Invalid(kind),
        }
    }

    fn failed(e: &BlockError) -> Outcome {
        Outcome {
            status: status_of(e),
            written: 0,
            record: stats::Outcome::of_error(e),
        }
    }
}

/// The statistics kind of a request.
pub fn op_kind(k: RequestKind) -> OpKind {
    match k {
        RequestKind::Read => OpKind::Read,
        RequestKind::Write => OpKind::Write,
        RequestKind::Flush => OpKind::Flush,
        RequestKind::Discard => OpKind::Discard,
        RequestKind::WriteZeroes => OpKind::WriteZeroes,
        RequestKind::GetId => OpKind::Other,
    }
}

/// The one mapping from block-layer errors to virtio-blk status.
pub fn status_of(e: &BlockError) -> u8 {
    match e {
        BlockError::NotSupported => S_UNSUPP,
        _ => S_IOERR,
    }
}

/// True when `sector..+len` is inside the device and aligned to the
/// logical block size (QEMU's `virtio_blk_sect_range_ok`).
fn range_ok(ctx: &ExecContext, sector: u64, len: u64) -> bool {
    let bs = u64::from(ctx.block_size);
    let Some(offset) = sector.checked_mul(1 << SECTOR_SHIFT) else {
        return false;
    };
    offset.is_multiple_of(bs)
        && len.is_multiple_of(bs)
        && offset
            .checked_add(len)
            .is_some_and(|end| end <= ctx.handle.size())
}

/// Runs `req` against `ctx.handle`, reading and writing guest memory `mem`.
pub async fn execute<M: GuestMemory + 'static>(
    ctx: &ExecContext,
    mem: &Arc<M>,
    req: Request<M>,
) -> Outcome {
    match req.kind {
        RequestKind::Read => {
            if !range_ok(ctx, req.sector, req.data_len) {
                return Outcome::refused(S_IOERR, ErrorKind::Invalid);
            }
            match ctx.handle.readv(req.sector << SECTOR_SHIFT, req.bufs).await {
                (Ok(()), _) => Outcome::done(req.data_len as u32),
                (Err(e), _) => {
                    log::debug!("virtio-blk: read at sector {}: {e}", req.sector);
                    Outcome::failed(&e)
                }
            }
        }
        RequestKind::Write => {
            if !ctx.writable {
                return Outcome::refused(S_IOERR, ErrorKind::Permission);
            }
            if !range_ok(ctx, req.sector, req.data_len) {
                return Outcome::refused(S_IOERR, ErrorKind::Invalid);
            }
            let fua = ctx.writethrough.load(Ordering::Relaxed);
            match ctx
                .handle
                .writev(req.sector << SECTOR_SHIFT, req.bufs, fua)
                .await
            {
                (Ok(()), _) => Outcome::ok(),
                (Err(e), _) => {
                    log::debug!("virtio-blk: write at sector {}: {e}", req.sector);
                    Outcome::failed(&e)
                }
            }
        }
        RequestKind::Flush => match ctx.handle.flush().await {
            Ok(()) => Outcome::ok(),
            Err(e) => Outcome::failed(&e),
        },
        RequestKind::GetId => {
            let mut id = [0u8; ID_BYTES];
            let n = ctx.id.len().min(ID_BYTES);
            id[..n].copy_from_slice(&ctx.id[..n]);
            let len = (req.data_len as usize).min(ID_BYTES);
            match scatter(&**mem, &req.data, &id[..len]) {
                true => Outcome::done(len as u32),
                false => Outcome::refused(S_IOERR, ErrorKind::Invalid),
            }
        }
        // Boxed: rare, and its future (write-zeroes may fall back to
        // writes) would be part of every request's task.
        RequestKind::Discard | RequestKind::WriteZeroes => {
            Box::pin(discard_or_zero(ctx, &**mem, &req)).await
        }
    }
}

/// DISCARD and WRITE_ZEROES: one 16-byte range segment (`MAX_DWZ_SEG`).
async fn discard_or_zero<M: GuestMemory>(ctx: &ExecContext, mem: &M, req: &Request<M>) -> Outcome {
    let zeroes = req.kind == RequestKind::WriteZeroes;
    if !ctx.writable {
        return Outcome::refused(S_IOERR, ErrorKind::Permission);
    }
    if req.data_len == 0 || !req.data_len.is_multiple_of(DWZ_SEGMENT_LEN as u64) {
        return Outcome::refused(S_IOERR, ErrorKind::Invalid);
    }
    if req.data_len > DWZ_SEGMENT_LEN as u64 {
        // More segments than `max_discard_seg` / `max_write_zeroes_seg`.
        return Outcome::refused(S_UNSUPP, ErrorKind::NotSupported);
    }
    let mut seg = [0u8; DWZ_SEGMENT_LEN];
    if !gather(mem, &req.data, &mut seg) {
        return Outcome::refused(S_IOERR, ErrorKind::Invalid);
    }
    let sector = u64::from_le_bytes([
        seg[0], seg[1], seg[2], seg[3], seg[4], seg[5], seg[6], seg[7],
    ]);
    let sectors = u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]]);
    let flags = u32::from_le_bytes([seg[12], seg[13], seg[14], seg[15]]);
    let allowed = if zeroes { WZ_FLAG_UNMAP } else { 0 };
    if flags & !allowed != 0 {
        return Outcome::refused(S_UNSUPP, ErrorKind::NotSupported);
    }
    let len = u64::from(sectors) << SECTOR_SHIFT;
    if sectors > MAX_DWZ_SECTORS || !range_ok(ctx, sector, len) {
        return Outcome::refused(S_IOERR, ErrorKind::Invalid);
    }
    let offset = sector << SECTOR_SHIFT;
    let r = if zeroes {
        ctx.handle
            .write_zeroes(offset, len, flags & WZ_FLAG_UNMAP != 0, false)
            .await
    } else {
        ctx.handle.discard(offset, len).await
    };
    match r {
        Ok(()) => Outcome::ok(),
        Err(e) => {
            log::debug!("virtio-blk: discard/write-zeroes at sector {sector}: {e}");
            Outcome::failed(&e)
        }
    }
}

/// Copies the first `out.len()` bytes of `segs` out of guest memory.
fn gather<M: GuestMemory + ?Sized>(mem: &M, segs: &[Segment], out: &mut [u8]) -> bool {
    let mut got = 0usize;
    for s in segs {
        if got == out.len() {
            break;
        }
        let n = (s.len as usize).min(out.len() - got);
        if mem.read_slice(&mut out[got..got + n], s.addr).is_err() {
            return false;
        }
        got += n;
    }
    got == out.len()
}

/// Copies `data` into the front of `segs` in guest memory.
fn scatter<M: GuestMemory + ?Sized>(mem: &M, segs: &[Segment], data: &[u8]) -> bool {
    let mut put = 0usize;
    for s in segs {
        if put == data.len() {
            break;
        }
        let n = (s.len as usize).min(data.len() - put);
        if mem.write_slice(&data[put..put + n], s.addr).is_err() {
            return false;
        }
        put += n;
    }
    put == data.len()
}

/// Writes the status byte of a request (or refusal) into guest memory
/// `mem`, whose host map is `host`; false when the guest took that memory
/// away meanwhile.
pub fn write_status<M: GuestMemory + ?Sized>(
    mem: &M,
    host: &HostMap,
    at: GuestAddress,
    status: u8,
) -> bool {
    if let Some(p) = host.get(at.0, 1) {
        // SAFETY: `get` checked the byte against a region of the map
        // `host` was built from, `mem` (the caller's contract), which the
        // caller holds for the call; a volatile store because the guest
        // shares the byte.
        unsafe { std::ptr::write_volatile(p, status) };
        return true;
    }
    mem.write_obj(status, at).is_ok()
}
