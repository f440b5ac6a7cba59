//! `SET_STATUS` / `GET_STATUS` (`VHOST_USER_PROTOCOL_F_STATUS`), answered
//! beside vhost's `BackendReqHandler`, which does not know these two
//! messages: before each message the protocol thread peeks at the header,
//! and takes these two off the socket itself.
//!
//! Message layout (vhost-user spec): `u32 request, u32 flags, u32 size`,
//! then `size` bytes; `SET_STATUS` carries a `u64` status, `GET_STATUS` is
//! answered with one.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use super::backend::Backend;

const SET_STATUS: u32 = 39;
const GET_STATUS: u32 = 40;
const HEADER: usize = 12;
/// `VHOST_USER_VERSION` | reply.
const REPLY_FLAGS: u32 = 0x1 | 0x4;
const NEED_REPLY: u32 = 0x8;
/// virtio `DEVICE_NEEDS_RESET`.
const NEEDS_RESET: u8 = 0x40;

/// What [`intercept`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Intercepted {
    /// Not one of ours: let vhost's handler read it.
    No,
    /// Read and answered.
    Handled,
}

fn reply(stream: &mut UnixStream, request: u32, value: u64) -> std::io::Result<()> {
    let mut m = [0u8; HEADER + 8];
    m[0..4].copy_from_slice(&request.to_le_bytes());
    m[4..8].copy_from_slice(&REPLY_FLAGS.to_le_bytes());
    m[8..12].copy_from_slice(&8u32.to_le_bytes());
    m[12..20].copy_from_slice(&value.to_le_bytes());
    stream.write_all(&m)
}

/// Answers a waiting `SET_STATUS` or `GET_STATUS`.
pub fn intercept(stream: &mut UnixStream, backend: &mut Backend) -> std::io::Result<Intercepted> {
    let mut hdr = [0u8; HEADER];
    let n = nix::sys::socket::recv(
        stream.as_raw_fd(),
        &mut hdr,
        nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    )
    .unwrap_or(0);
    if n < HEADER {
        return Ok(Intercepted::No);
    }
    let request = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let flags = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    let size = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) as usize;
    if request != SET_STATUS && request != GET_STATUS {
        return Ok(Intercepted::No);
    }
    if size > 8 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "oversized status message",
        ));
    }
    let mut msg = [0u8; HEADER + 8];
    stream.read_exact(&mut msg[..HEADER + size])?;
    if request == GET_STATUS {
        let mut status = backend.status;
        if backend.needs_reset() {
            status |= NEEDS_RESET;
        }
        reply(stream, GET_STATUS, u64::from(status))?;
    } else {
        if size != 8 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "SET_STATUS without a status",
            ));
        }
        let mut v = [0u8; 8];
        v.copy_from_slice(&msg[HEADER..HEADER + 8]);
        backend.status = u64::from_le_bytes(v) as u8;
        if flags & NEED_REPLY != 0 && backend.reply_ack() {
            reply(stream, SET_STATUS, 0)?;
        }
    }
    Ok(Intercepted::Handled)
}
