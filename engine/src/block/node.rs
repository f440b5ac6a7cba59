//! [`BlockNode`]: a node of the block graph as the control plane sees it.
//!
//! A node is `Send + Sync` and shared (`Arc`): the control thread creates,
//! queries and deletes it, exports attach to it with permissions, and any
//! number of iothreads open their own [`super::BlockHandle`] on it for I/O.
//! What every iothread must agree on (the size) is an atomic the data path
//! reads without a lock; permissions are control-plane state behind a mutex
//! the data path never takes.
//!
//! # Sizes are whole sectors
//!
//! QEMU's block layer counts node sizes in 512-byte sectors, so a
//! 1,000,000-byte image is a 1,000,448-byte disk: the tail past the end of
//! the file reads as zeroes, and a write there extends the file. Every node
//! here rounds its size up the same way ([`round_to_sector`]), so every
//! export type shows the size QSD shows.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::bitmap::BitmapSet;
use super::error::{BlockError, BlockResult};
use super::lock;
use super::perm::{Perm, PermTable};
use super::rbd::{self, RbdOptions};
use super::remote::RemoteDriver;

/// Options of the `file` and `host_device` drivers.
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// Path of the image or device.
    pub filename: String,
    /// `cache.direct`: open with `O_DIRECT`.
    pub direct: bool,
    /// `cache.no-flush`: flushes succeed without syncing.
    pub no_flush: bool,
    /// Open read-only.
    pub read_only: bool,
    /// `locking`: take QEMU-compatible OFD locks.
    pub locking: bool,
    /// `host_device`: the path must be a block or character device.
    pub host_device: bool,
}

/// Options of the `null-co` / `null-aio` drivers.
#[derive(Debug, Clone)]
pub struct NullOptions {
    /// Size in bytes.
    pub size: u64,
    /// Reads return zeroes (otherwise their content is unspecified: here, zeroes too,
    /// but block status reports data).
    pub read_zeroes: bool,
}

/// Options of the `raw` format driver.
#[derive(Debug, Clone)]
pub struct RawOptions {
    /// The protocol node below.
    pub child: Arc<BlockNode>,
    /// Where the data starts in the child.
    pub offset: u64,
    /// How much of the child is visible (default: the rest of it).
    pub size: Option<u64>,
}

/// A node whose driver lives outside the engine (see [`super::remote`]).
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// The driver, already connected (it probed the remote for the size).
    pub driver: Arc<dyn RemoteDriver>,
    /// Size in bytes.
    pub size: u64,
    /// The remote is read-only, or the node was opened so.
    pub read_only: bool,
}

/// Options every node has (QEMU's `BlockdevOptions` base members that the
/// data path obeys).
#[derive(Debug, Clone, Copy)]
pub struct NodeFlags {
    /// `discard=unmap`: discards, and write-zeroes that may unmap, reach the
    /// store; with `discard=ignore` (QEMU's default) a discard does nothing
    /// and zeroes are written without unmapping.
    pub unmap: bool,
}

impl Default for NodeFlags {
    /// What [`BlockNode::open`] uses: discards reach the store.
    fn default() -> NodeFlags {
        NodeFlags { unmap: true }
    }
}

/// What kind of node to open.
#[derive(Debug, Clone)]
pub enum NodeOptions {
    /// `file` or `host_device`.
    File(FileOptions),
    /// `null-co` or `null-aio`.
    Null(NullOptions),
    /// `raw`.
    Raw(RawOptions),
    /// `qcow2`.
    Qcow2(super::qcow2::Qcow2Options),
    /// `rbd`.
    Rbd(RbdOptions),
    /// A driver outside the engine (`nbd`).
    Remote(RemoteOptions),
}

#[derive(Debug)]
pub(crate) struct FileState {
    pub(crate) file: Arc<File>,
    /// The file's length when opened or last truncated: where its data
    /// may end, before the node's size is rounded up to a sector. Writes
    /// into the tail only make the file longer than this.
    pub(crate) file_len: AtomicU64,
    /// A second descriptor without `O_DIRECT` for requests the device
    /// alignment does not allow (only when `direct`).
    pub(crate) buffered: Option<Arc<File>>,
    pub(crate) align: u64,
    pub(crate) no_flush: bool,
    pub(crate) locking: bool,
    pub(crate) filename: String,
}

