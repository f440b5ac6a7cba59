//! Transmission-phase reply encoders. Everything appends to a caller's
//! `Vec<u8>` and allocates nothing else. [`ReplyMode`] picks the header:
//! simple (16 bytes), structured chunk (20 bytes) or extended chunk (32
//! bytes). `OFFSET_DATA` encodes only headers so the data can be sent from
//! the caller's own buffer. Also the single errno → NBD error mapping.
#![forbid(unsafe_code)]

use thiserror::Error;

use super::consts::*;
use super::wire::{len32, put_u16, put_u32, put_u64, truncate_utf8};

/// NBD error values (the only ones the protocol allows on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NbdErrno {
    Perm,
    Io,
    NoMem,
    Inval,
    NoSpc,
    Overflow,
    NotSup,
    Shutdown,
}

impl NbdErrno {
    /// Wire value.
    pub fn to_wire(self) -> u32 {
        match self {
            NbdErrno::Perm => NBD_EPERM,
            NbdErrno::Io => NBD_EIO,
            NbdErrno::NoMem => NBD_ENOMEM,
            NbdErrno::Inval => NBD_EINVAL,
            NbdErrno::NoSpc => NBD_ENOSPC,
            NbdErrno::Overflow => NBD_EOVERFLOW,
            NbdErrno::NotSup => NBD_ENOTSUP,
            NbdErrno::Shutdown => NBD_ESHUTDOWN,
        }
    }

    /// Map a (positive) system errno like QEMU's
    /// `system_errno_to_nbd_errno`: EROFS→EPERM, EDQUOT/EFBIG→ENOSPC,
    /// EOPNOTSUPP→ENOTSUP, anything unknown → EINVAL. Negative values are
    /// treated as their absolute value.
    pub fn from_errno(errno: i32) -> Self {
        match errno.saturating_abs() {
            libc::EPERM | libc::EROFS => NbdErrno::Perm,
            libc::EIO => NbdErrno::Io,
            libc::ENOMEM => NbdErrno::NoMem,
            libc::ENOSPC | libc::EDQUOT | libc::EFBIG => NbdErrno::NoSpc,
            libc::EOVERFLOW => NbdErrno::Overflow,
            #[allow(unreachable_patterns)] // ENOTSUP == EOPNOTSUPP on Linux
            libc::ENOTSUP | libc::EOPNOTSUPP => NbdErrno::NotSup,
            libc::ESHUTDOWN => NbdErrno::Shutdown,
            _ => NbdErrno::Inval,
        }
    }
}

/// Reply header style negotiated for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    Simple,
    Structured,
    Extended,
}

impl ReplyMode {
    /// Mode for the handshake result (extended wins over structured).
    pub fn new(structured: bool, extended: bool) -> Self {
        if extended {
            ReplyMode::Extended
        } else if structured {
            ReplyMode::Structured
        } else {
            ReplyMode::Simple
        }
    }
}

/// Which request a reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo {
    pub mode: ReplyMode,
    pub cookie: u64,
    /// The request's offset (echoed by extended reply headers).
    pub offset: u64,
}

/// Misuse of the encoders by the caller (never caused by peer input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReplyError {
    #[error("chunk replies need structured replies or extended headers")]
    NotStructured,
    #[error("block status needs at least one extent")]
    NoExtents,
    #[error("extent length does not fit the 32-bit block status chunk")]
    ExtentTooLong,
    #[error("chunk payload does not fit in 32 bits")]
    PayloadTooLong,
}

/// One block-status descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub length: u64,
    pub flags: u32,
}

/// Simple reply header: magic, error, cookie (16 bytes). For a
/// successful READ the data follows.
pub fn simple_reply(out: &mut Vec<u8>, cookie: u64, error: Option<NbdErrno>) {
    put_u32(out, NBD_SIMPLE_REPLY_MAGIC);
    put_u32(out, error.map_or(NBD_SUCCESS, NbdErrno::to_wire));
    put_u64(out, cookie);
}

/// Chunk header (structured or extended) for a chunk with `len` payload
/// bytes.
pub fn chunk_header(
    out: &mut Vec<u8>,
    to: &ReplyTo,
    done: bool,
    kind: u16,
    len: u64,
) -> Result<(), ReplyError> {
    let flags = if done { NBD_REPLY_FLAG_DONE } else { 0 };
    match to.mode {
        ReplyMode::Simple => return Err(ReplyError::NotStructured),
        ReplyMode::Structured => {
            let len = u32::try_from(len).map_err(|_| ReplyError::PayloadTooLong)?;
            put_u32(out, NBD_STRUCTURED_REPLY_MAGIC);
            put_u16(out, flags);
            put_u16(out, kind);
            put_u64(out, to.cookie);
            put_u32(out, len);
        }
        ReplyMode::Extended => {
            put_u32(out, NBD_EXTENDED_REPLY_MAGIC);
            put_u16(out, flags);
            put_u16(out, kind);
            put_u64(out, to.cookie);
            put_u64(out, to.offset);
            put_u64(out, len);
        }
    }
    Ok(())
}

