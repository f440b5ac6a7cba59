//! ringstor's data plane.
//!
//! - [`iothread`]: pinned threads, each with one io_uring and an executor.
//! - [`op`]: io_uring operations as futures that own their buffers.
//! - [`buf`]: page-aligned buffers and the per-thread pool.
//! - [`block`]: block nodes (`file`, `host_device`, `raw`, `null-co`) and the
//!   per-iothread handles export drivers do I/O through.
//!
//! The engine knows nothing of QMP, command lines or export protocols; it
//! does not parse any input from a peer.

pub mod block;
pub mod buf;
pub mod error;
pub mod iothread;
pub mod op;
mod ring;

pub use error::{EngineError, Result};
pub use ring::RingFeatures;
