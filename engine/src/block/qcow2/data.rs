//! [`Qcow2Handle`]: a qcow2 node's data path on one iothread, and its read
//! side: guest offsets to host extents, then straight to the ring.
//!
//! A read takes no lock: L1 and L2 entries are atomics in the node's
//! [`Image`], loaded once by whichever iothread needs a table first. Each
//! run of clusters that are contiguous on the host becomes one read of the
//! file child into the caller's buffer; unallocated runs are read from the
//! backing node's handle on the same iothread; zero runs are filled here.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::compress::inflate_cluster;
use super::entry::Mapping;
use super::image::Image;
use crate::block::error::{BlockError, BlockResult};
use crate::block::{BlockHandle, BlockStatus};
use crate::buf::{pool, Buf};

/// A qcow2 node on the current iothread. See the module docs.
pub(crate) struct Qcow2Handle {
    pub(crate) img: Arc<Image>,
    pub(crate) file: BlockHandle,
    pub(crate) backing: Option<BlockHandle>,
    /// The cluster this iothread decompressed last: (descriptor offset, data),
    /// so a sequential reader inflates each cluster once.
    compressed: RefCell<Option<(u64, Box<[u8]>)>>,
}

pub(crate) fn eio(op: &'static str, offset: u64, what: &str) -> BlockError {
    BlockError::Io {
        op,
        offset,
        source: std::io::Error::other(what.to_string()),
    }
}

impl Qcow2Handle {
    pub(crate) fn open(img: &Arc<Image>) -> Qcow2Handle {
        Qcow2Handle {
            file: BlockHandle::open(&img.file),
            backing: img.backing.as_ref().map(BlockHandle::open),
            img: img.clone(),
            compressed: RefCell::new(None),
        }
    }

    /// The L2 table of `l1_index`, read through the ring if nobody has yet;
    /// `None` when the L1 entry is empty.
    pub(crate) async fn table(&self, l1_index: usize) -> BlockResult<Option<&[AtomicU64]>> {
        let off = self.img.l1_table(l1_index);
        if off == 0 {
            return Ok(None);
        }
        if let Some(t) = self.img.loaded_table(l1_index) {
            return Ok(Some(t));
        }
        let cs = self.img.geo.cluster_size as usize;
        let (r, buf) = self.file.read_into(off, pool::check_out(cs), 0, cs).await;
        let t = r.map(|()| self.img.install_table(l1_index, buf.as_slice()));
        pool::check_in(buf);
        t
    }

    /// The mapping of the cluster holding `guest`.
    pub(crate) async fn mapping(&self, guest: u64) -> BlockResult<Mapping> {
        let geo = &self.img.geo;
        let Some(t) = self.table(geo.l1_index(guest)).await? else {
            return Ok(Mapping::Unallocated);
        };
        let raw = t
            .get(geo.l2_index(guest))
            .map_or(0, |e| e.load(Ordering::Acquire));
        self.img.decode(raw, guest)
    }

    /// The mapping of `guest` when it is known without I/O.
    pub(crate) fn mapping_now(&self, guest: u64) -> Option<Mapping> {
        let geo = &self.img.geo;
        let i = geo.l1_index(guest);
        if self.img.l1_table(i) == 0 {
            return Some(Mapping::Unallocated);
        }
        let raw = self
            .img
            .loaded_table(i)?
            .get(geo.l2_index(guest))?
            .load(Ordering::Acquire);
        self.img.decode(raw, guest).ok()
    }

    /// Bytes from `guest` to the end of its cluster, at most `left`.
    fn in_cluster(&self, guest: u64, left: u64) -> u64 {
        (self.img.geo.cluster_size - self.img.geo.in_cluster(guest)).min(left)
    }

    /// Extends a run that starts at `guest` with `first` bytes over the
    /// following clusters while `same` holds for their mappings (known
    /// without I/O), up to `left` bytes in all.
    fn extend(
        &self,
        guest: u64,
        first: u64,
        left: u64,
        same: impl Fn(u64, Mapping) -> bool,
    ) -> u64 {
        let mut n = first;
        while n < left {
            match self.mapping_now(guest + n) {
                Some(m) if same(n, m) => n += self.in_cluster(guest + n, left - n),
                _ => break,
            }
        }
        n
    }

    /// Fills `buf[from..from + len]` with the guest data at `offset`.
    pub(crate) async fn read_into(
        &self,
        offset: u64,
        mut buf: Buf,
        from: usize,
        len: usize,
    ) -> (BlockResult<()>, Buf) {
        let mut pos = 0u64;
        let len = len as u64;
        while pos < len {
            let guest = offset + pos;
            let m = match self.mapping(guest).await {
                Ok(m) => m,
                Err(e) => return (Err(e), buf),
            };
            let first = self.in_cluster(guest, len - pos);
            let at = from + pos as usize;
            let (r, b, n) = match m {
                Mapping::Data { .. }
                    if {
                        let lo = self.img.geo.in_cluster(guest);
                        self.img.written.unwritten(guest, lo, lo + first)
                    } =>
                {
                    // A hole of a fresh cluster (see [`super::written`]).
                    buf.zero(at..at + first as usize);
                    (Ok(()), buf, first)
                }
                Mapping::Data { host, .. } => {
                    let start = host + self.img.geo.in_cluster(guest);
                    let n = self.extend(guest, first, len - pos, |d, m| {
                        matches!(m, Mapping::Data { host: h, .. } if h == (start + d) & !(self.img.geo.cluster_size - 1))
                    });
                    let (r, b) = self.file.read_into(start, buf, at, n as usize).await;
                    (r, b, n)
                }
                Mapping::Zero { .. } => {
                    let n = self.extend(guest, first, len - pos, |_, m| {
                        matches!(m, Mapping::Zero { .. })
                            || (self.backing.is_none() && m == Mapping::Unallocated)
                    });
                    buf.zero(at..at + n as usize);
                    (Ok(()), buf, n)
                }
                Mapping::Unallocated => {
                    let n = self.extend(guest, first, len - pos, |_, m| {
                        m == Mapping::Unallocated
                            || (self.backing.is_none() && matches!(m, Mapping::Zero { .. }))
                    });
                    let (r, b) = self.read_backing(guest, buf, at, n).await;
                    (r, b, n)
                }
                Mapping::Compressed {
                    offset: c,
                    len: clen,
                } => {
                    let r = self
                        .read_compressed(c, clen, guest, &mut buf, at, first)
                        .await;
                    (r, buf, first)
                }
            };
            buf = b;
            if let Err(e) = r {
                return (Err(e), buf);
            }
            pos += n;
        }
        (Ok(()), buf)
    }

