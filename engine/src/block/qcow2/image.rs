//! [`Image`]: the node-wide state of a qcow2 node, shared by every
//! iothread: geometry, the lock-free mapping tables, the metadata lock.
//!
//! Opening and closing run on the control thread (or wherever the last
//! reference goes) with plain positioned reads and writes on the file
//! child's descriptor; everything in between goes through the iothreads'
//! rings (see [`super::data`] and [`super::alloc`]).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::bitmaps::Stored;
use super::entry::{Mapping, OFFSET_MASK, REFT_OFFSET_MASK};
use super::header::Header;
use super::meta::Meta;
use super::sync::{Event, MetaLock};
use super::written::Written;
use crate::block::bitmap::BitmapSet;
use crate::block::error::{BlockError, BlockResult};
use crate::block::node::{BlockNode, Kind};
use crate::block::perm::Perm;
use crate::block::PermGuard;

/// Sizes and shifts of one image, checked by [`Header::parse`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub(crate) cluster_bits: u32,
    pub(crate) cluster_size: u64,
    /// log2 of the entries of an L2 table.
    pub(crate) l2_bits: u32,
    pub(crate) size: u64,
    pub(crate) version: u32,
    pub(crate) refcount_order: u32,
}

impl Geometry {
    pub(crate) fn l1_index(&self, guest: u64) -> usize {
        (guest >> (self.cluster_bits + self.l2_bits)) as usize
    }
    pub(crate) fn l2_index(&self, guest: u64) -> usize {
        ((guest >> self.cluster_bits) & ((1 << self.l2_bits) - 1)) as usize
    }
    pub(crate) fn in_cluster(&self, off: u64) -> u64 {
        off & (self.cluster_size - 1)
    }
    /// Refcount entries per refcount block.
    pub(crate) fn refblock_entries(&self) -> u64 {
        (self.cluster_size * 8) >> self.refcount_order
    }
}

/// What `query-named-block-nodes` shows of a qcow2 image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2Info {
    /// Bytes per cluster.
    pub cluster_size: u64,
    /// `0.10` or `1.1`.
    pub compat: &'static str,
    /// The lazy refcounts bit.
    pub lazy_refcounts: bool,
    /// Bits per refcount.
    pub refcount_bits: u32,
    /// The corrupt bit.
    pub corrupt: bool,
    /// The backing file named in the image.
    pub backing_file: Option<String>,
    /// Its format, as the image names it.
    pub backing_format: Option<String>,
}

/// The node-wide state. See the module docs.
pub(crate) struct Image {
    pub(crate) name: String,
    pub(crate) file: Arc<BlockNode>,
    pub(crate) backing: Option<Arc<BlockNode>>,
    pub(crate) geo: Geometry,
    pub(crate) header: Header,
    pub(crate) read_only: bool,
    pub(crate) l1_offset: u64,
    /// The active L1 table.
    pub(crate) l1: Box<[AtomicU64]>,
    /// One slot per L1 entry: the L2 table once somebody loaded it. Tables
    /// are never evicted (see the module docs of [`super`]).
    pub(crate) l2: Box<[OnceLock<Box<[AtomicU64]>>]>,
    /// What fresh clusters hold data (see [`super::written`]).
    pub(crate) written: Written,
    /// Refcounts, the allocator, clusters in flight.
    pub(crate) meta: MetaLock<Meta>,
    /// Rung when an allocation in flight completes.
    pub(crate) settled: Event,
    /// The node's dirty bitmaps (the same set as the node's).
    pub(crate) bitmaps: Arc<BitmapSet>,
    /// The bitmaps extension as on disk (see [`super::bitmaps`]).
    pub(crate) stored: Mutex<Stored>,
    /// Positioned I/O on the file child outside the rings (open, block
    /// status of a table nobody loaded yet, close).
    sync_file: Option<Arc<File>>,
    _file_perm: PermGuard,
    _backing_perm: Option<PermGuard>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("qcow2::Image")
            .field("name", &self.name)
            .field("geo", &self.geo)
            .finish()
    }
}

/// The descriptor to use for positioned I/O outside the rings: the
/// buffered one of an `O_DIRECT` file, else the file itself.
fn sync_file_of(node: &BlockNode) -> Option<(Arc<File>, u64)> {
    match &node.kind {
        Kind::File(f) => Some((f.buffered.clone().unwrap_or_else(|| f.file.clone()), 0)),
        Kind::Raw { child, offset } => sync_file_of(child).map(|(f, o)| (f, o + offset)),
        _ => None,
    }
}

/// Reads `buf.len()` bytes at `offset` of `node` (zeroes past its end).
pub(crate) fn sync_read(node: &BlockNode, offset: u64, buf: &mut [u8]) -> BlockResult<()> {
    let Some((file, base)) = sync_file_of(node) else {
        if let Kind::Null { .. } = node.kind {
            buf.fill(0);
            return Ok(());
        }
        return Err(BlockError::NotSupported);
    };
    pread_full(&file, base + offset, buf)
}

