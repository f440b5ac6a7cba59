//! What a recorder counts: the kinds of request, how a request ended, and
//! the kinds of error. Every export driver maps its protocol onto these
//! (NBD commands, virtio-blk request types, FUSE opcodes), so statistics
//! read the same whatever the export type.

/// The kind of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Data read from the node.
    Read,
    /// Data written to the node.
    Write,
    /// A flush (fsync) of the node.
    Flush,
    /// A discard (trim, unmap).
    Discard,
    /// Writing zeroes without a payload.
    WriteZeroes,
    /// A block-status (allocation map) query.
    BlockStatus,
    /// Anything else the protocol has (NBD `CACHE`, virtio-blk `GET_ID`).
    Other,
}

impl OpKind {
    /// Every kind, in [`OpKind::index`] order.
    pub const ALL: [OpKind; 7] = [
        OpKind::Read,
        OpKind::Write,
        OpKind::Flush,
        OpKind::Discard,
        OpKind::WriteZeroes,
        OpKind::BlockStatus,
        OpKind::Other,
    ];
    /// Number of kinds.
    pub const COUNT: usize = Self::ALL.len();

    /// Position in [`OpKind::ALL`] (array index of per-kind counters).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The name in QMP replies and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Flush => "flush",
            OpKind::Discard => "discard",
            OpKind::WriteZeroes => "write-zeroes",
            OpKind::BlockStatus => "block-status",
            OpKind::Other => "other",
        }
    }
}

/// Why a request failed, as a peer would be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `EIO` and other I/O failures of the image.
    Io,
    /// `ENOSPC`, `EDQUOT`: the image's file system is full.
    NoSpace,
    /// `EINVAL`, `EOVERFLOW`, out of range: a request that cannot be valid.
    Invalid,
    /// `EPERM`, `EACCES`, `EROFS`: a write to a read-only export.
    Permission,
    /// `ENOTSUP`: the node or the export cannot do this.
    NotSupported,
    /// Any other errno.
    Other,
    /// A peer that broke the protocol (the connection or queue ends).
    Protocol,
}

impl ErrorKind {
    /// Every kind, in [`ErrorKind::index`] order.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Io,
        ErrorKind::NoSpace,
        ErrorKind::Invalid,
        ErrorKind::Permission,
        ErrorKind::NotSupported,
        ErrorKind::Other,
        ErrorKind::Protocol,
    ];
    /// Number of kinds.
    pub const COUNT: usize = Self::ALL.len();

    /// Position in [`ErrorKind::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The name in QMP replies and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorKind::Io => "io",
            ErrorKind::NoSpace => "no-space",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Permission => "permission",
            ErrorKind::NotSupported => "not-supported",
            ErrorKind::Other => "other",
            ErrorKind::Protocol => "protocol",
        }
    }

    /// The kind of a (positive) errno.
    pub fn from_errno(errno: i32) -> ErrorKind {
        match errno {
            libc::EIO => ErrorKind::Io,
            libc::ENOSPC | libc::EDQUOT => ErrorKind::NoSpace,
            libc::EINVAL | libc::EOVERFLOW | libc::ERANGE => ErrorKind::Invalid,
            libc::EPERM | libc::EACCES | libc::EROFS => ErrorKind::Permission,
            libc::ENOTSUP | libc::ENOSYS => ErrorKind::NotSupported,
            _ => ErrorKind::Other,
        }
    }
}

/// How a request ended. QEMU's accounting has the same three ends:
/// done, failed while doing it, refused before doing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done; its bytes count.
    Ok,
    /// The node failed it (`failed_rd_operations`, ...).
    Failed(ErrorKind),
    /// Refused before any I/O: bad range, read-only, unsupported
    /// (`invalid_rd_operations`, ...).
    Invalid(ErrorKind),
}

impl Outcome {
    /// The outcome of a block-layer result.
    pub fn of<T>(r: &Result<T, engine::block::BlockError>) -> Outcome {
        match r {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::of_error(e),
        }
    }

    /// The outcome of a block-layer error: a request the node refused to
    /// start (out of range, not supported) is invalid, anything else failed.
    pub fn of_error(e: &engine::block::BlockError) -> Outcome {
        use engine::block::BlockError as E;
        let kind = ErrorKind::from_errno(e.errno());
        match e {
            E::OutOfRange { .. } | E::NotSupported | E::ReadOnly | E::Invalid(_) => {
                Outcome::Invalid(kind)
            }
            _ => Outcome::Failed(kind),
        }
    }

    /// The error kind, if it is not [`Outcome::Ok`].
    pub fn error(self) -> Option<ErrorKind> {
        match self {
            Outcome::Ok => None,
            Outcome::Failed(k) | Outcome::Invalid(k) => Some(k),
        }
    }
}
