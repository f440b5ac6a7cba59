//! Parsing one descriptor chain into a virtio-blk [`Request`]: the header,
//! the data segments and the status byte, every address checked against
//! guest memory. No I/O and no guest-memory writes: a chain turns into a
//! request to execute, or into a [`Rejected`] with the status to answer.
//!
//! Each descriptor is looked up in the guest-memory map exactly once: the
//! walk translates it to host addresses (the [`HostMap`], or vm-memory's
//! slices for a range across regions: that is the bounds and permission
//! check), reads the header from there, and keeps the host addresses of
//! the data, so executing the request needs no second lookup.
//!
//! Chain layout (virtio 1.2 §5.2.6): device-readable descriptors first
//! (the 16-byte header, then write data or discard segments), then
//! device-writable ones (read data, then the status byte, the last byte of
//! the chain). The header may be split across descriptors; nothing else
//! about framing is assumed.

use std::sync::Arc;

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, GuestAddress, GuestMemory, Permissions};

use super::chain::walk;
use super::hostmap::{read_volatile_bytes, HostMap};
use super::iovec::GuestIoVecs;
use super::spec::{
    OUTHDR_LEN, SEG_MAX, S_IOERR, S_UNSUPP, T_DISCARD, T_FLUSH, T_GET_ID, T_IN, T_OUT,
    T_WRITE_ZEROES,
};

/// A guest buffer: guest-physical address and length, inside one guest
/// memory region (a descriptor that crosses regions gives several).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical address.
    pub addr: GuestAddress,
    /// Bytes.
    pub len: u32,
    /// Where `addr` is mapped in this process (in the map the request was
    /// parsed with, which the request keeps alive).
    host: *mut u8,
    /// Which descriptor of the chain it came from (for `seg_max`).
    desc: u16,
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `VIRTIO_BLK_T_IN`: read into the data segments.
    Read,
    /// `VIRTIO_BLK_T_OUT`: write the data segments.
    Write,
    /// `VIRTIO_BLK_T_FLUSH`.
    Flush,
    /// `VIRTIO_BLK_T_GET_ID`: the id string into the data segments.
    GetId,
    /// `VIRTIO_BLK_T_DISCARD`: the data segments hold range descriptors.
    Discard,
    /// `VIRTIO_BLK_T_WRITE_ZEROES`: likewise.
    WriteZeroes,
}

/// A parsed request: guest addresses, and for reads and writes the host
/// iovecs of its data, which keep the guest-memory map alive.
pub struct Request<M: GuestMemory> {
    /// Descriptor chain head, for the used ring.
    pub head: u16,
    /// What to do.
    pub kind: RequestKind,
    /// `sector` of the header (512-byte units).
    pub sector: u64,
    /// Data segments: device-readable for writes and discard/write-zeroes,
    /// device-writable for reads and GET_ID.
    pub data: Vec<Segment>,
    /// Total bytes of `data`.
    pub data_len: u64,
    /// Where the status byte goes.
    pub status: GuestAddress,
    /// `data` as host iovecs, for reads and writes (empty otherwise).
    pub bufs: GuestIoVecs<M>,
}

impl<M: GuestMemory> std::fmt::Debug for Request<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("head", &self.head)
            .field("kind", &self.kind)
            .field("sector", &self.sector)
            .field("data", &self.data)
            .field("status", &self.status)
            .finish()
    }
}

/// Why a chain is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No device-writable byte at the end: nowhere to put a status.
    NoStatus,
    /// Fewer than 16 readable bytes before the writable part.
    ShortHeader,
    /// A readable descriptor after a writable one.
    Order,
    /// A descriptor outside guest memory.
    BadAddress,
    /// More data segments than `seg_max`.
    TooManySegments,
    /// Data in the wrong direction for the request type.
    Direction,
    /// A request type we do not implement.
    Unsupported(u32),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::NoStatus => write!(f, "request without a status byte"),
            Reason::ShortHeader => write!(f, "request header shorter than 16 bytes"),
            Reason::Order => write!(f, "device-readable descriptor after a writable one"),
            Reason::BadAddress => write!(f, "descriptor outside guest memory"),
            Reason::TooManySegments => write!(f, "more than {SEG_MAX} data segments"),
            Reason::Direction => write!(f, "data buffers in the wrong direction"),
            Reason::Unsupported(t) => write!(f, "unsupported request type {t}"),
        }
    }
}