#[derive(Debug)]
pub(crate) enum Kind {
    File(FileState),
    Null { read_zeroes: bool },
    Raw { child: Arc<BlockNode>, offset: u64 },
    Qcow2(Arc<super::qcow2::Image>),
    Rbd(Arc<rbd::Cluster>),
    Remote(Arc<dyn RemoteDriver>),
}

/// A block node. See the module docs.
#[derive(Debug)]
pub struct BlockNode {
    pub(crate) id: u64,
    name: String,
    driver: &'static str,
    pub(crate) kind: Kind,
    size: AtomicU64,
    read_only: bool,
    perms: PermTable,
    flags: NodeFlags,
    /// Dirty bitmaps (`block-dirty-bitmap-*`).
    bitmaps: Arc<BitmapSet>,
}

static NEXT_NODE_ID: AtomicU64 = AtomicU64::new(1);

/// QEMU's `BDRV_SECTOR_SIZE`.
pub const SECTOR_SIZE: u64 = 512;

/// `size` rounded up to a whole number of sectors (see the module docs).
pub fn round_to_sector(size: u64) -> u64 {
    size.checked_next_multiple_of(SECTOR_SIZE)
        .unwrap_or(u64::MAX - (SECTOR_SIZE - 1))
}

impl BlockNode {
    /// Opens a node named `name` with driver `driver` (QEMU's driver name).
    pub fn open(
        name: &str,
        driver: &'static str,
        options: NodeOptions,
    ) -> BlockResult<Arc<BlockNode>> {
        Self::open_with(name, driver, options, NodeFlags::default())
    }

    /// [`BlockNode::open`] with the options every node has.
    pub fn open_with(
        name: &str,
        driver: &'static str,
        options: NodeOptions,
        flags: NodeFlags,
    ) -> BlockResult<Arc<BlockNode>> {
        // Made first: a qcow2 image loads its stored bitmaps into it.
        let bitmaps = Arc::<BitmapSet>::default();
        let (kind, size, read_only) = match options {
            NodeOptions::File(o) => open_file(o)?,
            NodeOptions::Null(o) => (
                Kind::Null {
                    read_zeroes: o.read_zeroes,
                },
                o.size,
                false,
            ),
            NodeOptions::Raw(o) => {
                let child_size = o.child.size();
                if o.offset > child_size {
                    return Err(BlockError::Invalid(format!(
                        "Offset ({}) cannot be greater than size of the containing file ({child_size})",
                        o.offset
                    )));
                }
                let size = match o.size {
                    Some(s) if o.offset.checked_add(s).is_none_or(|end| end > child_size) => {
                        return Err(BlockError::Invalid(format!(
                            "The sum of offset ({}) and size ({s}) has to be smaller or equal to the  actual size of the containing file ({child_size})",
                            o.offset
                        )));
                    }
                    // Else the rounding would leak past the window.
                    Some(s) if s % SECTOR_SIZE != 0 => {
                        return Err(BlockError::Invalid(format!(
                            "Specified size is not multiple of {SECTOR_SIZE}"
                        )));
                    }
                    Some(s) => s,
                    // With an unaligned offset this may end up to 511 bytes
                    // past the child, as in QEMU: reads there are zeroes.
                    None => child_size - o.offset,
                };
                let ro = o.child.read_only();
                (
                    Kind::Raw {
                        child: o.child,
                        offset: o.offset,
                    },
                    size,
                    ro,
                )
            }
            NodeOptions::Qcow2(o) => {
                let (img, size, ro) = super::qcow2::open(name, o, bitmaps.clone())?;
                (Kind::Qcow2(img), size, ro)
            }
            NodeOptions::Rbd(o) => {
                let (cluster, size) = rbd::open(&o)?;
                (
                    Kind::Rbd(cluster),
                    size,
                    o.read_only || o.snapshot.is_some(),
                )
            }
            NodeOptions::Remote(o) => (Kind::Remote(o.driver), o.size, o.read_only),
        };
        Ok(Arc::new(BlockNode {
            id: NEXT_NODE_ID.fetch_add(1, Ordering::Relaxed),
            name: name.to_string(),
            driver,
            kind,
            size: AtomicU64::new(round_to_sector(size)),
            read_only,
            perms: PermTable::default(),
            flags,
            bitmaps,
        }))
    }

