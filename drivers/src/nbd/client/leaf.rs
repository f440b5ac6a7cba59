//! [`NbdLeaf`]: the block operations of one iothread as NBD commands on
//! its connection, using only what the server advertised (no FUA: write
//! then flush; no WRITE_ZEROES: zeroes written; no TRIM: nothing to do).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::Duration;

use engine::block::remote::{LocalFuture, RemoteLeaf};
use engine::block::{BlockError, BlockResult, BlockStatus};
use engine::buf::{pool, Buf};
use engine::iothread::spawn_local;
use engine::op;

use super::conn::{Conn, Outcome, Pending};
use super::Shared;
use crate::nbd::proto::client::request;
use crate::nbd::proto::consts::*;
use crate::nbd::proto::Command;

/// Longest run of zeroes written at once when the server lacks WRITE_ZEROES.
const ZERO_CHUNK: u64 = 1 << 20;

/// Compact request headers carry 32-bit lengths: longer ranges go in pieces.
const MAX_RANGE: u64 = 1 << 30;

fn chunks(offset: u64, len: u64) -> impl Iterator<Item = (u64, u64)> {
    (0..len.div_ceil(MAX_RANGE)).map(move |i| {
        let off = i * MAX_RANGE;
        (offset + off, (len - off).min(MAX_RANGE))
    })
}

/// How often an iothread checks whether the node of a connection it
/// keeps is gone.
const REAP_EVERY: Duration = Duration::from_secs(1);

thread_local! {
    /// This iothread's connections, by node (the node's liveness token).
    static CONNS: RefCell<Vec<(Weak<()>, Rc<Conn>)>> = const { RefCell::new(Vec::new()) };
}

/// One iothread's leaf over the connection it keeps for the node.
pub(crate) struct NbdLeaf {
    conn: Rc<Conn>,
}

/// The connection this iothread keeps for the node, made on first use;
/// a task closes it once the node is deleted.
fn local_conn(shared: Arc<Shared>) -> Rc<Conn> {
    let found = CONNS.with(|c| {
        c.borrow()
            .iter()
            .find(|(w, _)| w.ptr_eq(&shared.alive))
            .map(|(_, conn)| conn.clone())
    });
    if let Some(conn) = found {
        return conn;
    }
    let alive = shared.alive.clone();
    let conn = Conn::open(shared);
    CONNS.with(|c| c.borrow_mut().push((alive.clone(), conn.clone())));
    spawn_local(async move {
        while alive.strong_count() > 0 {
            op::sleep(REAP_EVERY).await;
        }
        CONNS.with(|c| {
            c.borrow_mut().retain(|(w, conn)| {
                if w.ptr_eq(&alive) {
                    conn.close();
                    false
                } else {
                    true
                }
            })
        });
    });
    conn
}

fn to_result(op: &'static str, offset: u64, o: Outcome) -> BlockResult<()> {
    match o {
        Outcome::Ok => Ok(()),
        Outcome::Err(errno, msg) => {
            if !msg.is_empty() {
                log::debug!("nbd client: {op} at {offset}: {msg}");
            }
            Err(BlockError::Io {
                op,
                offset,
                source: std::io::Error::from_raw_os_error(errno),
            })
        }
    }
}

impl NbdLeaf {
    pub(crate) fn open(shared: Arc<Shared>) -> Rc<dyn RemoteLeaf> {
        Rc::new(NbdLeaf {
            conn: local_conn(shared),
        })
    }

    fn flags(&self) -> u16 {
        self.conn.info.borrow().transmission_flags
    }

    async fn simple(&self, kind: Command, flags: u16, offset: u64, len: u64) -> Outcome {
        self.conn
            .call(Pending::new(request(kind, flags, offset, len), None))
            .await
    }

    async fn do_write(&self, offset: u64, buf: Buf, fua: bool) -> (BlockResult<()>, Buf) {
        let native_fua = fua && self.flags() & NBD_FLAG_SEND_FUA != 0;
        let flags = if native_fua { NBD_CMD_FLAG_FUA } else { 0 };
        let len = buf.len() as u64;
        let p = Pending::new(request(Command::Write, flags, offset, len), Some(buf));
        let o = self.conn.call(p.clone()).await;
        let buf = p
            .buf
            .borrow_mut()
            .take()
            .unwrap_or_else(|| Buf::with_capacity(0));
        let r = to_result("write", offset, o);
        if r.is_ok() && fua && !native_fua {
            return (self.do_flush().await, buf);
        }
        (r, buf)
    }

