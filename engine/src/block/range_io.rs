//! Positioned I/O on a file for part of a buffer, whole or failed: the
//! loops over short transfers and `EINTR` that format drivers need when
//! one client buffer maps to several places.

use super::error::{BlockError, BlockResult};
use crate::buf::Buf;
use crate::op::{self, SharedFd};

/// Reads `len` bytes at `offset` into `buf[from..from + len]`; past the end
/// of the file, zeroes (as a hole would read).
pub(crate) async fn read(
    fd: &SharedFd,
    offset: u64,
    mut buf: Buf,
    from: usize,
    len: usize,
) -> (BlockResult<()>, Buf) {
    let mut done = 0usize;
    while done < len {
        let (r, b) = op::read_at_len(fd, buf, from + done, len - done, offset + done as u64).await;
        buf = b;
        match r {
            Ok(0) => {
                buf.zero(from + done..from + len);
                break;
            }
            Ok(n) => done += n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return (Err(BlockError::io("read", offset + done as u64, e)), buf),
        }
    }
    (Ok(()), buf)
}

/// Writes `buf[from..from + len]` at `offset` with `rw_flags`.
pub(crate) async fn write(
    fd: &SharedFd,
    offset: u64,
    mut buf: Buf,
    from: usize,
    len: usize,
    rw_flags: i32,
) -> (BlockResult<()>, Buf) {
    let mut done = 0usize;
    while done < len {
        let at = offset + done as u64;
        let (r, b) = op::write_at_len(fd, buf, from + done, len - done, at, rw_flags).await;
        buf = b;
        match r {
            Ok(0) => {
                let e = std::io::ErrorKind::WriteZero.into();
                return (Err(BlockError::io("write", at, e)), buf);
            }
            Ok(n) => done += n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return (Err(BlockError::io("write", at, e)), buf),
        }
    }
    (Ok(()), buf)
}
