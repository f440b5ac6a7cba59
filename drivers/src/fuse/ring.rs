//! The FUSE-over-io_uring transport: ring entries registered with
//! `IORING_OP_URING_CMD` on the iothread's own ring.
//!
//! The kernel keeps one queue per possible CPU and puts a request on the
//! queue of the CPU its caller runs on; the export spreads the queues over
//! its iothreads. Each entry is a task owning two buffers: the 288-byte
//! `fuse_uring_req_header` (in/out header, operation arguments, entry
//! info) and a payload of `max_write`. It registers them once
//! (`FUSE_IO_URING_CMD_REGISTER`); the command completes when the kernel
//! has copied a request into them. The task runs it (a WRITE's data is
//! written from the payload, a READ reads into the payload) and sends the
//! reply with `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`, which also fetches the
//! next request into the same buffers: one CQE in, one SQE out per
//! request, no `/dev/fuse` read or write.

use std::rc::Rc;

use engine::buf::Buf;
use engine::op::{CmdBufs, SharedFd};

use super::exec::{Exec, MAX_IO};
use super::proto::consts::*;
use super::proto::{out_header, parse_header, parse_operation, Reply, ReplyBody, OUT_HEADER_LEN};
use super::sys::ring_cmd;

/// Entries registered per queue: a qd32 client on one CPU keeps them busy.
pub(crate) const QUEUE_DEPTH: usize = 32;

const HEADER: usize = 0;
const PAYLOAD: usize = 1;

/// `struct fuse_uring_cmd_req` in the 80-byte command area.
fn cmd_req(commit_id: u64, qid: u16) -> [u8; 80] {
    let mut c = [0u8; 80];
    // flags (0..8) stay 0.
    c[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    c[16..18].copy_from_slice(&qid.to_ne_bytes());
    c
}

/// Runs one ring entry of queue `qid` until the connection goes away.
pub(crate) async fn serve_entry(
    fd: SharedFd,
    qid: u16,
    exec: Rc<Exec>,
    live: Box<dyn std::any::Any>,
) {
    let _live = live;
    let mut header = Buf::with_capacity(URING_HEADER_LEN);
    header.set_len(URING_HEADER_LEN);
    let mut payload = Buf::with_capacity(MAX_IO);
    payload.set_len(MAX_IO);
    let mut bufs = CmdBufs::new(vec![header, payload]);
    let (mut r, b) = ring_cmd(&fd, FUSE_IO_URING_CMD_REGISTER, cmd_req(0, qid), bufs).await;
    bufs = b;
    loop {
        if let Err(e) = r {
            match e.raw_os_error() {
                // Torn down: unmounted, aborted, or the ring is exiting.
                Some(libc::ENOTCONN | libc::ECANCELED | libc::ENODEV | libc::ECONNABORTED) => {}
                _ => log::warn!("fuse: ring queue {qid}: {e}"),
            }
            return;
        }
        exec.over_ring.set(exec.over_ring.get() + 1);
        let commit_id = handle(&exec, &mut bufs).await;
        let (r2, b) = ring_cmd(
            &fd,
            FUSE_IO_URING_CMD_COMMIT_AND_FETCH,
            cmd_req(commit_id, qid),
            bufs,
        )
        .await;
        bufs = b;
        r = r2;
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(a)
}

/// Runs the request the kernel put in `bufs` and writes the reply back
/// into them; returns the commit id (the request's unique).
async fn handle(exec: &Exec, bufs: &mut CmdBufs) -> u64 {
    let Some(h) = bufs.get(HEADER) else {
        return 0;
    };
    let hb = h.as_slice();
    let commit_id = u64_at(hb, URING_HEADER_ENT_IN_OUT + 8);
    let payload_sz = u32_at(hb, URING_ENT_PAYLOAD_SZ) as usize;
    let reply_parts = match parse_header(&hb[URING_HEADER_IN_OUT..URING_HEADER_OP_IN]) {
        Ok(hdr) => {
            let args = &hb[URING_HEADER_OP_IN..URING_HEADER_ENT_IN_OUT];
            match parse_operation(hdr.opcode, args) {
                Ok(op) => {
                    let data = match bufs.take(PAYLOAD) {
                        Some(mut p) => {
                            if let super::proto::Operation::Write { size, .. } = op {
                                if (size as usize) <= payload_sz.min(p.capacity()) {
                                    p.set_len(size as usize);
                                } else {
                                    p.set_len(0);
                                }
                            }
                            Some(p)
                        }
                        None => None,
                    };
                    let (reply, left) = exec.execute(op, data).await;
                    Some((hdr.unique, reply, left))
                }
                Err(_) => Some((hdr.unique, Reply::error(libc::EINVAL), None)),
            }
        }
        Err(_) => None,
    };
    let (unique, reply, left) = match reply_parts {
        Some(p) => p,
        None => (commit_id, Reply::error(libc::EINVAL), None),
    };
    if let Some(b) = left {
        bufs.put(PAYLOAD, b);
    }
    // Every ring request needs a commit, even those /dev/fuse would leave
    // unanswered.
    let (error, body) = match reply {
        Reply::Send { error, body } => (error, body),
        Reply::None => (0, ReplyBody::Empty),
    };
    let body_len = body.len();
    match body {
        ReplyBody::Data(buf, _) => bufs.put(PAYLOAD, buf),
        b @ ReplyBody::Small { .. } => {
            if let Some(p) = bufs.get_mut(PAYLOAD) {
                p.set_len(MAX_IO);
                p.as_mut_slice()[..b.len()].copy_from_slice(b.small());
            }
        }
        ReplyBody::Empty => {}
    }
    if let Some(p) = bufs.get_mut(PAYLOAD) {
        p.set_len(MAX_IO);
    }
    if let Some(h) = bufs.get_mut(HEADER) {
        let hb = h.as_mut_slice();
        hb[..OUT_HEADER_LEN].copy_from_slice(&out_header(unique, error, body_len));
        hb[URING_ENT_PAYLOAD_SZ..URING_ENT_PAYLOAD_SZ + 4]
            .copy_from_slice(&(body_len as u32).to_ne_bytes());
    }
    commit_id
}
