//! Block status: which ranges hold data, read as zeroes, or are holes.

use std::os::fd::AsFd;

use nix::unistd::{lseek, Whence};

/// What a range of a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockStatus {
    /// Holds data (not a hole).
    pub data: bool,
    /// Reads as zeroes.
    pub zero: bool,
    /// Allocation depth: 1 when this node (not a backing file) provides the
    /// range, 0 when unallocated (only with backing files, later).
    pub depth: u32,
}

impl BlockStatus {
    /// Data, not known to be zero.
    pub const DATA: BlockStatus = BlockStatus {
        data: true,
        zero: false,
        depth: 1,
    };
    /// A hole that reads as zeroes.
    pub const HOLE: BlockStatus = BlockStatus {
        data: false,
        zero: true,
        depth: 1,
    };
}

/// Status of `[offset, offset+max)` in a file, from SEEK_DATA/SEEK_HOLE:
/// returns the status of the first run and its length (≤ `max`, ≥ 1).
pub(crate) fn file_status(
    fd: &impl AsFd,
    offset: u64,
    max: u64,
    file_end: u64,
) -> std::io::Result<(BlockStatus, u64)> {
    if offset >= file_end {
        // Past the end of the file (a raw node with a larger size cannot
        // happen; a growing file can): reads return zeroes.
        return Ok((BlockStatus::HOLE, max));
    }
    let off = offset as i64;
    match lseek(fd, off, Whence::SeekData) {
        Ok(data) if data as u64 == offset => {
            let hole = match lseek(fd, off, Whence::SeekHole) {
                Ok(h) => h as u64,
                Err(_) => file_end,
            };
            Ok((BlockStatus::DATA, hole.saturating_sub(offset).clamp(1, max)))
        }
        Ok(data) => Ok((
            BlockStatus::HOLE,
            (data as u64).saturating_sub(offset).clamp(1, max),
        )),
        // ENXIO: no data after offset.
        Err(nix::errno::Errno::ENXIO) => Ok((BlockStatus::HOLE, max)),
        // The file system cannot tell: everything is data.
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::EOPNOTSUPP) => {
            Ok((BlockStatus::DATA, max))
        }
        Err(e) => Err(e.into()),
    }
}
