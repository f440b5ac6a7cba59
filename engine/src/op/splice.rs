//! `IORING_OP_SPLICE` and [`Pipe`]: moving page-cache pages to a socket
//! without copying them through user memory.
//!
//! A large read reply goes file → pipe → socket: the first splice takes
//! references to the page-cache pages, the second hands them to the socket
//! (unix sockets take page references with `MSG_SPLICE_PAGES` since Linux
//! 6.5). The server never copies the data; the client's receive is the one
//! copy left.

use std::os::fd::OwnedFd;

use io_uring::opcode;

use super::{Completable, Op, SharedFd};
use crate::ring::Completion;

/// Pipe capacity asked for (the default `fs.pipe-max-size` allows 1 MiB).
const PIPE_SIZE: usize = 1 << 20;

struct Splice {
    _in: SharedFd,
    _out: SharedFd,
}

impl Completable for Splice {
    type Output = std::io::Result<usize>;
    fn complete(self, c: Completion) -> Self::Output {
        c.into_result().map(|n| n as usize)
    }
}

async fn splice(
    fd_in: &SharedFd,
    off_in: i64,
    fd_out: &SharedFd,
    len: u32,
) -> std::io::Result<usize> {
    let out = fd_out.sqe_fd();
    let sqe = super::fd::with_fd!(fd_in, |f| opcode::Splice::new(f, off_in, out, -1, len)
        .flags(libc::SPLICE_F_MOVE)
        .build());
    // SAFETY: the SQE carries no pointer; the op keeps both fds open.
    unsafe {
        Op::submit(
            Splice {
                _in: fd_in.clone(),
                _out: fd_out.clone(),
            },
            sqe,
        )
    }
    .await
}

/// A pipe owned by one connection, used to splice file pages to its socket.
pub struct Pipe {
    read: SharedFd,
    write: SharedFd,
    capacity: usize,
}

impl Pipe {
    /// A new pipe, grown to 1 MiB where the system allows it.
    pub fn new() -> std::io::Result<Pipe> {
        let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let capacity = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE as i32))
            .map(|n| n as usize)
            .unwrap_or(64 * 1024);
        Ok(Pipe {
            read: SharedFd::new(r),
            write: SharedFd::new(w),
            capacity,
        })
    }

    /// Bytes the pipe holds at most (the largest single fill).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Splices up to `len` bytes of `file` at `offset` into the (empty) pipe;
    /// returns the count, 0 at end of file.
    pub async fn fill_from(
        &self,
        file: &SharedFd,
        offset: u64,
        len: usize,
    ) -> std::io::Result<usize> {
        let len = len.min(self.capacity).min(u32::MAX as usize) as u32;
        splice(file, offset as i64, &self.write, len).await
    }

    /// Moves exactly `len` bytes from the pipe to `socket`.
    pub async fn drain_to(&self, socket: &SharedFd, len: usize) -> std::io::Result<()> {
        let mut left = len;
        while left > 0 {
            let n = splice(&self.read, -1, socket, left.min(u32::MAX as usize) as u32).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            left -= n.min(left);
        }
        Ok(())
    }
}