/// A chain that is answered without doing I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// Descriptor chain head.
    pub head: u16,
    /// Where to put the status, when there is such a byte.
    pub status: Option<GuestAddress>,
    /// `VIRTIO_BLK_S_IOERR` or `VIRTIO_BLK_S_UNSUPP`.
    pub code: u8,
    /// Why (logged).
    pub reason: Reason,
}

/// Parses the chain at `head` of the descriptor table at `table` (`size`
/// entries) of `mem`, whose host map is `host`. Requests whose chain is
/// cut short by a bad descriptor (the walk ends there) come out as one of
/// the refusals.
pub fn parse<M: GuestMemory>(
    mem: &Arc<M>,
    host: &HostMap,
    table: GuestAddress,
    size: u16,
    head: u16,
) -> Result<Request<M>, Rejected> {
    parse_descriptors(head, mem, host, walk(&**mem, host, table, size, head))
}

/// What the walk over a chain found, before the header is interpreted.
struct Walk {
    /// Non-empty pieces, readable ones first, header bytes removed.
    segs: Vec<Segment>,
    /// Index in `segs` of the first device-writable piece.
    first_writable: usize,
    /// The header bytes found, and how many.
    hdr: [u8; OUTHDR_LEN],
    hdr_len: usize,
    order_broken: bool,
    bad_address: bool,
    /// The last device-writable descriptor is non-empty and mapped.
    status_ok: bool,
}

impl Walk {
    /// Takes `len` mapped bytes of descriptor `desc` at guest `addr`, host
    /// `host`: header bytes first (from readable descriptors), the rest as
    /// a data piece.
    ///
    /// # Safety
    ///
    /// `host..host + len` must be mapped for the call, and stay mapped as
    /// long as the map the request keeps.
    unsafe fn piece(
        &mut self,
        desc: usize,
        write: bool,
        mut addr: GuestAddress,
        mut host: *mut u8,
        mut len: usize,
    ) {
        if !write && self.hdr_len < OUTHDR_LEN {
            let n = len.min(OUTHDR_LEN - self.hdr_len);
            // SAFETY: n <= len bytes at `host`, mapped (the caller).
            unsafe { read_volatile_bytes(host, &mut self.hdr[self.hdr_len..self.hdr_len + n]) };
            self.hdr_len += n;
            // wrapping_add: stays inside the range (n <= len).
            host = host.wrapping_add(n);
            len -= n;
            addr = GuestAddress(addr.0.wrapping_add(n as u64));
        }
        if len > 0 {
            self.segs.push(Segment {
                addr,
                len: len as u32,
                host,
                desc: desc as u16,
            });
        }
    }
}

/// Translates every descriptor once; see the module docs.
fn walk_chain<M: GuestMemory + ?Sized>(
    mem: &M,
    host: &HostMap,
    descriptors: impl Iterator<Item = Descriptor>,
) -> Walk {
    let mut w = Walk {
        segs: Vec::with_capacity(4),
        first_writable: usize::MAX,
        hdr: [0; OUTHDR_LEN],
        hdr_len: 0,
        order_broken: false,
        bad_address: false,
        status_ok: false,
    };
    for (n, d) in descriptors.enumerate() {
        let write = d.is_write_only();
        if !write && w.first_writable != usize::MAX {
            w.order_broken = true;
            continue;
        }
        if write && w.first_writable == usize::MAX {
            w.first_writable = w.segs.len();
        }
        // A zero-length descriptor points nowhere: nothing to check.
        let mapped = d.len() == 0 || translate(mem, host, &mut w, n, write, d);
        if !mapped {
            w.bad_address = true;
        }
        if write {
            w.status_ok = mapped && d.len() > 0;
        }
    }
    if w.first_writable == usize::MAX {
        w.first_writable = w.segs.len();
    }
    w
}

/// Adds the pieces of non-empty descriptor `d` (number `n`) to `w`; false
/// when some of it is not guest memory with the access it needs.
fn translate<M: GuestMemory + ?Sized>(
    mem: &M,
    host: &HostMap,
    w: &mut Walk,
    n: usize,
    write: bool,
    d: Descriptor,
) -> bool {
    let len = d.len() as usize;
    if let Some(p) = host.get(d.addr().0, u64::from(d.len())) {
        // SAFETY: `get` checked the whole range against one region of the
        // map `host` was built from, which is `mem` (the caller's
        // contract), kept alive by the request.
        unsafe { w.piece(n, write, d.addr(), p, len) };
        return true;
    }
    let access = if write {
        Permissions::Write
    } else {
        Permissions::Read
    };
    let Ok(slices) = mem.get_slices(d.addr(), len, access) else {
        return false;
    };
    let mut addr = d.addr();
    for slice in slices {
        let Ok(slice) = slice else {
            return false;
        };
        // SAFETY: the slice is a mapped range of `mem` with the access
        // asked for, and `mem` is the map the request keeps alive.
        unsafe { w.piece(n, write, addr, slice.ptr_guard_mut().as_ptr(), slice.len()) };
        addr = GuestAddress(addr.0.wrapping_add(slice.len() as u64));
    }
    true
}

