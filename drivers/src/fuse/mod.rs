//! The FUSE export driver: a block node shown as one regular file.
//!
//! ```text
//!   proto/ (sans-I/O codec) ─► exec (one request → a Reply value)
//!        ─► dev (/dev/fuse queue) | ring (FUSE-over-io_uring queue) ─► export
//! ```
//!
//! - `proto/`: FUSE request headers and arguments in, reply bytes out.
//! - `exec`: a request against the node's per-iothread `BlockHandle`.
//! - `dev`, `ring`: the two transports; each owns its descriptor or ring
//!   entries and sends the replies.
//! - `mount`: `fuser` mounts and runs INIT; `sys`: the clone ioctl, the
//!   unmount guard, the ring command (the driver's only `unsafe`).
//! - `export`: checks, mount, queues per iothread, removal.
//!
//! # How a request travels
//!
//! **`/dev/fuse`** (always there; the only one when `io-uring` is off or
//! the kernel does not offer it): every iothread of the export reads its
//! own descriptor, cloned from the mount's with `FUSE_DEV_IOC_CLONE`, so
//! the kernel hands each request to one of them. `READV` on the iothread's
//! ring brings the request (headers apart, a WRITE's data page-aligned in
//! its own buffer), a task runs it as one block I/O on the same ring, and
//! `WRITEV` sends the reply: out-header and read data, no copy.
//!
//! **FUSE over io_uring** (`io-uring=on`, ringstor's default where the
//! kernel offers it): INIT asks for `FUSE_OVER_IO_URING`; then each
//! iothread registers ring entries (`IORING_OP_URING_CMD`,
//! `FUSE_IO_URING_CMD_REGISTER`) for the kernel queues it serves (one
//! queue per possible CPU, on the iothread pinned to that CPU, else round
//! robin). The kernel copies a request into an entry's buffers and
//! completes its command: a CQE on the iothread's own ring. The request
//! runs (reads into, writes from the entry's payload), and
//! `FUSE_IO_URING_CMD_COMMIT_AND_FETCH` returns the reply and waits for
//! the next request in one SQE: no system call of its own per request.
//! The `/dev/fuse` reader stays, for what the kernel still sends that way
//! (FORGET, INTERRUPT, requests before every queue is registered).

mod dev;
mod exec;
mod export;
mod mount;
pub mod proto;
mod ring;
mod sys;

pub use export::{AllowOther, FuseExport, FuseExportOptions};
