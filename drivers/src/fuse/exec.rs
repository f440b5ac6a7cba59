//! Request execution: one decoded FUSE operation against the node's
//! per-iothread [`BlockHandle`], returning the reply as a value. No file
//! descriptor of the connection is touched here; the transports send.
//!
//! The answers follow qemu-storage-daemon's FUSE export: the node is one
//! regular file (inode 1, mode 0600, or 0400 read-only, owned by the
//! daemon's user), attributes are valid for a second, `setattr` changes
//! only the size and the mode (and the owner with `allow-other`), writes
//! past the end fail unless the export is `growable`, `flush` and `fsync`
//! flush the node, and `lseek` answers `SEEK_DATA`/`SEEK_HOLE` from block
//! status. Where QSD's answer is an accident of its code (a time-only
//! `setattr` riding along a path `truncate`, `fallocate` inside the file),
//! the export does what the call asks; see the functions.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use engine::block::{BlockError, BlockHandle, BlockNode};
use engine::buf::{pool, Buf};

use super::proto::consts::*;
use super::proto::{Attr, Operation, Reply, SetAttr};
use crate::stats::{ErrorKind, OpKind, Outcome, QueueRecorder};

/// Largest READ or WRITE the INIT reply allows (`max_write`, `max_pages`).
pub(crate) const MAX_IO: usize = 1 << 20;

/// How long the kernel may cache the attributes, in seconds (QSD's 1 s).
const ATTR_VALID_S: u64 = 1;

/// `fallocate(2)` modes.
const FALLOC_FL_KEEP_SIZE: u32 = 0x01;
const FALLOC_FL_PUNCH_HOLE: u32 = 0x02;
const FALLOC_FL_ZERO_RANGE: u32 = 0x10;

/// `lseek(2)` whence values the kernel forwards.
const SEEK_DATA: u32 = 3;
const SEEK_HOLE: u32 = 4;

/// What every iothread of one export shares: options, the file's mode and
/// owner (`setattr` changes them), the count of open files.
#[derive(Debug)]
pub(crate) struct FileState {
    pub(crate) node: Arc<BlockNode>,
    pub(crate) writable: bool,
    pub(crate) writethrough: bool,
    pub(crate) growable: bool,
    pub(crate) allow_other: bool,
    mode: AtomicU32,
    uid: AtomicU32,
    gid: AtomicU32,
    /// OPENs not yet RELEASEd: safe removal waits for none.
    pub(crate) open: AtomicUsize,
    /// Growing the node: size check and truncate as one step, so two
    /// iothreads growing at once never shrink each other's write.
    grow: Mutex<()>,
}

impl FileState {
    pub(crate) fn new(
        node: Arc<BlockNode>,
        writable: bool,
        writethrough: bool,
        growable: bool,
        allow_other: bool,
    ) -> FileState {
        let mode = libc::S_IFREG | libc::S_IRUSR | if writable { libc::S_IWUSR } else { 0 };
        FileState {
            node,
            writable,
            writethrough,
            growable,
            allow_other,
            mode: AtomicU32::new(mode),
            uid: AtomicU32::new(nix::unistd::getuid().as_raw()),
            gid: AtomicU32::new(nix::unistd::getgid().as_raw()),
            open: AtomicUsize::new(0),
            grow: Mutex::new(()),
        }
    }
}

/// One iothread's view of the export.
pub(crate) struct Exec {
    pub(crate) state: Arc<FileState>,
    pub(crate) handle: BlockHandle,
    /// The export id, for the closing log line.
    pub(crate) id: String,
    /// Requests served over each transport on this iothread (said at the end).
    pub(crate) over_dev: std::cell::Cell<u64>,
    pub(crate) over_ring: std::cell::Cell<u64>,
    /// The export's statistics for this iothread's queue.
    pub(crate) rec: QueueRecorder,
}

