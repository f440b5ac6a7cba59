//! Sockets servers listen on, from any QAPI `SocketAddress`: a unix path
//! or TCP address bound here, or a descriptor the daemon was handed —
//! inherited when it was started, passed by systemd socket activation, or
//! sent over a QMP monitor connection with `getfd`.
//!
//! The NBD server, the monitor and every export that listens (the
//! vhost-user-blk `addr`) get their socket from [`listen`], so an `fd`
//! address works the same everywhere.
//!
//! - `fd`: the one `unsafe` in the drivers crate: taking ownership of a
//!   descriptor number that provably nobody else owns.
//! - `inherited`: the descriptors the process started with, systemd's
//!   names for them, claims by number or name.
//! - `listen`: address → listening socket, with QEMU's checks and texts.

mod fd;
pub mod inherited;
mod listen;

pub use fd::recv_with_fds;
pub use inherited::ClaimError;
pub use listen::{check_listener, listen, Family, ListenAddr, ListenError, Listener};
