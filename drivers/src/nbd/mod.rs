//! NBD export driver. `proto` is the sans-I/O protocol codec and handshake
//! state machine; the io_uring server builds on it.

pub mod proto;