fn pread_full(file: &File, offset: u64, buf: &mut [u8]) -> BlockResult<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                buf[done..].fill(0);
                break;
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(BlockError::io("read", offset + done as u64, e)),
        }
    }
    Ok(())
}

fn be_entries(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes.chunks_exact(8).map(|c| {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        u64::from_be_bytes(a)
    })
}

/// Reads and checks the header of the image in `file`.
pub(crate) fn read_header(file: &BlockNode) -> BlockResult<Header> {
    let mut head = vec![0u8; 104];
    sync_read(file, 0, &mut head).map_err(|e| match e {
        BlockError::NotSupported => BlockError::Invalid("Image is not in qcow2 format".into()),
        e => e,
    })?;
    // Parse once for the cluster size, then again with the whole first
    // cluster, where the extensions and the backing file name are.
    let cluster_bits = Header::parse(&head)
        .map_err(|e| BlockError::Invalid(e.to_string()))?
        .cluster_bits;
    let mut first = vec![0u8; 1usize << cluster_bits];
    sync_read(file, 0, &mut first)?;
    Header::parse(&first).map_err(|e| BlockError::Invalid(e.to_string()))
}

impl Image {
    /// Opens the image in `file`; `backing` is the node that provides the
    /// unallocated clusters (the caller resolves the image's own backing
    /// file name, as QEMU's block layer does).
    pub(crate) fn open(
        name: &str,
        file: Arc<BlockNode>,
        backing: Option<Arc<BlockNode>>,
        read_only: bool,
        bitmaps: Arc<BitmapSet>,
    ) -> BlockResult<Image> {
        let header = read_header(&file)?;
        if header.crypt_method != 0 {
            // QEMU asks for the key first; ringstor has no cipher at all.
            return Err(BlockError::Invalid(
                "Parameter 'encrypt.key-secret' is required for cipher".into(),
            ));
        }
        let read_only = read_only || file.read_only();
        if !read_only {
            if header.corrupt() {
                return Err(BlockError::Invalid(
                    "qcow2: Image is corrupt; cannot be opened read/write".into(),
                ));
            }
            if header.dirty() {
                return Err(BlockError::Invalid(
                    "qcow2: Image was not closed cleanly (lazy refcounts); repair it with 'qemu-img check -r all' before opening it read/write with ringstor".into(),
                ));
            }
        }
        let geo = Geometry {
            cluster_bits: header.cluster_bits,
            cluster_size: header.cluster_size(),
            l2_bits: header.cluster_bits - 3,
            size: header.size,
            version: header.version,
            refcount_order: header.refcount_order,
        };
        let mut l1_bytes = vec![0u8; header.l1_size as usize * 8];
        sync_read(&file, header.l1_table_offset, &mut l1_bytes)?;
        let l1: Box<[AtomicU64]> = be_entries(&l1_bytes).map(AtomicU64::new).collect();
        for e in l1.iter() {
            let v = e.load(Ordering::Relaxed) & OFFSET_MASK;
            if !v.is_multiple_of(geo.cluster_size) {
                return Err(BlockError::Invalid(format!(
                    "L2 table offset {v:#x} unaligned"
                )));
            }
        }
        let l2 = (0..l1.len()).map(|_| OnceLock::new()).collect();
        let written = Written::new(&geo, l1.len());
        let mut reft_bytes =
            vec![0u8; header.refcount_table_clusters as usize * geo.cluster_size as usize];
        sync_read(&file, header.refcount_table_offset, &mut reft_bytes)?;
        let reftable: Vec<u64> = be_entries(&reft_bytes)
            .map(|e| e & REFT_OFFSET_MASK)
            .collect();
        if reftable.iter().any(|o| !o.is_multiple_of(geo.cluster_size)) {
            return Err(BlockError::Invalid(
                "Refblock offset not aligned to a cluster".into(),
            ));
        }
        let file_size = file.size();
        // A format node holds its file for as long as it is open, as QEMU's
        // do: writable images take write and resize at once.
        let (perm, shared) = if read_only {
            (
                Perm::CONSISTENT_READ,
                Perm::ALL.minus(Perm::WRITE).minus(Perm::RESIZE),
            )
        } else {
            (
                Perm::CONSISTENT_READ.union(Perm::WRITE).union(Perm::RESIZE),
                Perm::CONSISTENT_READ.union(Perm::WRITE_UNCHANGED),
            )
        };
        let file_perm = file.attach(name, perm, shared)?;
        let backing_perm = match &backing {
            Some(b) => Some(b.attach(
                name,
                Perm::CONSISTENT_READ,
                Perm::ALL.minus(Perm::WRITE).minus(Perm::RESIZE),
            )?),
            None => None,
        };
        let sync_file = sync_file_of(&file).map(|(f, _)| f);
        let img = Image {
            name: name.to_string(),
            l1_offset: header.l1_table_offset,
            file,
            backing,
            geo,
            read_only,
            l1,
            l2,
            written,
            meta: MetaLock::new(Meta::new(
                &geo,
                reftable,
                header.refcount_table_offset,
                file_size,
            )),
            settled: Event::new(),
            bitmaps,
            stored: Mutex::default(),
            sync_file,
            header,
            _file_perm: file_perm,
            _backing_perm: backing_perm,
        };
        img.load_bitmaps()?;
        Ok(img)
    }

