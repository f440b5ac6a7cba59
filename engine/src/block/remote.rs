//! Protocol drivers implemented outside the engine: [`RemoteDriver`]
//! (control side) and [`RemoteLeaf`] (one iothread's data path).
//!
//! The engine does not parse input from peers; a block driver that speaks
//! a wire protocol to a remote server (the NBD client, in
//! `drivers/src/nbd/client/`, next to the NBD codec it shares with the
//! server) plugs in here. Its node is opened by the control plane with
//! [`super::NodeOptions::Remote`]; each iothread's [`super::BlockHandle`]
//! asks the driver for a leaf of its own (its own connection, on its own
//! ring). The engine still checks bounds and permissions before a request
//! reaches the leaf.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use super::error::BlockResult;
use super::status::BlockStatus;
use crate::buf::Buf;

/// A future of a leaf, polled on the iothread that made it.
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A remote protocol node as the control plane holds it.
pub trait RemoteDriver: Send + Sync + std::fmt::Debug {
    /// The data path for the calling iothread (never blocks: a leaf that
    /// must connect does so in its own tasks).
    fn open_local(&self) -> Rc<dyn RemoteLeaf>;
    /// What `query-named-block-nodes` shows as the file name
    /// (`nbd+unix:///export?socket=...`).
    fn filename(&self) -> String;
}

/// One iothread's data path to a remote node. Offsets and lengths are
/// checked against the node size before any call.
pub trait RemoteLeaf {
    /// Fills all of `buf` from `offset`.
    fn read(&self, offset: u64, buf: Buf) -> LocalFuture<'_, (BlockResult<()>, Buf)>;
    /// Writes all of `buf` at `offset`, durable on return with `fua`.
    fn write(&self, offset: u64, buf: Buf, fua: bool) -> LocalFuture<'_, (BlockResult<()>, Buf)>;
    /// Makes completed writes durable.
    fn flush(&self) -> LocalFuture<'_, BlockResult<()>>;
    /// Unmaps the range.
    fn discard(&self, offset: u64, len: u64) -> LocalFuture<'_, BlockResult<()>>;
    /// Zeroes the range (`may_unmap`: a hole is fine; `fast`: fail with
    /// `NotSupported` rather than write zeroes slowly).
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_unmap: bool,
        fast: bool,
    ) -> LocalFuture<'_, BlockResult<()>>;
    /// Status of the run at `offset`, at most `max` long.
    fn block_status(
        &self,
        offset: u64,
        max: u64,
    ) -> LocalFuture<'_, BlockResult<(BlockStatus, u64)>>;
}
