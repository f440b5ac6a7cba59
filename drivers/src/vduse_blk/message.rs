//! The message protocol on the device fd, as bytes (no I/O here): the
//! kernel's `vduse_dev_request` in, our `vduse_dev_response` out, in
//! native byte order as the C structs are.
//!
//! A request of a type we do not know is answered `FAILED`, as the
//! reserved words say future types may come. The kernel-side half
//! (encoding requests, decoding responses) is here too, for the
//! in-process stand-in.

use std::io;
use std::os::fd::BorrowedFd;

use super::sys::{
    self, IOVA_LAST, REQUEST_LEN, REQUEST_PAYLOAD, RESPONSE_LEN, RESPONSE_PAYLOAD, VQ_STATE_AVAIL,
};

/// What the kernel asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `VDUSE_GET_VQ_STATE`: where queue `index` stands (split ring).
    GetVqState {
        /// Queue index.
        index: u32,
    },
    /// `VDUSE_SET_STATUS`: the driver wrote the device status.
    SetStatus {
        /// The new virtio status byte (0: reset).
        status: u8,
    },
    /// `VDUSE_UPDATE_IOTLB`: mappings in `start..=last` changed; drop them
    /// and fetch them again.
    UpdateIotlb {
        /// First IOVA.
        start: u64,
        /// Last IOVA (inclusive).
        last: u64,
    },
    /// A type this version does not know.
    Unknown {
        /// The request type.
        kind: u32,
    },
}

/// A request and the id its response must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// `request_id`.
    pub id: u32,
    /// What is asked.
    pub request: Request,
}

/// Our answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `VDUSE_REQ_RESULT_OK`.
    Ok,
    /// `VDUSE_REQ_RESULT_FAILED`.
    Failed,
    /// `OK` with the state of a queue (`GET_VQ_STATE`).
    VqState {
        /// Queue index.
        index: u32,
        /// `split.avail_index`: the first avail entry not yet taken.
        avail_index: u16,
    },
}

#[cfg(test)]
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(v)
}

/// Decodes one request (every offset is inside the fixed-size array).
pub fn decode_request(b: &[u8; REQUEST_LEN]) -> Message {
    let kind = u32_at(b, 0);
    let id = u32_at(b, 4);
    let p = REQUEST_PAYLOAD;
    let request = match kind {
        sys::REQ_GET_VQ_STATE => Request::GetVqState {
            index: u32_at(b, p),
        },
        sys::REQ_SET_STATUS => Request::SetStatus { status: b[p] },
        sys::REQ_UPDATE_IOTLB => Request::UpdateIotlb {
            start: u64_at(b, p),
            last: u64_at(b, p + IOVA_LAST),
        },
        kind => Request::Unknown { kind },
    };
    Message { id, request }
}

/// Encodes the response to request `id` (reserved words zero, as the
/// kernel insists).
pub fn encode_reply(id: u32, reply: Reply) -> [u8; RESPONSE_LEN] {
    let mut b = [0u8; RESPONSE_LEN];
    b[0..4].copy_from_slice(&id.to_ne_bytes());
    let result = match reply {
        Reply::Failed => sys::RESULT_FAILED,
        Reply::Ok | Reply::VqState { .. } => sys::RESULT_OK,
    };
    b[4..8].copy_from_slice(&result.to_ne_bytes());
    if let Reply::VqState { index, avail_index } = reply {
        let p = RESPONSE_PAYLOAD;
        b[p..p + 4].copy_from_slice(&index.to_ne_bytes());
        b[p + VQ_STATE_AVAIL..p + VQ_STATE_AVAIL + 2].copy_from_slice(&avail_index.to_ne_bytes());
    }
    b
}

