//! Sans-I/O NBD protocol: constants, the server handshake state machine,
//! transmission request parsing/validation and reply encoders. No sockets,
//! no threads; callers move bytes.
#![forbid(unsafe_code)]

pub mod consts;
mod export;
mod handshake;
mod meta;
mod options;
mod reply;
mod request;
mod starttls;
mod wire;

#[cfg(test)]
mod tests;

pub use export::{transmission_flags, ExportCaps, ExportCatalog, ExportInfo, MetaContext};
pub use handshake::{HandshakeError, Negotiated, Negotiator, NegotiatorConfig, Outcome};
pub use meta::{META_ID_ALLOCATION_DEPTH, META_ID_BASE_ALLOCATION, META_ID_DIRTY_BITMAP};
pub use reply::{
    chunk_block_status, chunk_error, chunk_error_offset, chunk_header, chunk_none,
    chunk_offset_hole, read_data_header, reply_error, reply_ok, simple_reply, Extent, NbdErrno,
    ReplyError, ReplyMode, ReplyTo,
};
pub use request::{
    check_request, parse_block_status_payload, parse_request, BlockStatusPayload, Command,
    Disposition, ProtoError, RequestHeader, Session,
};
