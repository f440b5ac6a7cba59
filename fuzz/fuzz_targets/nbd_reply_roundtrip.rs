//! Reply encoders against an independent decoder (`ringstor_fuzz::decode`).
//!
//! Input: an arbitrary list of reply descriptions (mode, cookie, offset,
//! kind-specific fields). All are encoded back to back into one buffer, as
//! the connection batches them, then decoded one by one; each must decode
//! to exactly the values encoded. Error messages come back truncated to
//! 4096 bytes at a char boundary. Encoders that refuse (caller misuse:
//! chunk in simple mode, no extents, 32-bit overflow) must say so for the
//! right reason and leave the buffer untouched.
#![no_main]

use arbitrary::Arbitrary;
use drivers::nbd::proto::consts::NBD_MAX_STRING_SIZE;
use drivers::nbd::proto::{
    chunk_block_status, chunk_error, chunk_error_offset, chunk_none, chunk_offset_hole,
    read_data_header, reply_error, reply_ok, simple_reply, Extent, NbdErrno, ReplyError, ReplyMode,
    ReplyTo,
};
use libfuzzer_sys::fuzz_target;
use ringstor_fuzz::decode::{decode_one, errno_from_wire, Body, Decoded};

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Mode {
    Simple,
    Structured,
    Extended,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Errno {
    Perm,
    Io,
    NoMem,
    Inval,
    NoSpc,
    Overflow,
    NotSup,
    Shutdown,
    /// Through the system errno mapping.
    Sys(i32),
}

impl Errno {
    fn get(self) -> NbdErrno {
        match self {
            Errno::Perm => NbdErrno::Perm,
            Errno::Io => NbdErrno::Io,
            Errno::NoMem => NbdErrno::NoMem,
            Errno::Inval => NbdErrno::Inval,
            Errno::NoSpc => NbdErrno::NoSpc,
            Errno::Overflow => NbdErrno::Overflow,
            Errno::NotSup => NbdErrno::NotSup,
            Errno::Shutdown => NbdErrno::Shutdown,
            Errno::Sys(e) => NbdErrno::from_errno(e),
        }
    }
}

#[derive(Debug, Clone, Arbitrary)]
enum Kind {
    Simple {
        error: Option<Errno>,
        read_len: u8,
    },
    Ok,
    ReplyError {
        error: Errno,
        msg: String,
    },
    None,
    ReadData {
        done: bool,
        data_offset: u64,
        data_len: u32,
    },
    Hole {
        done: bool,
        offset: u64,
        len: u32,
    },
    BlockStatus {
        done: bool,
        context: u32,
        extents: Vec<(u64, u32)>,
    },
    Error {
        done: bool,
        error: Errno,
        msg: String,
        offset: Option<u64>,
        pad: u16,
    },
}

#[derive(Debug, Clone, Arbitrary)]
struct Desc {
    mode: Mode,
    cookie: u64,
    offset: u64,
    kind: Kind,
}

/// What the decoder must return for an encoded description.
fn expected(d: &Desc, to: &ReplyTo) -> Result<Decoded, ReplyError> {
    let chunk = |done: bool, body: Body| -> Result<Decoded, ReplyError> {
        match to.mode {
            ReplyMode::Simple => Err(ReplyError::NotStructured),
            m => Ok(Decoded::Chunk {
                done,
                cookie: d.cookie,
                offset: (m == ReplyMode::Extended).then_some(d.offset),
                body,
            }),
        }
    };
    let simple = |error: Option<NbdErrno>, data_len: usize| Decoded::Simple {
        cookie: d.cookie,
        error: error.map_or(0, NbdErrno::to_wire),
        data_len,
    };
    let trunc = |msg: &str| {
        let mut end = msg.len().min(NBD_MAX_STRING_SIZE);
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg[..end].to_string()
    };
    match &d.kind {
        Kind::Simple { error, read_len } => {
            let e = error.map(Errno::get);
            Ok(simple(
                e,
                if e.is_some() {
                    0
                } else {
                    usize::from(*read_len)
                },
            ))
        }
        Kind::Ok => match to.mode {
            ReplyMode::Simple => Ok(simple(None, 0)),
            _ => chunk(true, Body::None),
        },
        Kind::ReplyError { error, msg } => match to.mode {
            ReplyMode::Simple => Ok(simple(Some(error.get()), 0)),
            _ => chunk(
                true,
                Body::Error {
                    error: error.get().to_wire(),
                    msg: trunc(msg),
                    offset: None,
                },
            ),
        },
        Kind::None => chunk(true, Body::None),
        Kind::ReadData {
            done,
            data_offset,
            data_len,
        } => match to.mode {
            ReplyMode::Simple => Ok(simple(None, *data_len as usize)),
            ReplyMode::Structured if u64::from(*data_len) + 8 > u64::from(u32::MAX) => {
                Err(ReplyError::PayloadTooLong)
            }
            _ => chunk(
                *done,
                Body::OffsetData {
                    offset: *data_offset,
                    data_len: u64::from(*data_len),
                },
            ),
        },
        Kind::Hole { done, offset, len } => chunk(
            *done,
            Body::OffsetHole {
                offset: *offset,
                len: *len,
            },
        ),
        Kind::BlockStatus {
            done,
            context,
            extents,
        } => {
            // Both are caller misuse; the encoder reports NoExtents first.
            if extents.is_empty() {
                return Err(ReplyError::NoExtents);
            }
            if to.mode == ReplyMode::Simple {
                return Err(ReplyError::NotStructured);
            }
            let ext = to.mode == ReplyMode::Extended;
            if !ext && extents.iter().any(|e| e.0 > u64::from(u32::MAX)) {
                return Err(ReplyError::ExtentTooLong);
            }
            let extents = extents.iter().map(|&(l, f)| (l, u64::from(f))).collect();
            chunk(
                *done,
                Body::BlockStatus {
                    ext,
                    context: *context,
                    extents,
                },
            )
        }
        Kind::Error {
            done,
            error,
            msg,
            offset,
            pad,
        } => {
            // Long messages exercise the 4096-byte truncation.
            let msg = long_msg(msg, *pad);
            chunk(
                *done,
                Body::Error {
                    error: error.get().to_wire(),
                    msg: trunc(&msg),
                    offset: *offset,
                },
            )
        }
    }
}

fn long_msg(msg: &str, pad: u16) -> String {
    let mut m = msg.to_string();
    if pad & 1 != 0 {
        // Push past 4096 with a multi-byte char straddling the limit.
        let fill = usize::from(pad >> 1) % 8192;
        m.extend(std::iter::repeat_n('é', fill / 2));
        m.push('€');
    }
    m
}

fn encode(out: &mut Vec<u8>, d: &Desc, to: &ReplyTo) -> Result<(), ReplyError> {
    match &d.kind {
        Kind::Simple { error, .. } => {
            simple_reply(out, d.cookie, error.map(Errno::get));
            Ok(())
        }
        Kind::Ok => {
            reply_ok(out, to);
            Ok(())
        }
        Kind::ReplyError { error, msg } => {
            reply_error(out, to, error.get(), msg);
            Ok(())
        }
        Kind::None => chunk_none(out, to),
        Kind::ReadData {
            done,
            data_offset,
            data_len,
        } => read_data_header(out, to, *done, *data_offset, *data_len),
        Kind::Hole { done, offset, len } => chunk_offset_hole(out, to, *done, *offset, *len),
        Kind::BlockStatus {
            done,
            context,
            extents,
        } => {
            let ex: Vec<Extent> = extents
                .iter()
                .map(|&(length, flags)| Extent { length, flags })
                .collect();
            chunk_block_status(out, to, *done, *context, &ex)
        }
        Kind::Error {
            done,
            error,
            msg,
            offset,
            pad,
        } => {
            let msg = long_msg(msg, *pad);
            match offset {
                Some(o) => chunk_error_offset(out, to, *done, error.get(), &msg, *o),
                None => chunk_error(out, to, *done, error.get(), &msg),
            }
        }
    }
}

/// Bytes of read data the caller sends after the header (kept small so
/// the batch stays small; larger reads are checked header-only, last).
fn data_len(d: &Desc) -> Option<usize> {
    match d.kind {
        Kind::Simple {
            error: None,
            read_len,
        } => Some(usize::from(read_len)),
        Kind::ReadData { data_len, .. } => Some(data_len as usize),
        _ => None,
    }
}

fuzz_target!(|descs: Vec<Desc>| {
    let mut out = Vec::new();
    let mut encoded = Vec::new();
    for d in descs.iter().take(64) {
        let mode = match d.mode {
            Mode::Simple => ReplyMode::Simple,
            Mode::Structured => ReplyMode::Structured,
            Mode::Extended => ReplyMode::Extended,
        };
        let to = ReplyTo {
            mode,
            cookie: d.cookie,
            offset: d.offset,
        };
        let before = out.len();
        let res = encode(&mut out, d, &to);
        let exp = expected(d, &to);
        match (res, exp) {
            (Err(e), Err(x)) => {
                assert_eq!(e, x);
                assert_eq!(out.len(), before, "failed encoder wrote bytes");
            }
            (Ok(()), Ok(x)) => {
                let big = data_len(d).is_some_and(|n| n > 4096);
                if let Some(n) = data_len(d).filter(|&n| n <= 4096) {
                    out.extend(std::iter::repeat_n(0xA5, n));
                }
                encoded.push((x, data_len(d).unwrap_or(0)));
                if big {
                    break; // header only; the data would not fit
                }
            }
            (r, x) => panic!("encoder returned {r:?}, expected {x:?} for {d:?}"),
        }
    }
    let mut buf = &out[..];
    let n = encoded.len();
    for (i, (want, dlen)) in encoded.into_iter().enumerate() {
        let last = i + 1 == n;
        let simple_len = match want {
            Decoded::Simple { data_len, .. } => data_len.min(if last {
                buf.len().saturating_sub(16)
            } else {
                data_len
            }),
            _ => 0,
        };
        let (got, used) = decode_one(buf, simple_len, last)
            .unwrap_or_else(|e| panic!("decode #{i} failed: {e:?}; wanted {want:?}"));
        let want = match want {
            Decoded::Simple { cookie, error, .. } => Decoded::Simple {
                cookie,
                error,
                data_len: simple_len,
            },
            w => w,
        };
        assert_eq!(got, want, "reply #{i} (data {dlen})");
        if let Decoded::Chunk {
            body: Body::Error { error, msg, .. },
            ..
        } = &got
        {
            assert!(errno_from_wire(*error).is_some());
            assert!(msg.len() <= NBD_MAX_STRING_SIZE);
        }
        buf = &buf[used..];
    }
    assert!(buf.is_empty(), "{} undecoded bytes", buf.len());
});