    async fn do_flush(&self) -> BlockResult<()> {
        if self.flags() & NBD_FLAG_SEND_FLUSH == 0 {
            return Ok(());
        }
        to_result("flush", 0, self.simple(Command::Flush, 0, 0, 0).await)
    }

    async fn do_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_unmap: bool,
        fast: bool,
    ) -> BlockResult<()> {
        let tf = self.flags();
        if tf & NBD_FLAG_SEND_WRITE_ZEROES != 0 && (!fast || tf & NBD_FLAG_SEND_FAST_ZERO != 0) {
            let mut flags = 0;
            if !may_unmap {
                flags |= NBD_CMD_FLAG_NO_HOLE;
            }
            if fast {
                flags |= NBD_CMD_FLAG_FAST_ZERO;
            }
            for (off, n) in chunks(offset, len) {
                let o = self.simple(Command::WriteZeroes, flags, off, n).await;
                to_result("write zeroes", off, o)?;
            }
            return Ok(());
        }
        if fast {
            return Err(BlockError::NotSupported);
        }
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZERO_CHUNK) as usize;
            let mut b = pool::check_out(n);
            b.as_mut_slice().fill(0);
            let (r, b) = self.do_write(offset + done, b, false).await;
            pool::check_in(b);
            r?;
            done += n as u64;
        }
        Ok(())
    }

    async fn do_status(&self, offset: u64, max: u64) -> BlockResult<(BlockStatus, u64)> {
        let (base, depth) = {
            let info = self.conn.info.borrow();
            (info.base_allocation, info.allocation_depth)
        };
        if base.is_none() && depth.is_none() {
            return Ok((BlockStatus::DATA, max));
        }
        let len = max.min(u64::from(u32::MAX) & !0xfff).max(1);
        let p = Pending::new(
            request(Command::BlockStatus, NBD_CMD_FLAG_REQ_ONE, offset, len),
            None,
        );
        let o = self.conn.call(p.clone()).await;
        to_result("block status", offset, o)?;
        let mut st = BlockStatus::DATA;
        let mut run = len;
        for (id, extents) in p.status.borrow().iter() {
            let Some(e) = extents.first() else { continue };
            if e.length == 0 {
                continue;
            }
            if Some(*id) == base {
                st.data = e.flags & NBD_STATE_HOLE == 0;
                st.zero = e.flags & NBD_STATE_ZERO != 0;
            } else if Some(*id) == depth {
                st.depth = e.flags;
            } else {
                continue;
            }
            run = run.min(e.length);
        }
        Ok((st, run.clamp(1, max)))
    }
}

impl RemoteLeaf for NbdLeaf {
    fn read(&self, offset: u64, buf: Buf) -> LocalFuture<'_, (BlockResult<()>, Buf)> {
        Box::pin(async move {
            let len = buf.len() as u64;
            let p = Pending::new(request(Command::Read, 0, offset, len), Some(buf));
            let o = self.conn.call(p.clone()).await;
            let buf = p
                .buf
                .borrow_mut()
                .take()
                .unwrap_or_else(|| Buf::with_capacity(0));
            (to_result("read", offset, o), buf)
        })
    }

    fn write(&self, offset: u64, buf: Buf, fua: bool) -> LocalFuture<'_, (BlockResult<()>, Buf)> {
        Box::pin(self.do_write(offset, buf, fua))
    }

    fn flush(&self) -> LocalFuture<'_, BlockResult<()>> {
        Box::pin(self.do_flush())
    }

    fn discard(&self, offset: u64, len: u64) -> LocalFuture<'_, BlockResult<()>> {
        Box::pin(async move {
            if self.flags() & NBD_FLAG_SEND_TRIM == 0 {
                return Ok(());
            }
            for (off, n) in chunks(offset, len) {
                to_result("discard", off, self.simple(Command::Trim, 0, off, n).await)?;
            }
            Ok(())
        })
    }

    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_unmap: bool,
        fast: bool,
    ) -> LocalFuture<'_, BlockResult<()>> {
        Box::pin(self.do_zeroes(offset, len, may_unmap, fast))
    }

    fn block_status(
        &self,
        offset: u64,
        max: u64,
    ) -> LocalFuture<'_, BlockResult<(BlockStatus, u64)>> {
        Box::pin(self.do_status(offset, max))
    }
}
