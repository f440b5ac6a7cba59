//! Parsing one descriptor chain into a virtio-blk [`Request`]: the header,
//! the data segments and the status byte, every address checked against
//! guest memory. No I/O and no guest-memory writes: a chain turns into a
//! request to execute, or into a [`Rejected`] with the status to answer.
//!
//! Chain layout (virtio 1.2 §5.2.6): device-readable descriptors first
//! (the 16-byte header, then write data or discard segments), then
//! device-writable ones (read data, then the status byte, the last byte of
//! the chain). The header may be split across descriptors; nothing else
//! about framing is assumed.

use std::ops::Deref;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

use super::spec::{
    OUTHDR_LEN, SEG_MAX, S_IOERR, S_UNSUPP, T_DISCARD, T_FLUSH, T_GET_ID, T_IN, T_OUT,
    T_WRITE_ZEROES,
};

/// A guest buffer: guest-physical address and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical address.
    pub addr: GuestAddress,
    /// Bytes.
    pub len: u32,
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

/// A parsed request, owning nothing in guest memory but addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
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

/// Parses `chain`. Requests whose chain is cut short by a bad descriptor
/// (virtio-queue ends the walk there) come out as one of the refusals.
pub fn parse<M>(chain: DescriptorChain<M>) -> Result<Request, Rejected>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let head = chain.head_index();
    // Walk a clone so `mem` stays borrowed from the original chain.
    let walk = chain.clone();
    parse_descriptors(head, chain.memory(), walk)
}

/// Parses the descriptors of the chain at `head`, however they were walked.
pub fn parse_descriptors<M: GuestMemory + ?Sized>(
    head: u16,
    mem: &M,
    descriptors: impl Iterator<Item = Descriptor>,
) -> Result<Request, Rejected> {
    let mut readable: Vec<Segment> = Vec::new();
    let mut writable: Vec<Segment> = Vec::new();
    let mut order_broken = false;
    let mut bad_address = false;
    for d in descriptors {
        let seg = Segment {
            addr: d.addr(),
            len: d.len(),
        };
        let access = if d.is_write_only() {
            Permissions::Write
        } else {
            Permissions::Read
        };
        if seg.len > 0 && !mem.check_range(seg.addr, seg.len as usize, access) {
            bad_address = true;
        }
        if d.is_write_only() {
            writable.push(seg);
        } else if writable.is_empty() {
            readable.push(seg);
        } else {
            order_broken = true;
        }
    }
    let reject = |status: Option<GuestAddress>, code, reason| Rejected {
        head,
        status,
        code,
        reason,
    };
    // The status byte: the last byte of the last writable descriptor.
    let status = match writable.last_mut() {
        Some(last)
            if last.len > 0
                && mem.check_range(last.addr, last.len as usize, Permissions::Write) =>
        {
            last.len -= 1;
            last.addr.checked_add(u64::from(last.len))
        }
        _ => None,
    };
    let Some(status) = status else {
        return Err(reject(None, S_IOERR, Reason::NoStatus));
    };
    if writable.last().is_some_and(|s| s.len == 0) {
        writable.pop();
    }
    if bad_address {
        return Err(reject(Some(status), S_IOERR, Reason::BadAddress));
    }
    if order_broken {
        return Err(reject(Some(status), S_IOERR, Reason::Order));
    }
    let Some((req_type, sector)) = read_header(mem, &mut readable) else {
        return Err(reject(Some(status), S_IOERR, Reason::ShortHeader));
    };
    // `other` is the data going the wrong way for the type: it must be empty.
    let (kind, data, other) = match req_type {
        T_IN => (RequestKind::Read, writable, readable),
        T_OUT => (RequestKind::Write, readable, writable),
        T_FLUSH => (RequestKind::Flush, Vec::new(), Vec::new()),
        T_GET_ID => (RequestKind::GetId, writable, readable),
        T_DISCARD => (RequestKind::Discard, readable, writable),
        T_WRITE_ZEROES => (RequestKind::WriteZeroes, readable, writable),
        other => return Err(reject(Some(status), S_UNSUPP, Reason::Unsupported(other))),
    };
    if total_len(&other) > 0 {
        return Err(reject(Some(status), S_IOERR, Reason::Direction));
    }
    let data: Vec<Segment> = data.into_iter().filter(|s| s.len > 0).collect();
    if data.len() > SEG_MAX as usize {
        return Err(reject(Some(status), S_IOERR, Reason::TooManySegments));
    }
    let data_len = data.iter().map(|s| u64::from(s.len)).sum();
    Ok(Request {
        head,
        kind,
        sector,
        data,
        data_len,
        status,
    })
}

fn total_len(s: &[Segment]) -> u64 {
    s.iter().map(|s| u64::from(s.len)).sum()
}

/// Reads the 16-byte header from the front of `readable` (it may span
/// descriptors) and removes those bytes from it; returns (type, sector).
fn read_header<M: GuestMemory + ?Sized>(
    mem: &M,
    readable: &mut Vec<Segment>,
) -> Option<(u32, u64)> {
    let mut hdr = [0u8; OUTHDR_LEN];
    let mut got = 0usize;
    let mut consumed = 0usize;
    for seg in readable.iter_mut() {
        if got == OUTHDR_LEN {
            break;
        }
        let n = (seg.len as usize).min(OUTHDR_LEN - got);
        mem.read_slice(&mut hdr[got..got + n], seg.addr).ok()?;
        got += n;
        seg.addr = seg.addr.checked_add(n as u64)?;
        seg.len -= n as u32;
        if seg.len == 0 {
            consumed += 1;
        }
    }
    if got < OUTHDR_LEN {
        return None;
    }
    readable.drain(..consumed);
    let t = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let sector = u64::from_le_bytes([
        hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14], hdr[15],
    ]);
    Some((t, sector))
}