/// What statistics count a request as: data and flush requests, discards
/// and zeroing by `fallocate`, `lseek` as block status; attribute and open
/// traffic is not I/O and is not counted.
fn op_kind(op: &Operation) -> Option<(OpKind, u64, u64)> {
    Some(match *op {
        Operation::Read { offset, size } => (OpKind::Read, offset, u64::from(size)),
        Operation::Write { offset, size } => (OpKind::Write, offset, u64::from(size)),
        Operation::Fsync | Operation::Flush => (OpKind::Flush, 0, 0),
        Operation::Fallocate {
            offset,
            length,
            mode,
        } => {
            let kind = if mode & FALLOC_FL_PUNCH_HOLE != 0 {
                OpKind::Discard
            } else if mode & FALLOC_FL_ZERO_RANGE != 0 {
                OpKind::WriteZeroes
            } else {
                OpKind::Other
            };
            (kind, offset, length)
        }
        Operation::Lseek { offset, .. } => (OpKind::BlockStatus, offset, 0),
        _ => return None,
    })
}

/// The outcome of a reply: I/O errors failed, anything else was refused.
fn outcome(reply: &Reply) -> Outcome {
    match reply {
        Reply::Send { error, .. } if *error < 0 => {
            let kind = ErrorKind::from_errno(-error);
            if -error == libc::EIO {
                Outcome::Failed(kind)
            } else {
                Outcome::Invalid(kind)
            }
        }
        _ => Outcome::Ok,
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        log::info!(
            "fuse export {}: {} requests over io_uring, {} over /dev/fuse on this iothread",
            self.id,
            self.over_ring.get(),
            self.over_dev.get()
        );
    }
}

