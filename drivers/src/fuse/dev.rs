//! The `/dev/fuse` transport: one cloned connection descriptor per
//! iothread, read and answered on that iothread's ring.
//!
//! A reader task keeps one `READV` in flight: the request's headers go to
//! a small buffer, and everything after the first 80 bytes (in-header plus
//! `fuse_write_in`) to a 64 KiB buffer (a slot of the registered arena),
//! then to a large one for the rest of `max_write`. So a WRITE of up to
//! 64 KiB has its data page-aligned in a buffer of its own, written to the
//! image from where the kernel put it; only larger ones are joined.
//! Each request then runs in its own task; its reply (out-header, then the
//! read data as it is, no copy) leaves in one `WRITEV`. The descriptor is
//! non-blocking: when the kernel has no request the read waits in the ring
//! (io_uring polls the device), never in a system call.

use std::rc::Rc;

use engine::buf::{pool, Buf};
use engine::iothread::spawn_local;
use engine::op::{self, GatherList, SharedFd};

use super::exec::{Exec, MAX_IO};
use super::proto::consts::FUSE_WRITE;
use super::proto::{
    out_header, parse_header, parse_operation, InHeader, Operation, Reply, ReplyBody,
    IN_HEADER_LEN, WRITE_IN_LEN,
};

/// Where the read of a request is split: in-header + `fuse_write_in`.
const SPLIT: usize = IN_HEADER_LEN + WRITE_IN_LEN;
/// Longest argument structure the export decodes (`fuse_setattr_in`), plus room.
const MAX_ARGS: usize = 128;
/// The buffer a small WRITE's data lands in (one arena slot).
const SMALL: usize = 64 << 10;
/// Reply lists kept per iothread for reuse.
const SPARE_LISTS: usize = 64;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<GatherList>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Serves requests from `fd` until the connection goes away; `live` is
/// dropped (one of the export's live tasks) when it returns.
pub(crate) async fn serve(fd: SharedFd, exec: Rc<Exec>, live: Box<dyn std::any::Any>) {
    let _live = live;
    let mut bufs = vec![
        Buf::with_capacity(SPLIT),
        pool::check_out(SMALL),
        Buf::with_capacity(MAX_IO - SMALL),
    ];
    loop {
        bufs[0].set_len(SPLIT);
        bufs[1].set_len(SMALL);
        bufs[2].set_len(MAX_IO - SMALL);
        let (r, b) = op::readv_bufs(&fd, bufs).await;
        bufs = b;
        let n = match r {
            Ok(n) => n,
            // Interrupted, raced by another reader, or a request the kernel
            // gave up on while we read it.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN | libc::EINTR | libc::ENOENT)
                ) =>
            {
                continue
            }
            // Unmounted or aborted.
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => break,
            Err(e) => {
                log::warn!("fuse: reading /dev/fuse: {e}");
                break;
            }
        };
        let head = bufs[0].as_slice();
        let in_head = n.min(SPLIT);
        let in_body = n.saturating_sub(SPLIT);
        let Ok(hdr) = parse_header(&head[..in_head]) else {
            continue;
        };
        let parsed = if hdr.opcode == FUSE_WRITE {
            parse_operation(hdr.opcode, &head[IN_HEADER_LEN..in_head])
        } else {
            let mut args = [0u8; MAX_ARGS];
            let a = in_head - IN_HEADER_LEN;
            args[..a].copy_from_slice(&head[IN_HEADER_LEN..in_head]);
            let more = in_body.min(MAX_ARGS - a);
            args[a..a + more].copy_from_slice(&bufs[1].as_slice()[..more]);
            parse_operation(hdr.opcode, &args[..a + more])
        };
        let op = match parsed {
            Ok(op) => op,
            Err(e) => {
                log::debug!("fuse: bad request: {e}");
                let fd = fd.clone();
                spawn_local(async move { send(&fd, &hdr, Reply::error(libc::EINVAL)).await });
                continue;
            }
        };
        let data = match op {
            Operation::Write { size, .. } => {
                let size = size as usize;
                if in_body < size {
                    let fd = fd.clone();
                    spawn_local(async move { send(&fd, &hdr, Reply::error(libc::EINVAL)).await });
                    continue;
                }
                Some(take_data(&mut bufs, size))
            }
            _ => None,
        };
        exec.over_dev.set(exec.over_dev.get() + 1);
        let fd2 = fd.clone();
        let exec = exec.clone();
        spawn_local(async move {
            let (reply, left) = exec.execute(op, data).await;
            if let Some(b) = left {
                pool::check_in(b);
            }
            send(&fd2, &hdr, reply).await;
        });
    }
    for b in bufs {
        pool::check_in(b);
    }
}

/// A WRITE's `size` bytes of data: the small buffer itself (replaced for
/// the next read) when it holds all of them, else both parts joined.
fn take_data(bufs: &mut [Buf], size: usize) -> Buf {
    if size <= SMALL {
        let mut d = std::mem::replace(&mut bufs[1], pool::check_out(SMALL));
        d.set_len(size);
        return d;
    }
    let mut d = pool::check_out(size);
    d.as_mut_slice()[..SMALL].copy_from_slice(&bufs[1].as_slice()[..SMALL]);
    d.as_mut_slice()[SMALL..size].copy_from_slice(&bufs[2].as_slice()[..size - SMALL]);
    d
}

/// Writes `reply` to `hdr` (nothing for FORGET and INTERRUPT).
async fn send(fd: &SharedFd, hdr: &InHeader, reply: Reply) {
    let Reply::Send { error, body } = reply else {
        return;
    };
    let mut list = SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    list.push_bytes(&out_header(hdr.unique, error, body.len()));
    match body {
        ReplyBody::Empty => {}
        b @ ReplyBody::Small { .. } => list.push_bytes(b.small()),
        ReplyBody::Data(buf, len) => list.push_buf(buf, 0..len),
    }
    let (r, mut list) = op::writev_list(fd, list).await;
    list.clear();
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARE_LISTS {
            s.push(list);
        }
    });
    match r {
        Ok(_) => {}
        // The request was interrupted, or the connection is going away.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENODEV)) => {}
        Err(e) => log::debug!("fuse: reply to {}: {e}", hdr.unique),
    }
}
