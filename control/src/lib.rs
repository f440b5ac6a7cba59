//! ringstor control plane: the qemu-storage-daemon command line, the QMP
//! monitor and its commands, objects (iothreads, TLS credentials,
//! authorization), placement, the block graph as configured, and the
//! export registry.
//!
//! Everything here runs on the control thread or on monitor threads; none
//! of it touches a ring or does image I/O (that is `engine` and
//! `drivers`), and none of it is `unsafe`.
#![forbid(unsafe_code)]

pub mod bitmaps;
pub mod blocks;
pub mod cli;
pub mod commands;
pub mod daemon;
pub mod demo;
pub mod error;
pub mod logger;
pub mod metrics;
pub mod objects;
pub mod placement;
pub mod qapi;
pub mod qmp;
pub mod registry;
pub mod signals;
pub mod sockets;
pub mod stats;
pub mod tls;

/// The NBD server driver the control plane starts.
pub(crate) use drivers::nbd;

pub use daemon::{Daemon, Internal};
pub use error::ControlError;