fn errno_of(e: &BlockError) -> i32 {
    match e {
        BlockError::NotSupported => libc::EOPNOTSUPP,
        BlockError::ReadOnly => libc::EACCES,
        e => e.errno(),
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// 512-byte blocks of the image below `node` (QEMU's allocated file size),
/// or the size in blocks when that is not known.
fn allocated_blocks(node: &BlockNode, size: u64) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut n = node;
    while let Some(c) = n.child() {
        n = c;
    }
    let blocks = n
        .filename()
        .and_then(|f| std::fs::metadata(f).ok())
        .map(|m| m.blocks())
        .unwrap_or(0);
    if blocks == 0 {
        size.div_ceil(512)
    } else {
        blocks
    }
}

impl Exec {
    fn attr(&self) -> Attr {
        let st = &self.state;
        let size = self.handle.size();
        Attr {
            ino: 1,
            size,
            blocks: allocated_blocks(&st.node, size),
            time: now_s(),
            mode: st.mode.load(Ordering::Relaxed),
            nlink: 1,
            uid: st.uid.load(Ordering::Relaxed),
            gid: st.gid.load(Ordering::Relaxed),
            // QEMU's request alignment: 1 byte buffered, a sector with O_DIRECT.
            blksize: if st.node.direct() { 512 } else { 1 },
        }
    }

    /// Runs `op`. `buf` is a WRITE's data (its first `size` bytes), or a
    /// buffer to READ into (the FUSE ring entry's payload), or `None`; it
    /// comes back either in the reply (read data) or as the second value.
    pub(crate) async fn execute(&self, op: Operation, buf: Option<Buf>) -> (Reply, Option<Buf>) {
        let started = op_kind(&op).map(|(k, off, len)| self.rec.start(k, off, len));
        let (reply, left) = match op {
            Operation::Read { offset, size } => self.read(offset, size, buf).await,
            Operation::Write { offset, size } => self.write(offset, size, buf).await,
            other => (self.control(other).await, buf),
        };
        if let Some(t) = started {
            self.rec.finish(t, outcome(&reply));
        }
        (reply, left)
    }

    async fn control(&self, op: Operation) -> Reply {
        let st = &self.state;
        match op {
            Operation::Lookup => Reply::error(libc::ENOENT),
            Operation::Forget | Operation::Interrupt => Reply::None,
            Operation::GetAttr => Reply::attr(&self.attr(), ATTR_VALID_S),
            Operation::SetAttr(s) => self.setattr(s).await,
            Operation::Open { .. } => {
                // O_TRUNC arrives here (FUSE_ATOMIC_O_TRUNC) and is ignored,
                // as by QSD: `dd of=` must not empty a disk image.
                st.open.fetch_add(1, Ordering::AcqRel);
                Reply::open(0, 0)
            }
            Operation::Release => {
                let _ = st
                    .open
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
                Reply::ok()
            }
            Operation::Fsync | Operation::Flush => match self.handle.flush().await {
                Ok(()) => Reply::ok(),
                Err(e) => Reply::error(errno_of(&e)),
            },
            Operation::StatFs => Reply::statfs_default(),
            Operation::Destroy => Reply::ok(),
            Operation::Fallocate {
                offset,
                length,
                mode,
            } => match self.fallocate(offset, length, mode).await {
                Ok(()) => Reply::ok(),
                Err(errno) => Reply::error(errno),
            },
            Operation::Lseek { offset, whence } => match self.lseek(offset, whence) {
                Ok(o) => Reply::lseek(o),
                Err(errno) => Reply::error(errno),
            },
            Operation::Read { .. } | Operation::Write { .. } => Reply::error(libc::EINVAL),
            Operation::Unsupported(_) => Reply::error(libc::ENOSYS),
        }
    }

    async fn read(&self, offset: u64, size: u32, buf: Option<Buf>) -> (Reply, Option<Buf>) {
        let size = size as usize;
        if size > MAX_IO {
            return (Reply::error(libc::EINVAL), buf);
        }
        // Short reads at the end of the file, as the kernel expects.
        let end = self.handle.size();
        let len = end.saturating_sub(offset).min(size as u64) as usize;
        let mut b = match buf {
            Some(b) if b.capacity() >= len => b,
            other => {
                if let Some(b) = other {
                    pool::check_in(b);
                }
                pool::check_out(len)
            }
        };
        b.set_len(len);
        if len == 0 {
            return (Reply::data(b, 0), None);
        }
        let (r, b) = self.handle.read(offset, b).await;
        match r {
            Ok(()) => (Reply::data(b, len), None),
            Err(e) => (Reply::error(errno_of(&e)), Some(b)),
        }
    }

    async fn write(&self, offset: u64, size: u32, buf: Option<Buf>) -> (Reply, Option<Buf>) {
        let st = &self.state;
        let Some(mut b) = buf else {
            return (Reply::error(libc::EINVAL), None);
        };
        if !st.writable {
            return (Reply::error(libc::EACCES), Some(b));
        }
        let size = size as usize;
        if size > MAX_IO || size > b.len() {
            return (Reply::error(libc::EINVAL), Some(b));
        }
        let Some(end) = offset.checked_add(size as u64) else {
            return (Reply::error(libc::EINVAL), Some(b));
        };
        let mut len = size;
        if end > self.handle.size() {
            if st.growable {
                if let Err(e) = self.grow_to(end) {
                    return (Reply::error(errno_of(&e)), Some(b));
                }
            } else if offset >= self.handle.size() {
                // Nothing of it fits; QSD answers EIO.
                return (Reply::error(libc::EIO), Some(b));
            } else {
                // A short write up to the end, as QSD.
                len = (self.handle.size() - offset) as usize;
            }
        }
        b.set_len(len);
        let (r, b) = self.handle.write(offset, b, st.writethrough).await;
        match r {
            Ok(()) => (Reply::written(len as u32), Some(b)),
            Err(e) => (Reply::error(errno_of(&e)), Some(b)),
        }
    }

    /// Grows the node to at least `end` (never shrinks).
    fn grow_to(&self, end: u64) -> Result<(), BlockError> {
        let _g = self.state.grow.lock().unwrap_or_else(|p| p.into_inner());
        if end > self.handle.size() {
            self.handle.truncate(end)?;
        }
        Ok(())
    }

    async fn setattr(&self, s: SetAttr) -> Reply {
        let st = &self.state;
        // What libfuse passes on (it drops FATTR_FH and FATTR_LOCKOWNER).
        let mut to_set = s.valid
            & (FATTR_MODE
                | FATTR_UID
                | FATTR_GID
                | FATTR_SIZE
                | FATTR_ATIME
                | FATTR_MTIME
                | FATTR_KILL_SUIDGID
                | FATTR_ATIME_NOW
                | FATTR_MTIME_NOW
                | FATTR_CTIME);
        if to_set & FATTR_SIZE != 0 {
            // truncate(2) by path asks the kernel to set mtime too: the
            // export has no times of its own (they read as "now").
            to_set &= !(FATTR_MTIME | FATTR_MTIME_NOW | FATTR_CTIME | FATTR_KILL_SUIDGID);
        }
        let mut supported = FATTR_SIZE | FATTR_MODE;
        if st.allow_other {
            supported |= FATTR_UID | FATTR_GID;
        }
        if to_set & !supported != 0 {
            return Reply::error(libc::EOPNOTSUPP);
        }
        if to_set & FATTR_MODE != 0 {
            // Without allow_other nobody else can get in: no bits for them.
            if !st.allow_other && s.mode & (libc::S_IRWXG | libc::S_IRWXO) != 0 {
                return Reply::error(libc::EPERM);
            }
            if !st.writable && s.mode & (libc::S_IWUSR | libc::S_IWGRP | libc::S_IWOTH) != 0 {
                return Reply::error(libc::EROFS);
            }
        }
        if to_set & FATTR_SIZE != 0 {
            if !st.writable {
                return Reply::error(libc::EACCES);
            }
            let r = {
                let _g = st.grow.lock().unwrap_or_else(|p| p.into_inner());
                self.handle.truncate(s.size)
            };
            if let Err(e) = r {
                return Reply::error(errno_of(&e));
            }
        }
        if to_set & FATTR_MODE != 0 {
            st.mode
                .store((s.mode & 0o7777) | libc::S_IFREG, Ordering::Relaxed);
        }
        if to_set & FATTR_UID != 0 {
            st.uid.store(s.uid, Ordering::Relaxed);
        }
        if to_set & FATTR_GID != 0 {
            st.gid.store(s.gid, Ordering::Relaxed);
        }
        Reply::attr(&self.attr(), ATTR_VALID_S)
    }

    /// `fallocate(2)`: punch hole → zeroes by unmapping (no fallback, like
    /// QSD), zero range → write-zeroes, mode 0 or keep-size → reserve the
    /// range; growing past the end only where the export is `growable`.
    async fn fallocate(&self, offset: u64, length: u64, mode: u32) -> Result<(), i32> {
        let st = &self.state;
        if !st.writable {
            return Err(libc::EACCES);
        }
        let end = offset.checked_add(length).ok_or(libc::EINVAL)?;
        let size = self.handle.size();
        let keep = mode & FALLOC_FL_KEEP_SIZE != 0;
        let known = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE;
        if mode & !known != 0
            || (mode & FALLOC_FL_PUNCH_HOLE != 0 && mode & FALLOC_FL_ZERO_RANGE != 0)
        {
            return Err(libc::EOPNOTSUPP);
        }
        let map = |e: BlockError| errno_of(&e);
        // The part inside the file, and whether the call grows it.
        let inner_end = end.min(size);
        let grows = end > size && !keep;
        if grows && !st.growable {
            return Err(libc::ENOSPC);
        }
        if mode & FALLOC_FL_PUNCH_HOLE != 0 {
            if !keep {
                return Err(libc::EINVAL);
            }
            if offset < inner_end {
                self.handle
                    .write_zeroes(offset, inner_end - offset, true, true)
                    .await
                    .map_err(map)?;
            }
            return Ok(());
        }
        if grows {
            self.grow_to(end).map_err(map)?;
        }
        let range_end = if grows { end } else { inner_end };
        if offset >= range_end {
            return Ok(());
        }
        let len = range_end - offset;
        if mode & FALLOC_FL_ZERO_RANGE != 0 {
            self.handle
                .write_zeroes(offset, len, false, false)
                .await
                .map_err(map)
        } else {
            self.handle.allocate(offset, len).await.map_err(map)
        }
    }

    /// `SEEK_DATA` / `SEEK_HOLE` from block status; the end of the file is
    /// a hole, as for any file.
    fn lseek(&self, mut offset: u64, whence: u32) -> Result<u64, i32> {
        if whence != SEEK_DATA && whence != SEEK_HOLE {
            return Err(libc::EINVAL);
        }
        let size = self.handle.size();
        loop {
            if offset >= size {
                return if whence == SEEK_HOLE && offset == size {
                    Ok(size)
                } else {
                    Err(libc::ENXIO)
                };
            }
            let (status, n) = self
                .handle
                .block_status(offset, size - offset)
                .map_err(|e| errno_of(&e))?;
            if status.data == (whence == SEEK_DATA) {
                return Ok(offset);
            }
            offset += n.max(1);
        }
    }
}