/// The kernel side: encodes a request.
#[cfg(test)]
pub fn encode_request(m: &Message) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    let p = REQUEST_PAYLOAD;
    let kind = match m.request {
        Request::GetVqState { index } => {
            b[p..p + 4].copy_from_slice(&index.to_ne_bytes());
            sys::REQ_GET_VQ_STATE
        }
        Request::SetStatus { status } => {
            b[p] = status;
            sys::REQ_SET_STATUS
        }
        Request::UpdateIotlb { start, last } => {
            b[p..p + 8].copy_from_slice(&start.to_ne_bytes());
            b[p + IOVA_LAST..p + IOVA_LAST + 8].copy_from_slice(&last.to_ne_bytes());
            sys::REQ_UPDATE_IOTLB
        }
        Request::Unknown { kind } => kind,
    };
    b[0..4].copy_from_slice(&kind.to_ne_bytes());
    b[4..8].copy_from_slice(&m.id.to_ne_bytes());
    b
}

/// The kernel side: decodes a response as `vduse_dev_write_iter` does
/// (`None` when a reserved word is not zero). Returns the id, whether it
/// is OK, and the queue state words.
#[cfg(test)]
pub fn decode_reply(b: &[u8; RESPONSE_LEN]) -> Option<(u32, bool, u32, u16)> {
    if b[8..RESPONSE_PAYLOAD].iter().any(|&x| x != 0) {
        return None;
    }
    let p = RESPONSE_PAYLOAD;
    Some((
        u32_at(b, 0),
        u32_at(b, 4) == sys::RESULT_OK,
        u32_at(b, p),
        u16_at(b, p + VQ_STATE_AVAIL),
    ))
}

/// Reads the next request; `Ok(None)` when none is waiting.
pub fn read_request(fd: BorrowedFd<'_>) -> io::Result<Option<Message>> {
    let mut b = [0u8; REQUEST_LEN];
    loop {
        match nix::unistd::read(fd, &mut b) {
            Ok(REQUEST_LEN) => return Ok(Some(decode_request(&b))),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the device fd was closed",
                ))
            }
            Ok(n) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("short VDUSE request ({n} of {REQUEST_LEN} bytes)"),
                ))
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes one response.
pub fn write_reply(fd: BorrowedFd<'_>, id: u32, reply: Reply) -> io::Result<()> {
    let b = encode_reply(id, reply);
    loop {
        match nix::unistd::write(fd, &b) {
            Ok(RESPONSE_LEN) => return Ok(()),
            Ok(n) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short VDUSE response ({n} of {RESPONSE_LEN} bytes)"),
                ))
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_the_uapi_layout() {
        for request in [
            Request::GetVqState { index: 3 },
            Request::SetStatus { status: 0x0f },
            Request::UpdateIotlb {
                start: 0x1000,
                last: u64::MAX,
            },
            Request::Unknown { kind: 77 },
        ] {
            let m = Message { id: 9, request };
            assert_eq!(decode_request(&encode_request(&m)), m);
        }
        // Field positions as the C struct has them.
        let b = encode_request(&Message {
            id: 5,
            request: Request::UpdateIotlb { start: 7, last: 8 },
        });
        assert_eq!(u32_at(&b, 0), sys::REQ_UPDATE_IOTLB);
        assert_eq!(u32_at(&b, 4), 5);
        assert_eq!(u64_at(&b, 24), 7);
        assert_eq!(u64_at(&b, 32), 8);
    }

    #[test]
    fn replies_keep_reserved_words_zero() {
        let b = encode_reply(
            4,
            Reply::VqState {
                index: 1,
                avail_index: 0x1234,
            },
        );
        assert_eq!(decode_reply(&b), Some((4, true, 1, 0x1234)));
        assert_eq!(u16_at(&b, 28), 0x1234);
        assert_eq!(
            decode_reply(&encode_reply(6, Reply::Failed)),
            Some((6, false, 0, 0))
        );
        let mut bad = encode_reply(6, Reply::Ok);
        bad[12] = 1;
        assert_eq!(decode_reply(&bad), None);
    }
}
