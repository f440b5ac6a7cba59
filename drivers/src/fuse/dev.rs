//! The `/dev/fuse` transport: one cloned connection descriptor per
//! iothread, read and answered on that iothread's ring.
//!
//! A reader task keeps one `READV` in flight: the request's headers go to
//! a small buffer and everything after the first 80 bytes (in-header plus
//! `fuse_write_in`) to a `max_write`-sized one, so a WRITE's data starts
//! page-aligned and is written to the image from where the kernel put it.
//! Each request then runs in its own task; its reply (out-header, then the
//! read data as it is, no copy) leaves in one `WRITEV`. The descriptor is
//! non-blocking: when the kernel has no request the read waits in the ring
//! (io_uring polls the device), never in a system call.

use std::rc::Rc;

use engine::buf::{pool, Buf};
use engine::iothread::spawn_local;
use engine::op::{self, GatherList, SharedFd};

use super::exec::{Exec, MAX_IO};
use super::proto::{
    out_header, parse_header, parse_operation, InHeader, Operation, Reply, ReplyBody,
    IN_HEADER_LEN, WRITE_IN_LEN,
};

/// Where the read of a request is split: in-header + `fuse_write_in`.
const SPLIT: usize = IN_HEADER_LEN + WRITE_IN_LEN;
/// Longest argument structure the export decodes (`fuse_setattr_in`), plus room.
const MAX_ARGS: usize = 128;

/// Serves requests from `fd` until the connection goes away; `live` is
/// dropped (one of the export's live tasks) when it returns.
pub(crate) async fn serve(fd: SharedFd, exec: Rc<Exec>, live: Box<dyn std::any::Any>) {
    let _live = live;
    let mut head = Buf::with_capacity(SPLIT);
    let mut body = pool::check_out(MAX_IO);
    loop {
        head.set_len(SPLIT);
        body.set_len(MAX_IO);
        let (r, h, b) = op::readv2(&fd, head, body).await;
        head = h;
        body = b;
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
        let Ok(hdr) = parse_header(&head.as_slice()[..n.min(SPLIT)]) else {
            continue;
        };
        let in_head = n.min(SPLIT);
        let in_body = n.saturating_sub(SPLIT);
        let parsed = if hdr.opcode == super::proto::consts::FUSE_WRITE {
            parse_operation(hdr.opcode, &head.as_slice()[IN_HEADER_LEN..in_head])
        } else {
            let mut args = [0u8; MAX_ARGS];
            let a = in_head - IN_HEADER_LEN;
            args[..a].copy_from_slice(&head.as_slice()[IN_HEADER_LEN..in_head]);
            let more = in_body.min(MAX_ARGS - a);
            args[a..a + more].copy_from_slice(&body.as_slice()[..more]);
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
                if in_body < size as usize {
                    let fd = fd.clone();
                    spawn_local(async move { send(&fd, &hdr, Reply::error(libc::EINVAL)).await });
                    continue;
                }
                // The data goes with the request; read the next into a new one.
                let mut d = std::mem::replace(&mut body, pool::check_out(MAX_IO));
                d.set_len(size as usize);
                Some(d)
            }
            _ => None,
        };
        exec.over_dev.set(exec.over_dev.get() + 1);
        let fd2 = fd.clone();
        let exec = exec.clone();
        spawn_local(async move {
            let (reply, left) = exec.execute(&hdr, op, data).await;
            if let Some(b) = left {
                pool::check_in(b);
            }
            send(&fd2, &hdr, reply).await;
        });
    }
    pool::check_in(body);
}

/// Writes `reply` to `hdr` (nothing for FORGET and INTERRUPT).
async fn send(fd: &SharedFd, hdr: &InHeader, reply: Reply) {
    let Reply::Send { error, body } = reply else {
        return;
    };
    let mut list = GatherList::new();
    list.push_bytes(&out_header(hdr.unique, error, body.len()));
    match body {
        ReplyBody::Empty => {}
        b @ ReplyBody::Small { .. } => list.push_bytes(b.small()),
        ReplyBody::Data(buf, len) => list.push_buf(buf, 0..len),
    }
    let (r, mut list) = op::writev(fd, list).await;
    list.clear();
    match r {
        Ok(_) => {}
        // The request was interrupted, or the connection is going away.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENODEV)) => {}
        Err(e) => log::debug!("fuse: reply to {}: {e}", hdr.unique),
    }
}
