//! Transmission-phase requests: parsing of compact (28-byte) and extended
//! (32-byte) request headers, header-only validation deciding whether a
//! request is executed, refused with an NBD error, or fatal for the
//! connection, and the `NBD_CMD_BLOCK_STATUS` payload form.
//!
//! Validation always tells the caller how many payload bytes follow the
//! header, so a refused `NBD_CMD_WRITE` can be skipped without buffering.
#![forbid(unsafe_code)]

use thiserror::Error;

use super::consts::*;
use super::reply::NbdErrno;
use super::wire::Reader;

/// Request type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Read,
    Write,
    Disc,
    Flush,
    Trim,
    Cache,
    WriteZeroes,
    BlockStatus,
    /// Any other type (including `NBD_CMD_RESIZE`, which we do not support).
    Unknown(u16),
}

impl Command {
    pub fn from_wire(v: u16) -> Self {
        match v {
            NBD_CMD_READ => Command::Read,
            NBD_CMD_WRITE => Command::Write,
            NBD_CMD_DISC => Command::Disc,
            NBD_CMD_FLUSH => Command::Flush,
            NBD_CMD_TRIM => Command::Trim,
            NBD_CMD_CACHE => Command::Cache,
            NBD_CMD_WRITE_ZEROES => Command::WriteZeroes,
            NBD_CMD_BLOCK_STATUS => Command::BlockStatus,
            other => Command::Unknown(other),
        }
    }

    pub fn to_wire(self) -> u16 {
        match self {
            Command::Read => NBD_CMD_READ,
            Command::Write => NBD_CMD_WRITE,
            Command::Disc => NBD_CMD_DISC,
            Command::Flush => NBD_CMD_FLUSH,
            Command::Trim => NBD_CMD_TRIM,
            Command::Cache => NBD_CMD_CACHE,
            Command::WriteZeroes => NBD_CMD_WRITE_ZEROES,
            Command::BlockStatus => NBD_CMD_BLOCK_STATUS,
            Command::Unknown(v) => v,
        }
    }
}

/// A decoded request header. `length` is 32-bit on the wire for compact
/// headers and widened here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub flags: u16,
    pub kind: Command,
    pub cookie: u64,
    pub offset: u64,
    pub length: u64,
}

/// Errors after which the connection must be dropped (framing is lost or
/// the client is abusive).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtoError {
    #[error("bad request magic {0:#x}")]
    BadMagic(u32),
    #[error("request payload of {len} bytes exceeds the {max} byte limit")]
    PayloadTooLarge { len: u64, max: u32 },
}

/// Parse one request header from the front of `buf`. `Ok(None)` means
/// more bytes are needed; on success returns the header and the bytes it
/// occupied (28 compact, 32 extended). Payload bytes are not consumed.
pub fn parse_request(
    buf: &[u8],
    extended: bool,
) -> Result<Option<(RequestHeader, usize)>, ProtoError> {
    let need = if extended {
        EXTENDED_REQUEST_LEN
    } else {
        REQUEST_LEN
    };
    let mut r = Reader::new(buf);
    // Check the magic as soon as it is there, to fail fast on garbage.
    let Some(magic) = r.u32() else {
        return Ok(None);
    };
    let want = if extended {
        NBD_EXTENDED_REQUEST_MAGIC
    } else {
        NBD_REQUEST_MAGIC
    };
    if magic != want {
        return Err(ProtoError::BadMagic(magic));
    }
    if buf.len() < need {
        return Ok(None);
    }
    let fields = (|| {
        let flags = r.u16()?;
        let kind = Command::from_wire(r.u16()?);
        let cookie = r.u64()?;
        let offset = r.u64()?;
        let length = if extended {
            r.u64()?
        } else {
            u64::from(r.u32()?)
        };
        Some(RequestHeader {
            flags,
            kind,
            cookie,
            offset,
            length,
        })
    })();
    Ok(fields.map(|h| (h, need)))
}

/// Per-connection facts request validation depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub structured: bool,
    pub extended: bool,
    pub export_size: u64,
    /// Transmission flags as advertised to the client.
    pub transmission_flags: u16,
    /// Maximum payload as advertised (≤ [`NBD_MAX_PAYLOAD`]).
    pub max_payload: u32,
    /// Number of selected metadata contexts.
    pub meta_contexts: u32,
}

/// What to do with a parsed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Read `payload_len` bytes (WRITE data, or the block-status payload
    /// to pass to [`parse_block_status_payload`]) and execute.
    Execute { payload_len: u64 },
    /// Discard `discard_len` payload bytes, then reply with `error`.
    Reject { discard_len: u64, error: NbdErrno },
    /// `NBD_CMD_DISC`: finish in-flight requests and close; no reply.
    Disconnect,
}

impl RequestHeader {
    /// Payload bytes that follow this header on the wire.
    pub fn payload_len(&self, extended: bool) -> u64 {
        if extended {
            // A WRITE always carries `length` bytes; the flag is optional
            // for it (QEMU's client does not set it).
            if self.kind == Command::Write || self.flags & NBD_CMD_FLAG_PAYLOAD_LEN != 0 {
                self.length
            } else {
                0
            }
        } else if self.kind == Command::Write {
            self.length
        } else {
            0
        }
    }
}

