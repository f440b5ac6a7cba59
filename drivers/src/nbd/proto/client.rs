//! The client's direction of the transmission phase: request headers out
//! (the inverse of [`super::parse_request`]) and replies in (the inverse
//! of the encoders in `reply.rs`). Same constants, same [`RequestHeader`],
//! [`Command`] and [`Extent`] types as the server side, so the two halves
//! are tested against each other (`tests/client.rs`). Every parser is
//! bounds-checked: a hostile server gets its connection dropped, never a
//! panic.
#![forbid(unsafe_code)]

use thiserror::Error;

use super::consts::*;
use super::reply::Extent;
use super::request::{Command, RequestHeader};
use super::wire::{put_u16, put_u32, put_u64, Reader};

/// Appends a compact (28-byte) request header.
pub fn encode_request(out: &mut Vec<u8>, h: &RequestHeader) {
    put_u32(out, NBD_REQUEST_MAGIC);
    put_u16(out, h.flags);
    put_u16(out, h.kind.to_wire());
    put_u64(out, h.cookie);
    put_u64(out, h.offset);
    put_u32(out, u32::try_from(h.length).unwrap_or(u32::MAX));
}

/// A reply header: a simple reply or one structured chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyHeader {
    /// 16 bytes; for a successful READ, the data follows.
    Simple { cookie: u64, error: u32 },
    /// 20 bytes, then `length` payload bytes.
    Chunk {
        flags: u16,
        kind: u16,
        cookie: u64,
        length: u32,
    },
}

impl ReplyHeader {
    /// The cookie of the request answered.
    pub fn cookie(&self) -> u64 {
        match *self {
            ReplyHeader::Simple { cookie, .. } | ReplyHeader::Chunk { cookie, .. } => cookie,
        }
    }
}

/// The server broke the protocol: the connection must be dropped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplyParseError {
    #[error("bad reply magic {0:#x}")]
    BadMagic(u32),
    #[error("structured reply chunk without structured replies negotiated")]
    Unexpected,
    #[error("reply chunk of {0} bytes is too large")]
    TooLarge(u32),
    #[error("malformed {0} chunk")]
    Malformed(&'static str),
}

/// Parses a reply header from the front of `buf`: `Ok(None)` when more
/// bytes are needed, else the header and the bytes it took.
pub fn parse_reply_header(
    buf: &[u8],
    structured: bool,
) -> Result<Option<(ReplyHeader, usize)>, ReplyParseError> {
    let mut r = Reader::new(buf);
    let Some(magic) = r.u32() else {
        return Ok(None);
    };
    match magic {
        NBD_SIMPLE_REPLY_MAGIC => {
            let (Some(error), Some(cookie)) = (r.u32(), r.u64()) else {
                return Ok(None);
            };
            Ok(Some((
                ReplyHeader::Simple { cookie, error },
                SIMPLE_REPLY_LEN,
            )))
        }
        NBD_STRUCTURED_REPLY_MAGIC if structured => {
            let (Some(flags), Some(kind), Some(cookie), Some(length)) =
                (r.u16(), r.u16(), r.u64(), r.u32())
            else {
                return Ok(None);
            };
            // Data chunks carry at most one request's payload, plus the offset.
            if length > NBD_MAX_PAYLOAD + 16 {
                return Err(ReplyParseError::TooLarge(length));
            }
            Ok(Some((
                ReplyHeader::Chunk {
                    flags,
                    kind,
                    cookie,
                    length,
                },
                STRUCTURED_REPLY_LEN,
            )))
        }
        NBD_STRUCTURED_REPLY_MAGIC => Err(ReplyParseError::Unexpected),
        m => Err(ReplyParseError::BadMagic(m)),
    }
}

/// `OFFSET_HOLE` payload: offset and length of the zeroes.
pub fn parse_offset_hole(payload: &[u8]) -> Result<(u64, u32), ReplyParseError> {
    let mut r = Reader::new(payload);
    match (r.u64(), r.u32(), r.remaining()) {
        (Some(o), Some(l), 0) => Ok((o, l)),
        _ => Err(ReplyParseError::Malformed("OFFSET_HOLE")),
    }
}

/// `ERROR` / `ERROR_OFFSET` payload: the error value and the message.
pub fn parse_error_chunk(payload: &[u8]) -> Result<(u32, String), ReplyParseError> {
    let mut r = Reader::new(payload);
    let bad = ReplyParseError::Malformed("ERROR");
    let error = r.u32().ok_or(bad.clone())?;
    let len = usize::from(r.u16().ok_or(bad.clone())?);
    let msg = r.bytes(len).ok_or(bad)?;
    Ok((error, String::from_utf8_lossy(msg).into_owned()))
}

/// `BLOCK_STATUS` payload: the context id and its extents.
pub fn parse_block_status_chunk(payload: &[u8]) -> Result<(u32, Vec<Extent>), ReplyParseError> {
    let bad = ReplyParseError::Malformed("BLOCK_STATUS");
    let mut r = Reader::new(payload);
    let id = r.u32().ok_or(bad.clone())?;
    if r.remaining() == 0 || !r.remaining().is_multiple_of(8) {
        return Err(bad);
    }
    let mut extents = Vec::with_capacity(r.remaining() / 8);
    while r.remaining() > 0 {
        let (Some(length), Some(flags)) = (r.u32(), r.u32()) else {
            return Err(bad);
        };
        extents.push(Extent {
            length: u64::from(length),
            flags,
        });
    }
    Ok((id, extents))
}

/// The errno for an NBD error value from the wire (unknown ones are EINVAL,
/// as the spec says a client should treat them).
pub fn errno_from_wire(error: u32) -> i32 {
    match error {
        NBD_EPERM => libc::EPERM,
        NBD_EIO => libc::EIO,
        NBD_ENOMEM => libc::ENOMEM,
        NBD_EINVAL => libc::EINVAL,
        NBD_ENOSPC => libc::ENOSPC,
        NBD_EOVERFLOW => libc::EOVERFLOW,
        NBD_ENOTSUP => libc::ENOTSUP,
        NBD_ESHUTDOWN => libc::ESHUTDOWN,
        _ => libc::EINVAL,
    }
}

/// A request header for `kind` (the cookie is set by the connection).
pub fn request(kind: Command, flags: u16, offset: u64, length: u64) -> RequestHeader {
    RequestHeader {
        flags,
        kind,
        cookie: 0,
        offset,
        length,
    }
}
