//! What the handshake needs to know about exports: the [`ExportCatalog`]
//! trait the daemon implements, [`ExportInfo`], the [`MetaContext`]s an
//! export can offer, and a helper computing transmission flags.
#![forbid(unsafe_code)]

use super::consts::*;

/// Source of export information for the handshake. Implemented by the
/// caller (the daemon's export registry).
pub trait ExportCatalog {
    /// `(name, description)` of every export, for `NBD_OPT_LIST`.
    fn list(&self) -> Vec<(String, String)>;
    /// Look an export up by the name the client sent (may be `""`, the
    /// default export).
    fn lookup(&self, name: &str) -> Option<ExportInfo>;
}

/// Everything the handshake reports about one export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// Canonical name (sent as `NBD_INFO_NAME`).
    pub name: String,
    /// Human readable description; empty means none. Truncated to
    /// [`NBD_MAX_DESCRIPTION_SIZE`] bytes on the wire.
    pub description: String,
    /// Export size in bytes.
    pub size: u64,
    /// Transmission flags, e.g. from [`transmission_flags`]. The negotiator
    /// masks `SEND_DF` (needs structured replies) and
    /// `BLOCK_STATUS_PAYLOAD` (needs extended headers) as required and
    /// always sets `HAS_FLAGS`.
    pub transmission_flags: u16,
    /// Minimum block size (power of two, ≤ 64 KiB).
    pub min_block: u32,
    /// Preferred block size (power of two, ≥ max(min_block, 512)).
    pub preferred_block: u32,
    /// Maximum payload (≥ preferred_block).
    pub max_block: u32,
    /// Offer `qemu:allocation-depth`.
    pub allocation_depth: bool,
    /// Dirty bitmaps offered as `qemu:dirty-bitmap:NAME`.
    pub bitmaps: Vec<String>,
}

/// A metadata context selected with `NBD_OPT_SET_META_CONTEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaContext {
    /// `base:allocation`
    BaseAllocation,
    /// `qemu:allocation-depth`
    AllocationDepth,
    /// `qemu:dirty-bitmap:NAME`
    DirtyBitmap(String),
}

impl MetaContext {
    /// Wire name of the context.
    pub fn name(&self) -> String {
        match self {
            MetaContext::BaseAllocation => CONTEXT_BASE_ALLOCATION.to_string(),
            MetaContext::AllocationDepth => CONTEXT_QEMU_ALLOCATION_DEPTH.to_string(),
            MetaContext::DirtyBitmap(b) => format!("{CONTEXT_QEMU_DIRTY_BITMAP_PREFIX}{b}"),
        }
    }
}

/// Export capabilities from which [`transmission_flags`] builds the
/// 16-bit transmission flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportCaps {
    pub read_only: bool,
    pub flush: bool,
    pub fua: bool,
    pub rotational: bool,
    pub trim: bool,
    pub write_zeroes: bool,
    /// Only honoured together with `write_zeroes`.
    pub fast_zero: bool,
    /// `NBD_CMD_FLAG_DF` support (masked off unless structured replies).
    pub df: bool,
    pub multi_conn: bool,
    pub cache: bool,
    /// Block status payload form (masked off unless extended headers).
    pub block_status_payload: bool,
}

/// Build transmission flags from capabilities. `HAS_FLAGS` is always set;
/// write-type capabilities are dropped for read-only exports, and
/// `SEND_FAST_ZERO` requires `SEND_WRITE_ZEROES` (spec requirement).
pub fn transmission_flags(caps: ExportCaps) -> u16 {
    let mut f = NBD_FLAG_HAS_FLAGS;
    let set = |f: &mut u16, cond: bool, bit: u16| {
        if cond {
            *f |= bit;
        }
    };
    let writable = !caps.read_only;
    set(&mut f, caps.read_only, NBD_FLAG_READ_ONLY);
    set(&mut f, caps.flush, NBD_FLAG_SEND_FLUSH);
    set(&mut f, caps.fua, NBD_FLAG_SEND_FUA);
    set(&mut f, caps.rotational, NBD_FLAG_ROTATIONAL);
    set(&mut f, writable && caps.trim, NBD_FLAG_SEND_TRIM);
    set(
        &mut f,
        writable && caps.write_zeroes,
        NBD_FLAG_SEND_WRITE_ZEROES,
    );
    set(
        &mut f,
        writable && caps.write_zeroes && caps.fast_zero,
        NBD_FLAG_SEND_FAST_ZERO,
    );
    set(&mut f, caps.df, NBD_FLAG_SEND_DF);
    set(&mut f, caps.multi_conn, NBD_FLAG_CAN_MULTI_CONN);
    set(&mut f, caps.cache, NBD_FLAG_SEND_CACHE);
    set(
        &mut f,
        caps.block_status_payload,
        NBD_FLAG_BLOCK_STATUS_PAYLOAD,
    );
    f
}

/// Flags actually advertised for a session: masks the bits whose
/// prerequisites were not negotiated.
pub(crate) fn effective_flags(flags: u16, structured: bool, extended: bool) -> u16 {
    let mut f = flags | NBD_FLAG_HAS_FLAGS;
    if !structured {
        f &= !NBD_FLAG_SEND_DF;
    }
    if !extended {
        f &= !NBD_FLAG_BLOCK_STATUS_PAYLOAD;
    }
    if f & NBD_FLAG_SEND_WRITE_ZEROES == 0 {
        f &= !NBD_FLAG_SEND_FAST_ZERO;
    }
    f
}
