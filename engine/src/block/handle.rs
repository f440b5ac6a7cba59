//! [`BlockHandle`]: a node's data path on one iothread.
//!
//! Export drivers do all their I/O through a handle: owned buffers in,
//! `(result, buffer)` out, never a ring, an fd or a format in sight. A
//! handle is `!Send`; each iothread opens its own on the same node (the
//! engine caches one per node per thread), so an export can spread its
//! connections or queues over several cores, each submitting to its own
//! ring (multi-queue, as QEMU's block layer does since 9.0).
//!
//! Format translation is done when the handle is opened: a `raw` node with
//! an `offset` becomes its protocol leaf plus a base offset, so a request
//! costs one operation whatever the depth of the graph. A `qcow2` node is
//! a leaf of its own ([`super::qcow2`]): it maps each request to extents of
//! its file child and backing node, and does their I/O through their
//! handles on the same iothread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use super::bitmap::DirtyTracker;
use super::error::{BlockError, BlockResult};
use super::node::{BlockNode, Kind};
use super::qcow2::Qcow2Handle;
use super::rbd::LocalImage;
use super::remote::RemoteLeaf;
use super::status::{file_status, BlockStatus};
use crate::buf::{pool, Buf};
use crate::op::{self, Pipe, SharedFd};

mod buffered_write;
mod vectored;

/// Largest chunk written at once when emulating write-zeroes.
const ZERO_CHUNK: usize = 1 << 20;

enum Leaf {
    File {
        fd: SharedFd,
        buffered: Option<SharedFd>,
        align: u64,
        no_flush: bool,
    },
    Null {
        read_zeroes: bool,
    },
    /// This iothread's image handle (`None`: it could not be opened here,
    /// and every request fails with EIO).
    Rbd(Option<LocalImage>),
    Remote(Rc<dyn RemoteLeaf>),
    /// A format that maps requests itself.
    Qcow2(Qcow2Handle),
}

struct Inner {
    node: Arc<BlockNode>,
    leaf: Leaf,
    /// Added to every offset on the way to the leaf (`raw` `offset`).
    base: u64,
    /// Marks the dirty bitmaps of every node of the chain.
    dirty: DirtyTracker,
}

/// A node's data path on the current iothread. See the module docs.
#[derive(Clone)]
pub struct BlockHandle {
    inner: Rc<Inner>,
}

thread_local! {
    static HANDLES: RefCell<HashMap<u64, Weak<Inner>>> = RefCell::new(HashMap::new());
}

impl BlockHandle {
    /// The handle of `node` on this iothread, opening it on first use.
    pub fn open(node: &Arc<BlockNode>) -> BlockHandle {
        let cached = HANDLES.with(|h| h.borrow().get(&node.id).and_then(Weak::upgrade));
        if let Some(inner) = cached {
            return BlockHandle { inner };
        }
        let (leaf, base) = flatten(node);
        let inner = Rc::new(Inner {
            node: node.clone(),
            leaf,
            base,
            dirty: DirtyTracker::new(node),
        });
        HANDLES.with(|h| {
            let mut h = h.borrow_mut();
            h.retain(|_, w| w.strong_count() > 0);
            h.insert(node.id, Rc::downgrade(&inner));
        });
        BlockHandle { inner }
    }

    /// The node.
    pub fn node(&self) -> &Arc<BlockNode> {
        &self.inner.node
    }

    /// True when every operation of this handle completes without waiting
    /// for anything (a `null-co` leaf): a caller may poll it inline once
    /// instead of spawning a task for it.
    pub fn completes_inline(&self) -> bool {
        matches!(self.inner.leaf, Leaf::Null { .. })
    }

    /// Current size in bytes.
    pub fn size(&self) -> u64 {
        self.inner.node.size()
    }

