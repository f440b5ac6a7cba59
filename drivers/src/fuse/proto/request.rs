//! Request decoding: `fuse_in_header`, then the operation's arguments.
#![forbid(unsafe_code)]

use super::consts::*;

/// `sizeof(struct fuse_in_header)`.
pub const IN_HEADER_LEN: usize = 40;
/// `sizeof(struct fuse_write_in)` (protocol 7.9 and later): a WRITE's data
/// starts this far after the in-header.
pub const WRITE_IN_LEN: usize = 40;

/// `struct fuse_in_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InHeader {
    /// Whole request length (header, arguments, data).
    pub len: u32,
    pub opcode: u32,
    /// Echoed in the reply.
    pub unique: u64,
    pub nodeid: u64,
    /// The caller's fsuid / fsgid / pid.
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

/// What is wrong with a request; the request gets `EINVAL` (or, without a
/// usable header, nothing: the transport drops it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("request shorter than its header ({0} bytes)")]
    ShortHeader(usize),
    #[error("arguments of opcode {opcode} too short ({got} of {want} bytes)")]
    ShortArgs {
        opcode: u32,
        got: usize,
        want: usize,
    },
}

/// `fuse_setattr_in`, the members the export looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetAttr {
    /// `FATTR_*` bits of what to change.
    pub valid: u32,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// One decoded operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Lookup,
    /// FORGET and BATCH_FORGET: no reply.
    Forget,
    GetAttr,
    SetAttr(SetAttr),
    Open {
        flags: u32,
    },
    Read {
        offset: u64,
        size: u32,
    },
    /// The data (`size` bytes) travels apart (see the transports).
    Write {
        offset: u64,
        size: u32,
    },
    StatFs,
    Release,
    Fsync,
    Flush,
    /// No reply (the kernel gives up on the request by itself).
    Interrupt,
    Destroy,
    Fallocate {
        offset: u64,
        length: u64,
        mode: u32,
    },
    Lseek {
        offset: u64,
        whence: u32,
    },
    /// A second INIT, or anything the export does not implement.
    Unsupported(u32),
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_ne_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(a)
}

/// Decodes the in-header at the start of `b`.
pub fn parse_header(b: &[u8]) -> Result<InHeader, ParseError> {
    if b.len() < IN_HEADER_LEN {
        return Err(ParseError::ShortHeader(b.len()));
    }
    // total_extlen (u16 at 36) counts 8-byte units of extensions after the
    // arguments; the export asks for none, and ignores any.
    let _ = u16_at(b, 36);
    Ok(InHeader {
        len: u32_at(b, 0),
        opcode: u32_at(b, 4),
        unique: u64_at(b, 8),
        nodeid: u64_at(b, 16),
        uid: u32_at(b, 24),
        gid: u32_at(b, 28),
        pid: u32_at(b, 32),
    })
}

/// Decodes the arguments `args` (the bytes after the in-header; for a
/// WRITE just its `fuse_write_in`) of a request with `opcode`.
pub fn parse_operation(opcode: u32, args: &[u8]) -> Result<Operation, ParseError> {
    let need = |want: usize| {
        if args.len() < want {
            Err(ParseError::ShortArgs {
                opcode,
                got: args.len(),
                want,
            })
        } else {
            Ok(())
        }
    };
    Ok(match opcode {
        FUSE_LOOKUP => Operation::Lookup,
        FUSE_FORGET | FUSE_BATCH_FORGET => Operation::Forget,
        FUSE_GETATTR => Operation::GetAttr,
        FUSE_SETATTR => {
            // fuse_setattr_in: valid, padding, fh, size, lock_owner, atime,
            // mtime, ctime, atimensec, mtimensec, ctimensec, mode, unused4,
            // uid, gid, unused5.
            need(88)?;
            Operation::SetAttr(SetAttr {
                valid: u32_at(args, 0),
                size: u64_at(args, 16),
                mode: u32_at(args, 68),
                uid: u32_at(args, 76),
                gid: u32_at(args, 80),
            })
        }
        FUSE_OPEN => {
            need(8)?;
            Operation::Open {
                flags: u32_at(args, 0),
            }
        }
        FUSE_READ | FUSE_WRITE => {
            // fuse_read_in / fuse_write_in: fh, offset, size, ...
            need(if opcode == FUSE_WRITE {
                WRITE_IN_LEN
            } else {
                24
            })?;
            let offset = u64_at(args, 8);
            let size = u32_at(args, 16);
            if opcode == FUSE_READ {
                Operation::Read { offset, size }
            } else {
                Operation::Write { offset, size }
            }
        }
        FUSE_STATFS => Operation::StatFs,
        FUSE_RELEASE => Operation::Release,
        FUSE_FSYNC => Operation::Fsync,
        FUSE_FLUSH => Operation::Flush,
        FUSE_INTERRUPT => Operation::Interrupt,
        FUSE_DESTROY => Operation::Destroy,
        FUSE_FALLOCATE => {
            // fuse_fallocate_in: fh, offset, length, mode, padding.
            need(28)?;
            Operation::Fallocate {
                offset: u64_at(args, 8),
                length: u64_at(args, 16),
                mode: u32_at(args, 24),
            }
        }
        FUSE_LSEEK => {
            // fuse_lseek_in: fh, offset, whence, padding.
            need(20)?;
            Operation::Lseek {
                offset: u64_at(args, 8),
                whence: u32_at(args, 16),
            }
        }
        other => Operation::Unsupported(other),
    })
}