    /// The node name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// QEMU's driver name (`file`, `raw`, `null-co`, ...).
    pub fn driver(&self) -> &'static str {
        self.driver
    }
    /// Size in bytes (atomic: readable from any iothread).
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }
    /// Sets the size after a resize of the file to `size` bytes.
    pub(crate) fn set_size(&self, size: u64) {
        if let Kind::File(f) = &self.kind {
            f.file_len.store(size, Ordering::Release);
        }
        self.size.store(round_to_sector(size), Ordering::Release)
    }
    /// Where the data of this node's bottom may end: a file's length
    /// (see `FileState::file_len`), else the size.
    pub(crate) fn data_end(&self) -> u64 {
        match &self.kind {
            Kind::File(f) => f.file_len.load(Ordering::Acquire),
            _ => self.size(),
        }
    }
    /// Opened read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }
    /// `discard=unmap` in effect: on this node and every `raw` node below
    /// it down to the leaf a handle reaches (a format node's own children
    /// decide for themselves when it passes a request on).
    pub fn unmap(&self) -> bool {
        self.flags.unmap
            && match &self.kind {
                Kind::Raw { child, .. } => child.unmap(),
                _ => true,
            }
    }
    /// How many nodes of that chain, from this one down, a discard gets
    /// through: QEMU stops it at the first node with `discard=ignore`, or
    /// whose driver has no discard (`null-co`), which neither marks its
    /// dirty bitmaps nor passes it on.
    pub(crate) fn discard_depth(&self) -> usize {
        if !self.flags.unmap {
            return 0;
        }
        match &self.kind {
            Kind::Raw { child, .. } => 1 + child.discard_depth(),
            Kind::Null { .. } => 0,
            _ => 1,
        }
    }
    /// What names a remote node's image (`nbd://...`, `pool/image`).
    pub fn remote_name(&self) -> Option<String> {
        match &self.kind {
            Kind::Rbd(c) => Some(c.description.clone()),
            Kind::Remote(d) => Some(d.filename()),
            _ => None,
        }
    }
    /// The child node, for format drivers.
    pub fn child(&self) -> Option<&Arc<BlockNode>> {
        match &self.kind {
            Kind::Raw { child, .. } => Some(child),
            Kind::Qcow2(img) => Some(&img.file),
            _ => None,
        }
    }
    /// The backing node of a format node that has one.
    pub fn backing(&self) -> Option<&Arc<BlockNode>> {
        match &self.kind {
            Kind::Qcow2(img) => img.backing.as_ref(),
            _ => None,
        }
    }
    /// What a qcow2 node reports about its image.
    pub fn qcow2_info(&self) -> Option<super::qcow2::Qcow2Info> {
        match &self.kind {
            Kind::Qcow2(img) => Some(img.info()),
            _ => None,
        }
    }
    /// The image file name, for protocol nodes.
    pub fn filename(&self) -> Option<&str> {
        match &self.kind {
            Kind::File(f) => Some(&f.filename),
            _ => None,
        }
    }
    /// `O_DIRECT` in effect at the bottom of this node.
    pub fn direct(&self) -> bool {
        match &self.kind {
            Kind::File(f) => f.buffered.is_some(),
            Kind::Raw { child, .. } => child.direct(),
            Kind::Qcow2(img) => img.file.direct(),
            Kind::Null { .. } | Kind::Rbd(_) | Kind::Remote(_) => false,
        }
    }
    /// The node's dirty bitmaps.
    pub fn bitmaps(&self) -> &Arc<BitmapSet> {
        &self.bitmaps
    }
    /// Users attached with permissions (exports, parents).
    pub fn users(&self) -> usize {
        self.perms.users()
    }

    /// Attaches a user that needs `perm` and lets others have `shared`.
    /// The permission lasts as long as the returned guard.
    pub fn attach(
        self: &Arc<Self>,
        user: &str,
        perm: Perm,
        shared: Perm,
    ) -> BlockResult<PermGuard> {
        if self.read_only && (perm.contains(Perm::WRITE) || perm.contains(Perm::RESIZE)) {
            return Err(BlockError::ReadOnly);
        }
        let child = match &self.kind {
            Kind::Raw { child, .. } => Some(child.attach(&self.name, perm, shared)?),
            _ => None,
        };
        let id = self.perms.add(&self.name, user, perm, shared)?;
        if let Err(e) = self.update_locks(true) {
            self.perms.remove(id);
            let _ = self.update_locks(false);
            return Err(e);
        }
        Ok(PermGuard {
            node: self.clone(),
            id,
            _child: child.map(Box::new),
        })
    }

    fn update_locks(&self, check: bool) -> BlockResult<()> {
        let Kind::File(f) = &self.kind else {
            return Ok(());
        };
        if !f.locking {
            return Ok(());
        }
        let (perm, unshared) = self.perms.cumulative();
        if check {
            lock::check(&*f.file, perm, unshared)?;
        }
        lock::apply(&*f.file, perm, unshared)
    }
}