/// Header-only validation, in the spirit of QEMU's
/// `nbd_co_receive_request`. Length over the maximum payload for READ,
/// WRITE or CACHE is refused with `NBD_EINVAL` (as QEMU does); writes to a
/// read-only export with `NBD_EPERM`; out-of-bounds writes with
/// `NBD_ENOSPC` and other out-of-bounds requests with `NBD_EINVAL`;
/// unknown commands and flags with `NBD_EINVAL`.
pub fn check_request(h: &RequestHeader, s: &Session) -> Result<Disposition, ProtoError> {
    use Command::*;
    if h.kind == Disc {
        return Ok(Disposition::Disconnect);
    }
    let has_payload_flag = h.flags & NBD_CMD_FLAG_PAYLOAD_LEN != 0;
    let payload = h.payload_len(s.extended);
    if s.extended && payload > u64::from(s.max_payload) {
        // Spec: server SHOULD hard-disconnect on oversized payloads.
        return Err(ProtoError::PayloadTooLarge {
            len: payload,
            max: s.max_payload,
        });
    }
    let reject = |error| {
        Ok(Disposition::Reject {
            discard_len: payload,
            error,
        })
    };
    let tf = s.transmission_flags;
    let ro = tf & NBD_FLAG_READ_ONLY != 0;

    let mut valid = 0u16;
    if tf & NBD_FLAG_SEND_FUA != 0 {
        valid |= NBD_CMD_FLAG_FUA;
    }
    let mut check_length = false;
    let mut bounds = true;
    match h.kind {
        Read => {
            if tf & NBD_FLAG_SEND_DF != 0 && s.structured {
                valid |= NBD_CMD_FLAG_DF;
            }
            check_length = true;
        }
        Write => {
            if s.extended {
                valid |= NBD_CMD_FLAG_PAYLOAD_LEN;
            }
            check_length = true;
        }
        Flush => {
            if tf & NBD_FLAG_SEND_FLUSH == 0 {
                return reject(NbdErrno::Inval);
            }
        }
        Trim => {
            if tf & NBD_FLAG_SEND_TRIM == 0 && !ro {
                return reject(NbdErrno::Inval);
            }
        }
        // Clients send CACHE without checking the flag (spec); accept it.
        Cache => check_length = true,
        WriteZeroes => {
            if tf & NBD_FLAG_SEND_WRITE_ZEROES == 0 && !ro {
                return reject(NbdErrno::Inval);
            }
            valid |= NBD_CMD_FLAG_NO_HOLE;
            if tf & NBD_FLAG_SEND_FAST_ZERO != 0 {
                valid |= NBD_CMD_FLAG_FAST_ZERO;
            }
        }
        BlockStatus => {
            if s.meta_contexts == 0 || !s.structured {
                return reject(NbdErrno::Inval);
            }
            valid |= NBD_CMD_FLAG_REQ_ONE;
            if has_payload_flag {
                if !s.extended || tf & NBD_FLAG_BLOCK_STATUS_PAYLOAD == 0 {
                    return reject(NbdErrno::Inval);
                }
                // Payload is effect length plus at most one id per context.
                let max = 8 + 4 * u64::from(s.meta_contexts);
                if payload < 8 || payload & 3 != 0 || payload > max {
                    return reject(NbdErrno::Inval);
                }
                valid |= NBD_CMD_FLAG_PAYLOAD_LEN;
                bounds = false; // effect length lives in the payload
            }
        }
        Disc | Unknown(_) => return reject(NbdErrno::Inval),
    }
    if h.flags & !valid != 0 {
        return reject(NbdErrno::Inval);
    }
    if ro && matches!(h.kind, Write | Trim | WriteZeroes) {
        return reject(NbdErrno::Perm);
    }
    if check_length && h.length > u64::from(s.max_payload) {
        return reject(NbdErrno::Inval);
    }
    if bounds && (h.offset > s.export_size || h.length > s.export_size - h.offset) {
        let e = if matches!(h.kind, Write | WriteZeroes) {
            NbdErrno::NoSpc
        } else {
            NbdErrno::Inval
        };
        return reject(e);
    }
    Ok(Disposition::Execute {
        payload_len: payload,
    })
}

/// Payload form of `NBD_CMD_BLOCK_STATUS` (extended headers): effect
/// length plus the metadata context ids the client wants. Borrowed; no
/// allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockStatusPayload<'a> {
    pub effect_length: u64,
    ids: &'a [u8],
}

impl<'a> BlockStatusPayload<'a> {
    /// Requested context ids, in client order.
    pub fn ids(&self) -> impl Iterator<Item = u32> + 'a {
        self.ids
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.ids.len() / 4
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Parse the block-status payload. Errors (to be replied as `NBD_EINVAL`)
/// on a malformed length, no ids, or duplicate ids. The caller still
/// checks the ids against its selected contexts and the effect length
/// against the export size.
pub fn parse_block_status_payload(payload: &[u8]) -> Result<BlockStatusPayload<'_>, NbdErrno> {
    let mut r = Reader::new(payload);
    let effect_length = r.u64().ok_or(NbdErrno::Inval)?;
    let ids = r.bytes(r.remaining()).unwrap_or(&[]);
    if ids.is_empty() || ids.len() & 3 != 0 {
        return Err(NbdErrno::Inval);
    }
    let p = BlockStatusPayload { effect_length, ids };
    let dup = p
        .ids()
        .enumerate()
        .any(|(i, a)| p.ids().skip(i + 1).any(|b| a == b));
    if dup {
        return Err(NbdErrno::Inval);
    }
    Ok(p)
}
