//! [`BlockError`]: what the block layer reports, with the errno a wire
//! protocol needs.

use std::io;

/// Why a block-layer operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The image could not be opened.
    #[error("Could not open '{path}': {source}")]
    Open {
        /// The file name as given.
        path: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Another process holds an incompatible lock on the image.
    #[error("Failed to get \"{perm}\" lock")]
    Locked {
        /// The permission whose lock byte is taken.
        perm: &'static str,
    },
    /// Another user of the node in this process does not share a permission.
    #[error("Conflicts with use by {holder} as 'root', which does not allow '{perm}' on {node}")]
    PermConflict {
        /// Who holds the node.
        holder: String,
        /// The permission in conflict.
        perm: &'static str,
        /// The node.
        node: String,
    },
    /// Write access asked on a read-only node.
    #[error("Block node is read-only")]
    ReadOnly,
    /// An I/O operation failed.
    #[error("{op} at offset {offset} failed: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// Where.
        offset: u64,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// A request outside the node.
    #[error(
        "Request at offset {offset} of length {len} is beyond the end of the node ({size} bytes)"
    )]
    OutOfRange {
        /// Where the request starts.
        offset: u64,
        /// Its length.
        len: u64,
        /// The node size.
        size: u64,
    },
    /// The node cannot do this at all (e.g. a fast zero it cannot do fast).
    #[error("Operation not supported")]
    NotSupported,
    /// Bad options.
    #[error("{0}")]
    Invalid(String),
}

impl BlockError {
    /// The errno that best describes the failure to a peer.
    pub fn errno(&self) -> i32 {
        match self {
            BlockError::Open { source, .. } | BlockError::Io { source, .. } => {
                source.raw_os_error().unwrap_or(libc::EIO)
            }
            BlockError::Locked { .. } | BlockError::PermConflict { .. } => libc::EBUSY,
            BlockError::ReadOnly => libc::EPERM,
            BlockError::OutOfRange { .. } => libc::EINVAL,
            BlockError::NotSupported => libc::ENOTSUP,
            BlockError::Invalid(_) => libc::EINVAL,
        }
    }

    pub(crate) fn io(op: &'static str, offset: u64, source: io::Error) -> BlockError {
        BlockError::Io { op, offset, source }
    }
}

/// Block-layer result.
pub type BlockResult<T> = Result<T, BlockError>;
