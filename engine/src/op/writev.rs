//! `IORING_OP_WRITEV` from a [`GatherList`]: one message to a character
//! device (a FUSE reply: header bytes, then the read data as it is).

use io_uring::opcode;

use super::{Completable, GatherList, Op, SharedFd};
use crate::buf::BufResult;
use crate::ring::Completion;

struct Writev {
    _fd: SharedFd,
    list: GatherList,
}

impl Completable for Writev {
    type Output = BufResult<usize, GatherList>;
    fn complete(self, c: Completion) -> Self::Output {
        (c.into_result().map(|n| n as usize), self.list)
    }
}

/// Writes the whole list in one `writev` at the file's position (devices
/// and pipes have none); returns how many bytes were written.
pub async fn writev(fd: &SharedFd, mut list: GatherList) -> BufResult<usize, GatherList> {
    if list.build_iov(0) == 0 {
        return (Ok(0), list);
    }
    let (iov, n) = list.iovecs();
    let sqe = super::fd::with_fd!(fd, |f| opcode::Writev::new(f, iov, n as u32)
        .offset(u64::MAX)
        .build());
    // SAFETY: the iovecs and everything they point to live in `list` (its
    // arena and owned Bufs), which the op owns until completion and nobody
    // mutates meanwhile.
    unsafe {
        Op::submit(
            Writev {
                _fd: fd.clone(),
                list,
            },
            sqe,
        )
    }
    .await
}