    /// Positioned write on the file child outside the rings.
    pub(crate) fn sync_write(&self, offset: u64, data: &[u8]) -> BlockResult<()> {
        let Some(f) = &self.sync_file else {
            return Err(BlockError::NotSupported);
        };
        f.write_all_at(data, offset)
            .map_err(|e| BlockError::io("write", offset, e))
    }

    /// `fdatasync` outside the rings.
    pub(crate) fn sync_flush(&self) -> BlockResult<()> {
        match &self.sync_file {
            Some(f) => f.sync_data().map_err(|e| BlockError::io("flush", 0, e)),
            None => Ok(()),
        }
    }

    /// The L2 table of `l1_index`, if loaded.
    pub(crate) fn loaded_table(&self, l1_index: usize) -> Option<&[AtomicU64]> {
        self.l2.get(l1_index)?.get().map(|t| &t[..])
    }

    /// The L1 entry's table offset (0: no table).
    pub(crate) fn l1_table(&self, l1_index: usize) -> u64 {
        self.l1
            .get(l1_index)
            .map_or(0, |e| e.load(Ordering::Acquire) & OFFSET_MASK)
    }

    /// Installs a table read from disk (first one wins: they are equal,
    /// since only the installed copy is ever modified).
    pub(crate) fn install_table(&self, l1_index: usize, bytes: &[u8]) -> Option<&[AtomicU64]> {
        let slot = self.l2.get(l1_index)?;
        let _ = slot.set(be_entries(bytes).map(AtomicU64::new).collect());
        slot.get().map(|t| &t[..])
    }

    /// Decodes entry `l2_index` of `table`.
    pub(crate) fn decode(&self, raw: u64, guest: u64) -> BlockResult<Mapping> {
        Mapping::decode(raw, self.geo.cluster_bits).map_err(|host| {
            log::error!(
                "qcow2 node {}: L2 entry of guest offset {guest:#x} points to unaligned host offset {host:#x}",
                self.name
            );
            BlockError::io("qcow2 mapping", guest, std::io::Error::from_raw_os_error(libc::EIO))
        })
    }

    /// The mapping of `guest`, loading its L2 table with a blocking read
    /// when nobody has yet (block status, which is synchronous).
    pub(crate) fn mapping_blocking(&self, guest: u64) -> BlockResult<Mapping> {
        let i = self.geo.l1_index(guest);
        let table_off = self.l1_table(i);
        if table_off == 0 {
            return Ok(Mapping::Unallocated);
        }
        let table = match self.loaded_table(i) {
            Some(t) => t,
            None => {
                let mut bytes = vec![0u8; self.geo.cluster_size as usize];
                sync_read(&self.file, table_off, &mut bytes)?;
                match self.install_table(i, &bytes) {
                    Some(t) => t,
                    None => return Ok(Mapping::Unallocated),
                }
            }
        };
        let raw = table
            .get(self.geo.l2_index(guest))
            .map_or(0, |e| e.load(Ordering::Acquire));
        self.decode(raw, guest)
    }

    /// What `query-named-block-nodes` shows.
    pub(crate) fn info(&self) -> Qcow2Info {
        Qcow2Info {
            cluster_size: self.geo.cluster_size,
            compat: self.header.compat(),
            lazy_refcounts: self.header.lazy_refcounts(),
            refcount_bits: 1 << self.header.refcount_order,
            corrupt: self.header.corrupt(),
            backing_file: self.header.backing_file.clone(),
            backing_format: self.header.backing_format.clone(),
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if self.read_only {
            // Stores nothing; says so if a persistent bitmap is lost.
            if let Some(mut meta) = self.meta.take_now() {
                let _ = self.store_bitmaps(&mut meta);
            }
            return;
        }
        // Nothing runs on the rings any more: every handle holds the node.
        let Some(mut meta) = self.meta.take_now() else {
            return;
        };
        if let Err(e) = meta.close_blocking(self) {
            log::warn!(
                "qcow2 node {}: closing: {e} (the image may leak clusters; 'qemu-img check -r leaks' reclaims them)",
                self.name
            );
        }
        if let Err(e) = self.store_bitmaps(&mut meta) {
            log::error!(
                "qcow2 node {}: storing persistent dirty bitmaps: {e} (they stay in-use in the image: inconsistent at the next open)",
                self.name
            );
        }
    }
}