    fn check(&self, offset: u64, len: u64) -> BlockResult<()> {
        let size = self.size();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(BlockError::OutOfRange { offset, len, size }),
        }
    }

    /// Chooses the descriptor: the `O_DIRECT` one when aligned, else the buffered one.
    /// (Buffers are page-aligned `Buf`s, so only offset and length matter.)
    fn file_fd(
        fd: &SharedFd,
        buffered: &Option<SharedFd>,
        align: u64,
        off: u64,
        len: u64,
    ) -> SharedFd {
        match buffered {
            Some(b) if !(off.is_multiple_of(align) && len.is_multiple_of(align)) => b.clone(),
            _ => fd.clone(),
        }
    }

    /// Fills `buf` (all `buf.len()` bytes) from `offset`.
    pub async fn read(&self, offset: u64, mut buf: Buf) -> (BlockResult<()>, Buf) {
        let len = buf.len() as u64;
        if let Err(e) = self.check(offset, len) {
            return (Err(e), buf);
        }
        match &self.inner.leaf {
            Leaf::Null { .. } => {
                buf.as_mut_slice().fill(0);
                (Ok(()), buf)
            }
            Leaf::Qcow2(q) => {
                // Boxed: its future is several times a file read's, and every
                // request's task would carry that size (see `write`).
                Box::pin(q.read_into(self.inner.base + offset, buf, 0, len as usize)).await
            }
            Leaf::File {
                fd,
                buffered,
                align,
                ..
            } => {
                let at = self.inner.base + offset;
                let fd = Self::file_fd(fd, buffered, *align, at, len);
                let mut done = 0usize;
                while done < buf.len() {
                    let (r, b) = op::read_at(&fd, buf, done, at + done as u64).await;
                    buf = b;
                    match r {
                        Ok(0) => {
                            // Past the end of the file (the sector-rounded
                            // tail, a raw window past its child): zeroes, as
                            // a hole would.
                            let end = buf.len();
                            buf.zero(done..end);
                            break;
                        }
                        // Short at the end of the file; the next read
                        // returns 0 (even unaligned under O_DIRECT).
                        Ok(n) => done += n,
                        Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                        Err(e) => {
                            return (Err(BlockError::io("read", offset + done as u64, e)), buf)
                        }
                    }
                }
                (Ok(()), buf)
            }
            Leaf::Rbd(Some(img)) => img.read(self.inner.base + offset, buf).await,
            Leaf::Remote(leaf) => leaf.read(self.inner.base + offset, buf).await,
            Leaf::Rbd(None) => (Err(unavailable("read", offset)), buf),
        }
    }

    /// Writes all of `buf` at `offset`; with `fua` the data is durable when
    /// this returns (`RWF_DSYNC`).
    pub async fn write(&self, offset: u64, buf: Buf, fua: bool) -> (BlockResult<()>, Buf) {
        let len = buf.len() as u64;
        if self.inner.node.read_only() {
            return (Err(BlockError::ReadOnly), buf);
        }
        if let Err(e) = self.check(offset, len) {
            return (Err(e), buf);
        }
        let _dirty = self.inner.dirty.guard(offset, len);
        match &self.inner.leaf {
            Leaf::Null { .. } => (Ok(()), buf),
            Leaf::Qcow2(q) => {
                // Boxed: the allocating write's future is ~2 KB, 4x a file
                // write's, and an export's request task (spawned, so moved
                // and allocated per request) is as big as its largest branch.
                let len = len as usize;
                Box::pin(q.write_from(self.inner.base + offset, buf, 0, len, fua)).await
            }
            Leaf::File {
                fd,
                buffered,
                align,
                no_flush,
            } => {
                let at = self.inner.base + offset;
                let fd = Self::file_fd(fd, buffered, *align, at, len);
                let flags = if fua && !no_flush { libc::RWF_DSYNC } else { 0 };
                let mut buf = buf;
                let mut done = 0usize;
                while done < buf.len() {
                    let (r, b) = buffered_write::write_at(
                        &fd,
                        buf,
                        done,
                        at + done as u64,
                        flags,
                        buffered.is_none(),
                    )
                    .await;
                    buf = b;
                    match r {
                        Ok(0) => {
                            return (
                                Err(BlockError::io(
                                    "write",
                                    offset + done as u64,
                                    std::io::ErrorKind::WriteZero.into(),
                                )),
                                buf,
                            )
                        }
                        Ok(n) => done += n,
                        Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                        Err(e) => {
                            return (Err(BlockError::io("write", offset + done as u64, e)), buf)
                        }
                    }
                }
                (Ok(()), buf)
            }
            Leaf::Rbd(Some(img)) => img.write(self.inner.base + offset, buf, fua).await,
            Leaf::Remote(leaf) => leaf.write(self.inner.base + offset, buf, fua).await,
            Leaf::Rbd(None) => (Err(unavailable("write", offset)), buf),
        }
    }

    /// Reads `len` bytes at `offset` into `buf[from..from + len]`: how a
    /// format driver fills one client buffer from several places.
    pub(crate) async fn read_into(
        &self,
        offset: u64,
        buf: Buf,
        from: usize,
        len: usize,
    ) -> (BlockResult<()>, Buf) {
        if from.checked_add(len).is_none_or(|end| end > buf.len()) {
            return (
                Err(BlockError::Invalid("read beyond its buffer".into())),
                buf,
            );
        }
        let at = self.inner.base + offset;
        match &self.inner.leaf {
            Leaf::File {
                fd,
                buffered,
                align,
                ..
            } => {
                let fd = Self::file_fd(fd, buffered, *align, at, len as u64);
                super::range_io::read(&fd, at, buf, from, len).await
            }
            Leaf::Null { .. } => {
                let mut buf = buf;
                buf.zero(from..from + len);
                (Ok(()), buf)
            }
            Leaf::Qcow2(q) => {
                if let Err(e) = self.check(offset, len as u64) {
                    return (Err(e), buf);
                }
                Box::pin(q.read_into(at, buf, from, len)).await
            }
            // A qcow2 image opens only over a file (or a window of one).
            Leaf::Rbd(_) | Leaf::Remote(_) => (Err(BlockError::NotSupported), buf),
        }
    }

    /// Writes `buf[from..from + len]` at `offset` (format drivers).
    pub(crate) async fn write_from(
        &self,
        offset: u64,
        buf: Buf,
        from: usize,
        len: usize,
        fua: bool,
    ) -> (BlockResult<()>, Buf) {
        if from.checked_add(len).is_none_or(|end| end > buf.len()) {
            return (
                Err(BlockError::Invalid("write beyond its buffer".into())),
                buf,
            );
        }
        if self.inner.node.read_only() {
            return (Err(BlockError::ReadOnly), buf);
        }
        let at = self.inner.base + offset;
        match &self.inner.leaf {
            Leaf::File {
                fd,
                buffered,
                align,
                no_flush,
            } => {
                let fd = Self::file_fd(fd, buffered, *align, at, len as u64);
                let flags = if fua && !no_flush { libc::RWF_DSYNC } else { 0 };
                super::range_io::write(&fd, at, buf, from, len, flags).await
            }
            Leaf::Null { .. } => (Ok(()), buf),
            Leaf::Qcow2(q) => {
                if let Err(e) = self.check(offset, len as u64) {
                    return (Err(e), buf);
                }
                Box::pin(q.write_from(at, buf, from, len, fua)).await
            }
            Leaf::Rbd(_) | Leaf::Remote(_) => (Err(BlockError::NotSupported), buf),
        }
    }

    /// True when [`Self::read_to_pipe`] can serve `offset..offset+len`
    /// (a buffered file; `O_DIRECT` data never sits in the page cache),
    /// which ends before the file does: a splice cannot return the zeroes
    /// of the rounded-up tail.
    pub fn can_splice(&self, offset: u64, len: u64) -> bool {
        match &self.inner.leaf {
            Leaf::File { buffered: None, .. } => {
                offset
                    .checked_add(len)
                    .is_some_and(|end| end <= self.size())
                    && self.inner.base + offset + len <= self.leaf_node().data_end()
            }
            _ => false,
        }
    }

    /// Splices up to `len` bytes at `offset` into `pipe` (page references,
    /// no copy); returns the count (short when the pipe is smaller).
    pub async fn read_to_pipe(&self, offset: u64, len: usize, pipe: &Pipe) -> BlockResult<usize> {
        self.check(offset, len as u64)?;
        let Leaf::File { fd, .. } = &self.inner.leaf else {
            return Err(BlockError::NotSupported);
        };
        match pipe.fill_from(fd, self.inner.base + offset, len).await {
            Ok(0) => Err(BlockError::io(
                "splice",
                offset,
                std::io::ErrorKind::UnexpectedEof.into(),
            )),
            Ok(n) => Ok(n),
            Err(e) => Err(BlockError::io("splice", offset, e)),
        }
    }

    /// Makes every completed write durable.
    pub async fn flush(&self) -> BlockResult<()> {
        match &self.inner.leaf {
            Leaf::Null { .. } => Ok(()),
            Leaf::Qcow2(q) => Box::pin(q.flush()).await,
            Leaf::File { no_flush: true, .. } => Ok(()),
            // The buffered descriptor shares the inode: one fdatasync covers both.
            Leaf::File { fd, .. } => op::fdatasync(fd)
                .await
                .map_err(|e| BlockError::io("flush", 0, e)),
            Leaf::Rbd(Some(img)) => img.flush().await,
            Leaf::Remote(leaf) => leaf.flush().await,
            Leaf::Rbd(None) => Err(unavailable("flush", 0)),
        }
    }

    /// Tells the node the range is no longer needed (it may read back as anything,
    /// here zeroes where the file system punches a hole).
    pub async fn discard(&self, offset: u64, len: u64) -> BlockResult<()> {
        if self.inner.node.read_only() {
            return Err(BlockError::ReadOnly);
        }
        self.check(offset, len)?;
        // discard=ignore, as QEMU: the request succeeds and changes nothing
        // from the first node that ignores it down (not even its bitmaps).
        let depth = self.inner.node.discard_depth();
        if depth == 0 {
            return Ok(());
        }
        let at = self.inner.base + offset;
        let _dirty = self.inner.dirty.guard_top(offset, len, depth);
        if depth < self.inner.dirty.depth() {
            return Ok(());
        }
        match &self.inner.leaf {
            Leaf::Null { .. } => Ok(()),
            Leaf::Rbd(Some(img)) => img.discard(at, len).await,
            Leaf::Remote(leaf) => leaf.discard(at, len).await,
            Leaf::Rbd(None) => Err(unavailable("discard", offset)),
            Leaf::Qcow2(q) => Box::pin(q.discard(at, len)).await,
            Leaf::File { fd, .. } => {
                let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                match op::fallocate(fd, self.inner.base + offset, len, mode).await {
                    Ok(()) => Ok(()),
                    // Discard is advisory: a file system that cannot punch holes ignores it.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP)) => Ok(()),
                    Err(e) => Err(BlockError::io("discard", offset, e)),
                }
            }
        }
    }

    /// Reserves space for the range (`fallocate` mode 0) without changing
    /// what it reads as; a no-op where the node has no file below.
    pub async fn allocate(&self, offset: u64, len: u64) -> BlockResult<()> {
        if self.inner.node.read_only() {
            return Err(BlockError::ReadOnly);
        }
        self.check(offset, len)?;
        match &self.inner.leaf {
            Leaf::Null { .. } => Ok(()),
            Leaf::File { fd, .. } => op::fallocate(fd, self.inner.base + offset, len, 0)
                .await
                .map_err(|e| BlockError::io("allocate", offset, e)),
            // qcow2 allocates clusters as they are written and cannot
            // promise space ahead; fallocate(2) callers expect EOPNOTSUPP.
            Leaf::Qcow2(_) => Err(BlockError::NotSupported),
            // Neither librbd nor the NBD protocol can reserve space.
            Leaf::Rbd(_) | Leaf::Remote(_) => Err(BlockError::NotSupported),
        }
    }

    /// Makes the range read as zeroes. `may_unmap` allows a hole; `fast`
    /// fails with [`BlockError::NotSupported`] instead of writing zeroes.
    pub async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_unmap: bool,
        fast: bool,
    ) -> BlockResult<()> {
        if self.inner.node.read_only() {
            return Err(BlockError::ReadOnly);
        }
        self.check(offset, len)?;
        let may_unmap = may_unmap && self.inner.node.unmap();
        let _dirty = self.inner.dirty.guard(offset, len);
        let at = self.inner.base + offset;
        let fd = match &self.inner.leaf {
            Leaf::File { fd, .. } => fd,
            Leaf::Null { .. } => return Ok(()),
            Leaf::Rbd(Some(img)) => return img.write_zeroes(at, len, may_unmap).await,
            Leaf::Remote(leaf) => return leaf.write_zeroes(at, len, may_unmap, fast).await,
            Leaf::Rbd(None) => return Err(unavailable("write zeroes", offset)),
            Leaf::Qcow2(q) => return Box::pin(q.write_zeroes(at, len, may_unmap, fast)).await,
        };
        let modes: &[i32] = if may_unmap {
            &[
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            ]
        } else {
            &[libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE]
        };
        for &mode in modes {
            match op::fallocate(fd, at, len, mode).await {
                Ok(()) => return Ok(()),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
                    ) => {}
                Err(e) => return Err(BlockError::io("write zeroes", offset, e)),
            }
        }
        if fast {
            return Err(BlockError::NotSupported);
        }
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(ZERO_CHUNK as u64) as usize;
            let mut b = pool::check_out(n);
            b.as_mut_slice().fill(0);
            let (r, b) = self.write(offset + done, b, false).await;
            pool::check_in(b);
            r?;
            done += n as u64;
        }
        Ok(())
    }

    /// Status of the run starting at `offset` (at most `max` bytes long);
    /// returns the status and the run's length.
    pub async fn block_status(&self, offset: u64, max: u64) -> BlockResult<(BlockStatus, u64)> {
        if let Leaf::Remote(leaf) = &self.inner.leaf {
            let max = self.status_window(offset, max)?;
            return leaf.block_status(self.inner.base + offset, max).await;
        }
        self.block_status_now(offset, max)
    }

    /// [`Self::block_status`] without waiting: what format drivers ask of
    /// their children (every leaf answers at once but a remote one, which
    /// a qcow2 image does not open over).
    pub(crate) fn block_status_now(
        &self,
        offset: u64,
        max: u64,
    ) -> BlockResult<(BlockStatus, u64)> {
        let max = self.status_window(offset, max)?;
        match &self.inner.leaf {
            Leaf::Null { read_zeroes: true } => Ok((BlockStatus::HOLE, max)),
            Leaf::Null { read_zeroes: false } => Ok((BlockStatus::DATA, max)),
            Leaf::Qcow2(q) => q.block_status(self.inner.base + offset, max),
            Leaf::File { fd, .. } => {
                let leaf_end = self.leaf_size();
                file_status(fd, self.inner.base + offset, max, leaf_end)
                    .map_err(|e| BlockError::io("block status", offset, e))
            }
            Leaf::Rbd(Some(img)) => img.block_status(self.inner.base + offset, max),
            Leaf::Rbd(None) => Ok((BlockStatus::DATA, max)),
            Leaf::Remote(_) => Err(BlockError::NotSupported),
        }
    }

    /// `max` cut to the node's end; an error when `offset` is past it.
    fn status_window(&self, offset: u64, max: u64) -> BlockResult<u64> {
        let size = self.size();
        if offset >= size {
            return Err(BlockError::OutOfRange {
                offset,
                len: max,
                size,
            });
        }
        Ok(max.min(size - offset).max(1))
    }

    fn leaf_node(&self) -> &Arc<BlockNode> {
        let mut n = &self.inner.node;
        while let Some(c) = n.child() {
            n = c;
        }
        n
    }

    fn leaf_size(&self) -> u64 {
        self.leaf_node().size()
    }

    /// Hints that the range will be read soon.
    pub fn cache(&self, offset: u64, len: u64) -> BlockResult<()> {
        self.check(offset, len)?;
        if let Leaf::File { fd, .. } = &self.inner.leaf {
            let _ = nix::fcntl::posix_fadvise(
                fd,
                (self.inner.base + offset) as i64,
                len as i64,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            );
        }
        Ok(())
    }

    /// Grows or shrinks a `file` node (growable exports).
    pub fn truncate(&self, size: u64) -> BlockResult<()> {
        let node = &self.inner.node;
        if node.read_only() {
            return Err(BlockError::ReadOnly);
        }
        match (&node.kind, &self.inner.leaf) {
            (Kind::File(_), Leaf::File { fd, .. }) => {
                nix::unistd::ftruncate(fd, size as i64)
                    .map_err(|e| BlockError::io("truncate", size, e.into()))?;
                node.set_size(size);
                node.bitmaps().resize(size);
                Ok(())
            }
            (Kind::Rbd(_), Leaf::Rbd(Some(img))) => {
                img.resize(size)?;
                node.set_size(size);
                Ok(())
            }
            _ => Err(BlockError::NotSupported),
        }
    }
}

fn flatten(node: &Arc<BlockNode>) -> (Leaf, u64) {
    match &node.kind {
        Kind::File(f) => (
            Leaf::File {
                fd: SharedFd::registered(f.file.clone()),
                buffered: f.buffered.clone().map(SharedFd::from_owner),
                align: f.align,
                no_flush: f.no_flush,
            },
            0,
        ),
        Kind::Null { read_zeroes } => (
            Leaf::Null {
                read_zeroes: *read_zeroes,
            },
            0,
        ),
        Kind::Raw { child, offset } => {
            let (leaf, base) = flatten(child);
            (leaf, base + offset)
        }
        Kind::Rbd(cluster) => {
            let img = LocalImage::open(cluster)
                .inspect_err(|e| log::error!("node {}: cannot open rbd image: {e}", node.name()))
                .ok();
            (Leaf::Rbd(img), 0)
        }
        Kind::Remote(driver) => (Leaf::Remote(driver.open_local()), 0),
        Kind::Qcow2(img) => (Leaf::Qcow2(Qcow2Handle::open(img)), 0),
    }
}

fn unavailable(op: &'static str, offset: u64) -> BlockError {
    BlockError::io(op, offset, std::io::Error::from_raw_os_error(libc::EIO))
}
