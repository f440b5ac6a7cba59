//! `IORING_OP_URING_CMD` with an 80-byte command (128-byte SQE): a
//! driver-specific command on a file, here the FUSE ring commands
//! (`FUSE_IO_URING_CMD_REGISTER`, `..._COMMIT_AND_FETCH`).
//!
//! The command carries an iovec array describing buffers ([`CmdBufs`]) that
//! the op owns until its completion, like every op. Unlike a read, a driver
//! may keep those addresses after the completion and use them again during
//! a later command (a FUSE ring entry is registered once and filled by every
//! fetch), which is why [`uring_cmd80`] is `unsafe` and checks, before each
//! submission, that the buffers are still the ones the iovecs describe.

use io_uring::{opcode, squeue};

use super::{Completable, Op, SharedFd};
use crate::buf::{Buf, IoBufMut};
use crate::ring::Completion;

/// Buffers handed to the kernel as an iovec array (each buffer's whole
/// capacity). A buffer can be taken out between commands (to do I/O with
/// it) and must be put back before the next command.
pub struct CmdBufs {
    bufs: Vec<Option<Buf>>,
    /// One per buffer: the address and capacity it had when built.
    iov: Box<[libc::iovec]>,
}

impl CmdBufs {
    /// Describes `bufs`, each by its whole capacity.
    pub fn new(bufs: Vec<Buf>) -> CmdBufs {
        let mut bufs: Vec<Option<Buf>> = bufs.into_iter().map(Some).collect();
        let iov = bufs
            .iter_mut()
            .flatten()
            .map(|b| libc::iovec {
                iov_base: b.stable_mut_ptr().cast(),
                iov_len: b.capacity(),
            })
            .collect();
        CmdBufs { bufs, iov }
    }

    /// Buffer `i`, unless taken out.
    pub fn get(&self, i: usize) -> Option<&Buf> {
        self.bufs.get(i).and_then(Option::as_ref)
    }

    /// Buffer `i` for writing, unless taken out.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Buf> {
        self.bufs.get_mut(i).and_then(Option::as_mut)
    }

    /// Takes buffer `i` out (for an I/O that owns it).
    pub fn take(&mut self, i: usize) -> Option<Buf> {
        self.bufs.get_mut(i).and_then(Option::take)
    }

    /// Puts a buffer back in place `i`; a command refuses to go while a
    /// place is empty or holds another allocation than the one described.
    pub fn put(&mut self, i: usize, buf: Buf) {
        if let Some(slot) = self.bufs.get_mut(i) {
            *slot = Some(buf);
        }
    }

    /// Every buffer is in place and is the allocation its iovec describes.
    fn intact(&mut self) -> bool {
        self.bufs.len() == self.iov.len()
            && self.bufs.iter_mut().zip(self.iov.iter()).all(|(b, v)| {
                b.as_mut().is_some_and(|b| {
                    b.stable_mut_ptr().cast() == v.iov_base && b.capacity() == v.iov_len
                })
            })
    }
}

struct UringCmd {
    _fd: SharedFd,
    bufs: CmdBufs,
}

impl Completable for UringCmd {
    type Output = (std::io::Result<u32>, CmdBufs);
    fn complete(self, c: Completion) -> Self::Output {
        (c.into_result(), self.bufs)
    }
}

/// Submits `cmd_op` with the 80-byte `cmd` on `fd`, `addr`/`len` set to the
/// iovec array of `bufs`; completes with the CQE's result. Fails with
/// `EINVAL` without submitting when a buffer of `bufs` is missing or
/// replaced, or when the ring has 64-byte SQEs.
///
/// # Safety
///
/// The kernel may keep the buffer addresses after this command completes
/// and write into them while a later command on `fd` is in flight (FUSE
/// ring entries: registered once, filled on every fetch). The caller must
/// pass the same `CmdBufs` to every later command that can make the kernel
/// touch them (for FUSE: every commit of a request fetched into them), so
/// that the memory is owned by the op in flight whenever the kernel uses it.
pub async unsafe fn uring_cmd80(
    fd: &SharedFd,
    cmd_op: u32,
    cmd: [u8; 80],
    mut bufs: CmdBufs,
) -> (std::io::Result<u32>, CmdBufs) {
    if !bufs.intact() {
        return (Err(std::io::Error::from_raw_os_error(libc::EINVAL)), bufs);
    }
    let sqe: squeue::Entry128 = opcode::UringCmd80::new(fd.sqe_fd(), cmd_op)
        .cmd(cmd)
        .addr(Some(bufs.iov.as_ptr() as u64))
        .build();
    let len = bufs.iov.len() as u32;
    let sqe = set_len(sqe, len);
    // SAFETY: the iovec array is boxed in `bufs` and describes buffers the
    // op owns (checked intact above) until its completion; later uses of
    // the addresses by the kernel are covered by this function's contract.
    unsafe {
        Op::submit128(
            UringCmd {
                _fd: fd.clone(),
                bufs,
            },
            sqe,
        )
    }
    .await
}

/// `sqe->len` (the iovec count) of a URING_CMD, which the builder has no
/// setter for: bytes 24..28 of the SQE.
fn set_len(sqe: squeue::Entry128, len: u32) -> squeue::Entry128 {
    let mut raw: [u8; 128] = sqe_bytes(&sqe);
    raw[24..28].copy_from_slice(&len.to_ne_bytes());
    sqe_from_bytes(raw)
}

fn sqe_bytes(sqe: &squeue::Entry128) -> [u8; 128] {
    const _: () = assert!(std::mem::size_of::<squeue::Entry128>() == 128);
    // SAFETY: Entry128 is repr(C) (an io_uring_sqe then 64 bytes), 128
    // bytes (asserted above), and has no padding: io_uring_sqe is integers
    // and unions of integers, zero-initialised by the builder.
    unsafe { std::mem::transmute_copy(sqe) }
}

fn sqe_from_bytes(raw: [u8; 128]) -> squeue::Entry128 {
    // SAFETY: Entry128 is repr(C) and made of integers only, so any 128
    // bytes are a valid value; these come from a valid SQE with `len` set.
    unsafe { std::mem::transmute(raw) }
}