/// A user's hold on a node; dropping it gives the permissions back.
#[derive(Debug)]
pub struct PermGuard {
    node: Arc<BlockNode>,
    id: u64,
    _child: Option<Box<PermGuard>>,
}

impl PermGuard {
    /// The node held.
    pub fn node(&self) -> &Arc<BlockNode> {
        &self.node
    }
}

impl Drop for PermGuard {
    fn drop(&mut self) {
        self.node.perms.remove(self.id);
        if let Err(e) = self.node.update_locks(false) {
            log::warn!("node {}: releasing locks: {e}", self.node.name);
        }
    }
}

fn open_file(o: FileOptions) -> BlockResult<(Kind, u64, bool)> {
    let open_err = |source| BlockError::Open {
        path: o.filename.clone(),
        source,
    };
    let mut opts = OpenOptions::new();
    opts.read(true).write(!o.read_only);
    let mut flags = libc::O_CLOEXEC;
    if o.direct {
        flags |= libc::O_DIRECT;
    }
    opts.custom_flags(flags);
    let file = opts.open(&o.filename).map_err(open_err)?;
    let meta = file.metadata().map_err(open_err)?;
    let is_dev = meta.file_type().is_block_device() || meta.file_type().is_char_device();
    if o.host_device && !is_dev {
        return Err(BlockError::Invalid(format!(
            "'host_device' driver requires '{}' to be either a character or block device",
            o.filename
        )));
    }
    if !o.host_device && meta.file_type().is_block_device() {
        return Err(BlockError::Invalid(format!(
            "'file' driver requires '{}' to be a regular file",
            o.filename
        )));
    }
    if meta.is_dir() {
        return Err(BlockError::Invalid(format!(
            "'{}' is a directory",
            o.filename
        )));
    }
    let size = nix::unistd::lseek(&file, 0, nix::unistd::Whence::SeekEnd)
        .map_err(|e| open_err(e.into()))? as u64;
    let buffered = if o.direct {
        let mut b = OpenOptions::new();
        b.read(true)
            .write(!o.read_only)
            .custom_flags(libc::O_CLOEXEC);
        Some(Arc::new(b.open(&o.filename).map_err(open_err)?))
    } else {
        None
    };
    // O_DIRECT needs offsets and lengths aligned to the logical block size;
    // 4 KiB covers every device. Unaligned requests use the buffered fd.
    let align = if o.direct { 4096 } else { 1 };
    let state = FileState {
        file: Arc::new(file),
        file_len: AtomicU64::new(size),
        buffered,
        align,
        no_flush: o.no_flush,
        locking: o.locking,
        filename: o.filename.clone(),
    };
    Ok((Kind::File(state), size, o.read_only))
}