/// Successful reply without data: a simple reply, or a `NONE` chunk with
/// `DONE` set.
pub fn reply_ok(out: &mut Vec<u8>, to: &ReplyTo) {
    match to.mode {
        ReplyMode::Simple => simple_reply(out, to.cookie, None),
        _ => {
            let _ = chunk_header(out, to, true, NBD_REPLY_TYPE_NONE, 0);
        }
    }
}

/// Final error reply: a simple reply with `error`, or an `ERROR` chunk with
/// `DONE` carrying `msg` (simple replies cannot carry a message).
pub fn reply_error(out: &mut Vec<u8>, to: &ReplyTo, error: NbdErrno, msg: &str) {
    match to.mode {
        ReplyMode::Simple => simple_reply(out, to.cookie, Some(error)),
        _ => {
            let _ = chunk_error(out, to, true, error, msg);
        }
    }
}

/// `NBD_REPLY_TYPE_NONE` (always final, so `DONE` is always set).
pub fn chunk_none(out: &mut Vec<u8>, to: &ReplyTo) -> Result<(), ReplyError> {
    chunk_header(out, to, true, NBD_REPLY_TYPE_NONE, 0)
}

/// Headers for `data_len` bytes of read data at `data_offset`; the caller
/// sends the data right after. In simple mode this is the simple reply
/// header (so one call serves every mode).
pub fn read_data_header(
    out: &mut Vec<u8>,
    to: &ReplyTo,
    done: bool,
    data_offset: u64,
    data_len: u32,
) -> Result<(), ReplyError> {
    if to.mode == ReplyMode::Simple {
        simple_reply(out, to.cookie, None);
        return Ok(());
    }
    chunk_header(
        out,
        to,
        done,
        NBD_REPLY_TYPE_OFFSET_DATA,
        8 + u64::from(data_len),
    )?;
    put_u64(out, data_offset);
    Ok(())
}

/// `NBD_REPLY_TYPE_OFFSET_HOLE`: `len` zero bytes at `offset`.
pub fn chunk_offset_hole(
    out: &mut Vec<u8>,
    to: &ReplyTo,
    done: bool,
    offset: u64,
    len: u32,
) -> Result<(), ReplyError> {
    chunk_header(out, to, done, NBD_REPLY_TYPE_OFFSET_HOLE, 12)?;
    put_u64(out, offset);
    put_u32(out, len);
    Ok(())
}

/// Block status for one context: `BLOCK_STATUS` (32-bit descriptors) in
/// structured mode, `BLOCK_STATUS_EXT` (64-bit, with descriptor count) in
/// extended mode.
pub fn chunk_block_status(
    out: &mut Vec<u8>,
    to: &ReplyTo,
    done: bool,
    context_id: u32,
    extents: &[Extent],
) -> Result<(), ReplyError> {
    if extents.is_empty() {
        return Err(ReplyError::NoExtents);
    }
    let n = extents.len() as u64;
    match to.mode {
        ReplyMode::Simple => Err(ReplyError::NotStructured),
        ReplyMode::Structured => {
            if extents.iter().any(|e| e.length > u64::from(u32::MAX)) {
                return Err(ReplyError::ExtentTooLong);
            }
            chunk_header(out, to, done, NBD_REPLY_TYPE_BLOCK_STATUS, 4 + 8 * n)?;
            put_u32(out, context_id);
            for e in extents {
                put_u32(out, e.length as u32);
                put_u32(out, e.flags);
            }
            Ok(())
        }
        ReplyMode::Extended => {
            let count = u32::try_from(n).map_err(|_| ReplyError::PayloadTooLong)?;
            chunk_header(out, to, done, NBD_REPLY_TYPE_BLOCK_STATUS_EXT, 8 + 16 * n)?;
            put_u32(out, context_id);
            put_u32(out, count);
            for e in extents {
                put_u64(out, e.length);
                put_u64(out, u64::from(e.flags));
            }
            Ok(())
        }
    }
}

/// `NBD_REPLY_TYPE_ERROR`; `msg` is truncated to 4096 bytes.
pub fn chunk_error(
    out: &mut Vec<u8>,
    to: &ReplyTo,
    done: bool,
    error: NbdErrno,
    msg: &str,
) -> Result<(), ReplyError> {
    let msg = truncate_utf8(msg, NBD_MAX_STRING_SIZE);
    chunk_header(out, to, done, NBD_REPLY_TYPE_ERROR, 6 + msg.len() as u64)?;
    put_u32(out, error.to_wire());
    put_u16(out, len32(msg.len()) as u16);
    out.extend_from_slice(msg.as_bytes());
    Ok(())
}

/// `NBD_REPLY_TYPE_ERROR_OFFSET`: error at `offset`; `msg` truncated to
/// 4096 bytes.
pub fn chunk_error_offset(
    out: &mut Vec<u8>,
    to: &ReplyTo,
    done: bool,
    error: NbdErrno,
    msg: &str,
    offset: u64,
) -> Result<(), ReplyError> {
    let msg = truncate_utf8(msg, NBD_MAX_STRING_SIZE);
    chunk_header(
        out,
        to,
        done,
        NBD_REPLY_TYPE_ERROR_OFFSET,
        14 + msg.len() as u64,
    )?;
    put_u32(out, error.to_wire());
    put_u16(out, len32(msg.len()) as u16);
    out.extend_from_slice(msg.as_bytes());
    put_u64(out, offset);
    Ok(())
}