    /// Unallocated clusters: the backing node's data (zeroes past its end),
    /// or zeroes without one.
    pub(crate) async fn read_backing(
        &self,
        guest: u64,
        mut buf: Buf,
        at: usize,
        n: u64,
    ) -> (BlockResult<()>, Buf) {
        let Some(b) = &self.backing else {
            buf.zero(at..at + n as usize);
            return (Ok(()), buf);
        };
        let from_backing = b.size().saturating_sub(guest).min(n);
        if from_backing < n {
            buf.zero(at + from_backing as usize..at + n as usize);
        }
        if from_backing == 0 {
            return (Ok(()), buf);
        }
        b.read_into(guest, buf, at, from_backing as usize).await
    }

    /// Inflates the compressed cluster described by (`coff`, `clen`) and
    /// copies `n` bytes of it, from `guest`'s place, into `buf[at..]`.
    async fn read_compressed(
        &self,
        coff: u64,
        clen: u64,
        guest: u64,
        buf: &mut Buf,
        at: usize,
        n: u64,
    ) -> BlockResult<()> {
        let inner = self.img.geo.in_cluster(guest) as usize;
        if let Some((key, data)) = &*self.compressed.borrow() {
            if *key == coff {
                buf.as_mut_slice()[at..at + n as usize]
                    .copy_from_slice(&data[inner..inner + n as usize]);
                return Ok(());
            }
        }
        let data = self.inflate(coff, clen, guest).await?;
        buf.as_mut_slice()[at..at + n as usize].copy_from_slice(&data[inner..inner + n as usize]);
        *self.compressed.borrow_mut() = Some((coff, data));
        Ok(())
    }

    /// The whole guest cluster of a compressed descriptor.
    pub(crate) async fn inflate(&self, coff: u64, clen: u64, guest: u64) -> BlockResult<Box<[u8]>> {
        let clen = clen as usize;
        let (r, raw) = self
            .file
            .read_into(coff, pool::check_out(clen), 0, clen)
            .await;
        let mut data = vec![0u8; self.img.geo.cluster_size as usize].into_boxed_slice();
        let res = r.and_then(|()| {
            inflate_cluster(raw.as_slice(), &mut data).map_err(|what| {
                log::error!(
                    "qcow2 node {}: guest offset {guest:#x}: {what}",
                    self.img.name
                );
                eio("qcow2 decompress", guest, what)
            })
        });
        pool::check_in(raw);
        res.map(|()| data)
    }

    /// Block status of the run at `offset` (at most `max` bytes): what
    /// `base:allocation` and `qemu:allocation-depth` report, as QEMU does.
    pub(crate) fn block_status(&self, offset: u64, max: u64) -> BlockResult<(BlockStatus, u64)> {
        let m = self.img.mapping_blocking(offset)?;
        let first = self.in_cluster(offset, max);
        let geo = self.img.geo;
        match m {
            Mapping::Data { host, .. } => {
                let start = host + geo.in_cluster(offset);
                let n = self.extend(offset, first, max, |d, m| {
                    matches!(m, Mapping::Data { host: h, .. } if h == (start + d) & !(geo.cluster_size - 1))
                });
                // Allocated clusters over a hole of the file (preallocation=
                // metadata) read as zeroes: QEMU reports them so.
                let (fst, fl) = self
                    .file
                    .block_status_now(start, n)
                    .unwrap_or((BlockStatus::DATA, n));
                let st = BlockStatus {
                    data: true,
                    zero: fst.zero,
                    depth: 1,
                };
                Ok((st, fl.clamp(1, n)))
            }
            Mapping::Compressed { .. } => {
                let n = self.extend(offset, first, max, |_, m| {
                    matches!(m, Mapping::Compressed { .. })
                });
                Ok((BlockStatus::DATA, n))
            }
            Mapping::Zero { .. } => {
                let n = self.extend(offset, first, max, |_, m| matches!(m, Mapping::Zero { .. }));
                Ok((BlockStatus::HOLE, n))
            }
            Mapping::Unallocated => {
                let n = self.extend(offset, first, max, |_, m| m == Mapping::Unallocated);
                let unallocated = BlockStatus {
                    data: false,
                    zero: true,
                    depth: 0,
                };
                let Some(b) = &self.backing else {
                    return Ok((unallocated, n));
                };
                let bsize = b.size();
                if offset >= bsize {
                    // Past a shorter backing file's end: zeroes, which QEMU
                    // counts as provided by the backing layer.
                    return Ok((
                        BlockStatus {
                            depth: 2,
                            ..unallocated
                        },
                        n,
                    ));
                }
                let (st, bn) = b.block_status_now(offset, n.min(bsize - offset))?;
                let depth = if st.depth == 0 { 0 } else { st.depth + 1 };
                Ok((BlockStatus { depth, ..st }, bn.clamp(1, n)))
            }
        }
    }
}
