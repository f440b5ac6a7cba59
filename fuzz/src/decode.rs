//! Independent decoder for NBD transmission replies, written from the spec
//! (doc/proto.md), not from `drivers::nbd::proto::reply`. Used by the
//! `nbd_reply_roundtrip` target: encoder output must decode back to the
//! values that were encoded.

use drivers::nbd::proto::consts::*;
use drivers::nbd::proto::NbdErrno;

/// One decoded reply (simple reply or one chunk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Simple reply; `data` is the read payload that followed (length known
    /// only to the client, passed in as a hint).
    Simple {
        cookie: u64,
        error: u32,
        data_len: usize,
    },
    Chunk {
        done: bool,
        cookie: u64,
        /// Only present in extended headers.
        offset: Option<u64>,
        body: Body,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    None,
    /// OFFSET_DATA: offset and the number of data bytes that follow.
    OffsetData {
        offset: u64,
        data_len: u64,
    },
    OffsetHole {
        offset: u64,
        len: u32,
    },
    /// BLOCK_STATUS (32-bit descriptors) or BLOCK_STATUS_EXT.
    BlockStatus {
        ext: bool,
        context: u32,
        extents: Vec<(u64, u64)>,
    },
    Error {
        error: u32,
        msg: String,
        offset: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Short,
    BadMagic(u32),
    Malformed(&'static str),
    UnknownType(u16),
}

struct R<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Short)?;
        let s = self.b.get(self.pos..end).ok_or(DecodeError::Short)?;
        self.pos = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }
}

/// Wire error value back to the enum (None for values the spec forbids).
pub fn errno_from_wire(v: u32) -> Option<NbdErrno> {
    Some(match v {
        NBD_EPERM => NbdErrno::Perm,
        NBD_EIO => NbdErrno::Io,
        NBD_ENOMEM => NbdErrno::NoMem,
        NBD_EINVAL => NbdErrno::Inval,
        NBD_ENOSPC => NbdErrno::NoSpc,
        NBD_EOVERFLOW => NbdErrno::Overflow,
        NBD_ENOTSUP => NbdErrno::NotSup,
        NBD_ESHUTDOWN => NbdErrno::Shutdown,
        _ => return None,
    })
}

/// Decode the reply at the front of `buf`. `simple_data_len` is the read
/// length the client expects if this turns out to be a successful simple
/// reply to a READ (0 otherwise). For OFFSET_DATA the data bytes are
/// consumed if present; `truncated_data_ok` lets the caller encode a header
/// without its (large) data. Returns the reply and bytes consumed.
pub fn decode_one(
    buf: &[u8],
    simple_data_len: usize,
    truncated_data_ok: bool,
) -> Result<(Decoded, usize), DecodeError> {
    let mut r = R { b: buf, pos: 0 };
    let magic = r.u32()?;
    if magic == NBD_SIMPLE_REPLY_MAGIC {
        let error = r.u32()?;
        let cookie = r.u64()?;
        let data_len = if error == 0 { simple_data_len } else { 0 };
        r.take(data_len)?;
        return Ok((
            Decoded::Simple {
                cookie,
                error,
                data_len,
            },
            r.pos,
        ));
    }
    let ext = match magic {
        NBD_STRUCTURED_REPLY_MAGIC => false,
        NBD_EXTENDED_REPLY_MAGIC => true,
        m => return Err(DecodeError::BadMagic(m)),
    };
    let flags = r.u16()?;
    if flags & !NBD_REPLY_FLAG_DONE != 0 {
        return Err(DecodeError::Malformed("unknown chunk flags"));
    }
    let kind = r.u16()?;
    let cookie = r.u64()?;
    let (offset, len) = if ext {
        (Some(r.u64()?), r.u64()?)
    } else {
        (None, u64::from(r.u32()?))
    };
    let start = r.pos;
    let body = match kind {
        NBD_REPLY_TYPE_NONE => {
            if len != 0 {
                return Err(DecodeError::Malformed("NONE with payload"));
            }
            if flags & NBD_REPLY_FLAG_DONE == 0 {
                return Err(DecodeError::Malformed("NONE without DONE"));
            }
            Body::None
        }
        NBD_REPLY_TYPE_OFFSET_DATA => {
            if len < 8 {
                return Err(DecodeError::Malformed("OFFSET_DATA too short"));
            }
            let off = r.u64()?;
            let data_len = len - 8;
            let avail = (buf.len() - r.pos) as u64;
            if data_len <= avail {
                r.take(data_len as usize)?;
            } else if truncated_data_ok {
                r.take(avail as usize)?;
            } else {
                return Err(DecodeError::Short);
            }
            return Ok((
                Decoded::Chunk {
                    done: flags & NBD_REPLY_FLAG_DONE != 0,
                    cookie,
                    offset,
                    body: Body::OffsetData {
                        offset: off,
                        data_len,
                    },
                },
                r.pos,
            ));
        }
        NBD_REPLY_TYPE_OFFSET_HOLE => {
            if len != 12 {
                return Err(DecodeError::Malformed("OFFSET_HOLE length"));
            }
            Body::OffsetHole {
                offset: r.u64()?,
                len: r.u32()?,
            }
        }
        NBD_REPLY_TYPE_BLOCK_STATUS | NBD_REPLY_TYPE_BLOCK_STATUS_EXT => {
            let bext = kind == NBD_REPLY_TYPE_BLOCK_STATUS_EXT;
            let context = r.u32()?;
            let mut extents = Vec::new();
            if bext {
                let count = r.u32()?;
                if len != 8 + 16 * u64::from(count) {
                    return Err(DecodeError::Malformed("BLOCK_STATUS_EXT count/length"));
                }
                for _ in 0..count {
                    extents.push((r.u64()?, r.u64()?));
                }
            } else {
                if len < 12 || (len - 4) % 8 != 0 {
                    return Err(DecodeError::Malformed("BLOCK_STATUS length"));
                }
                for _ in 0..(len - 4) / 8 {
                    extents.push((u64::from(r.u32()?), u64::from(r.u32()?)));
                }
            }
            if extents.is_empty() {
                return Err(DecodeError::Malformed("no extents"));
            }
            Body::BlockStatus {
                ext: bext,
                context,
                extents,
            }
        }
        NBD_REPLY_TYPE_ERROR | NBD_REPLY_TYPE_ERROR_OFFSET => {
            let error = r.u32()?;
            let mlen = r.u16()? as usize;
            if mlen > NBD_MAX_STRING_SIZE {
                return Err(DecodeError::Malformed("error message over 4096 bytes"));
            }
            let msg = std::str::from_utf8(r.take(mlen)?)
                .map_err(|_| DecodeError::Malformed("error message not UTF-8"))?
                .to_string();
            let eoff = if kind == NBD_REPLY_TYPE_ERROR_OFFSET {
                Some(r.u64()?)
            } else {
                None
            };
            let fixed = if eoff.is_some() { 14 } else { 6 };
            if len != fixed + mlen as u64 {
                return Err(DecodeError::Malformed("error chunk length"));
            }
            Body::Error {
                error,
                msg,
                offset: eoff,
            }
        }
        k => return Err(DecodeError::UnknownType(k)),
    };
    if (r.pos - start) as u64 != len {
        return Err(DecodeError::Malformed("payload length mismatch"));
    }
    Ok((
        Decoded::Chunk {
            done: flags & NBD_REPLY_FLAG_DONE != 0,
            cookie,
            offset,
            body,
        },
        r.pos,
    ))
}
