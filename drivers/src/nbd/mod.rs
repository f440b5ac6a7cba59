//! The NBD export driver.
//!
//! - `proto/`: the sans-I/O protocol codec and handshake state machine.
//! - `server`: accept loop, handshake with a deadline, hand-over to iothreads.
//! - `gate`: `max-connections` and stopping, for the accept loop.
//! - `registry`: the exports by name, connection counting, removal.
//! - `conn`: the transmission phase of one connection (reader, writer).
//! - `request`: one request against the block handle.
//! - `transport`: plaintext or TLS under the handshake and `conn`;
//!   `tls`: the rustls session on the connection's iothread.

mod conn;
mod gate;
mod negotiate;
pub mod proto;
mod registry;
mod request;
mod server;
mod tls;
mod transport;

pub use registry::NbdExport;
pub use server::{NbdBitmap, NbdError, NbdExportOptions, NbdServer, NbdServerConfig};

#[cfg(test)]
mod tests;