/// Parses the descriptors of the chain at `head`, however they were walked,
/// translating them in `mem`.
fn parse_descriptors<M: GuestMemory>(
    head: u16,
    mem: &Arc<M>,
    host: &HostMap,
    descriptors: impl Iterator<Item = Descriptor>,
) -> Result<Request<M>, Rejected> {
    let mut w = walk_chain(&**mem, host, descriptors);
    let reject = |status: Option<GuestAddress>, code, reason| Rejected {
        head,
        status,
        code,
        reason,
    };
    // The status byte: the last byte of the last writable descriptor, which
    // is the last piece when that descriptor is non-empty and mapped.
    let has_writable = w.first_writable < w.segs.len();
    let status = match w.segs.last_mut() {
        Some(last) if w.status_ok && has_writable => {
            last.len -= 1;
            let at = last.addr.checked_add(u64::from(last.len));
            if last.len == 0 {
                w.segs.pop();
            }
            at
        }
        _ => None,
    };
    let Some(status) = status else {
        return Err(reject(None, S_IOERR, Reason::NoStatus));
    };
    if w.bad_address {
        return Err(reject(Some(status), S_IOERR, Reason::BadAddress));
    }
    if w.order_broken {
        return Err(reject(Some(status), S_IOERR, Reason::Order));
    }
    if w.hdr_len < OUTHDR_LEN {
        return Err(reject(Some(status), S_IOERR, Reason::ShortHeader));
    }
    let h = &w.hdr;
    let req_type = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let sector = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
    let split = w.first_writable.min(w.segs.len());
    let (kind, data_is_writable) = match req_type {
        T_IN => (RequestKind::Read, true),
        T_OUT => (RequestKind::Write, false),
        T_FLUSH => (RequestKind::Flush, false),
        T_GET_ID => (RequestKind::GetId, true),
        T_DISCARD => (RequestKind::Discard, false),
        T_WRITE_ZEROES => (RequestKind::WriteZeroes, false),
        other => return Err(reject(Some(status), S_UNSUPP, Reason::Unsupported(other))),
    };
    let mut data = w.segs;
    if kind == RequestKind::Flush {
        // QEMU ignores a flush's data buffers; so did we before.
        data.clear();
    } else if (data_is_writable && split > 0) || (!data_is_writable && split < data.len()) {
        // Data going the wrong way for the type (the pieces are non-empty).
        return Err(reject(Some(status), S_IOERR, Reason::Direction));
    }
    if descriptors_in(&data) > SEG_MAX as usize {
        return Err(reject(Some(status), S_IOERR, Reason::TooManySegments));
    }
    let data_len = total_len(&data);
    let access = match kind {
        RequestKind::Read => Some(Permissions::Write),
        RequestKind::Write => Some(Permissions::Read),
        _ => None,
    };
    let iov = match access {
        Some(_) => data
            .iter()
            .map(|s| libc::iovec {
                iov_base: s.host.cast(),
                iov_len: s.len as usize,
            })
            .collect(),
        None => Vec::new(),
    };
    // SAFETY: every `host` pointer came from `host.get` or `get_slices` on
    // `**mem` just now, for `len` bytes with the access the request needs,
    // and `mem` is the map the iovecs keep alive.
    let bufs = unsafe { GuestIoVecs::from_translated(mem.clone(), iov) };
    Ok(Request {
        head,
        kind,
        sector,
        data,
        data_len,
        status,
        bufs,
    })
}

/// How many distinct descriptors `segs` came from.
fn descriptors_in(segs: &[Segment]) -> usize {
    let mut n = 0;
    let mut last = None;
    for s in segs {
        if last != Some(s.desc) {
            n += 1;
            last = Some(s.desc);
        }
    }
    n
}

fn total_len(s: &[Segment]) -> u64 {
    s.iter().map(|s| u64::from(s.len)).sum()
}
