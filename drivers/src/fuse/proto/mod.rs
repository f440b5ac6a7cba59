//! Sans-I/O FUSE protocol: the kernel's request headers and per-operation
//! arguments in, reply bytes out. No file descriptors, no rings; the
//! transports (`/dev/fuse`, FUSE over io_uring) move the bytes and hand
//! the parts here.
//!
//! The layouts are those of the kernel's `include/uapi/linux/fuse.h` at
//! protocol 7.40 (what the INIT reply negotiates), in native byte order as
//! the kernel writes them. Only what an export of one regular file needs
//! is decoded; every other opcode parses as [`Operation::Unsupported`] and
//! gets `ENOSYS`, as libfuse answers for operations a file system lacks.
#![forbid(unsafe_code)]

pub mod consts;
mod reply;
mod request;

#[cfg(test)]
mod tests;

pub use reply::{out_header, Attr, Reply, ReplyBody, OUT_HEADER_LEN};
pub use request::{
    parse_header, parse_operation, InHeader, Operation, ParseError, SetAttr, IN_HEADER_LEN,
    WRITE_IN_LEN,
};
