//! NBD wire constants: magics, flags, option/reply/info/command codes,
//! error values, metadata-context names and size limits.
//!
//! Values follow `doc/proto.md` of the NBD project (including the
//! `EXTENDED_HEADERS` extension) and QEMU's `include/block/nbd.h`.
#![forbid(unsafe_code)]

// ---- magics -------------------------------------------------------------

/// `NBDMAGIC`, first 8 bytes of every greeting.
pub const NBD_INIT_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`, newstyle greeting magic and option request magic.
pub const NBD_OPTS_MAGIC: u64 = 0x4948_4156_454f_5054;
/// Oldstyle greeting magic (unused by this server, kept for completeness).
pub const NBD_CLIENT_MAGIC: u64 = 0x0000_4202_8186_1253;
/// Option reply magic.
pub const NBD_REP_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Compact (28-byte) request magic.
pub const NBD_REQUEST_MAGIC: u32 = 0x2560_9513;
/// Extended (32-byte) request magic.
pub const NBD_EXTENDED_REQUEST_MAGIC: u32 = 0x21e4_1c71;
/// Simple (16-byte) reply magic.
pub const NBD_SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Structured (20-byte) reply chunk magic.
pub const NBD_STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
/// Extended (32-byte) reply chunk magic.
pub const NBD_EXTENDED_REPLY_MAGIC: u32 = 0x6e8a_278c;

// ---- handshake flags ----------------------------------------------------

/// Server handshake flag: fixed newstyle supported.
pub const NBD_FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Server handshake flag: may omit the 124 zero bytes after EXPORT_NAME.
pub const NBD_FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: client speaks fixed newstyle.
pub const NBD_FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: omit the 124 zero bytes after EXPORT_NAME.
pub const NBD_FLAG_C_NO_ZEROES: u32 = 1 << 1;

// ---- transmission flags -------------------------------------------------

pub const NBD_FLAG_HAS_FLAGS: u16 = 1 << 0;
pub const NBD_FLAG_READ_ONLY: u16 = 1 << 1;
pub const NBD_FLAG_SEND_FLUSH: u16 = 1 << 2;
pub const NBD_FLAG_SEND_FUA: u16 = 1 << 3;
pub const NBD_FLAG_ROTATIONAL: u16 = 1 << 4;
pub const NBD_FLAG_SEND_TRIM: u16 = 1 << 5;
pub const NBD_FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const NBD_FLAG_SEND_DF: u16 = 1 << 7;
pub const NBD_FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
pub const NBD_FLAG_SEND_RESIZE: u16 = 1 << 9;
pub const NBD_FLAG_SEND_CACHE: u16 = 1 << 10;
pub const NBD_FLAG_SEND_FAST_ZERO: u16 = 1 << 11;
pub const NBD_FLAG_BLOCK_STATUS_PAYLOAD: u16 = 1 << 12;

// ---- options ------------------------------------------------------------

pub const NBD_OPT_EXPORT_NAME: u32 = 1;
pub const NBD_OPT_ABORT: u32 = 2;
pub const NBD_OPT_LIST: u32 = 3;
pub const NBD_OPT_PEEK_EXPORT: u32 = 4;
pub const NBD_OPT_STARTTLS: u32 = 5;
pub const NBD_OPT_INFO: u32 = 6;
pub const NBD_OPT_GO: u32 = 7;
pub const NBD_OPT_STRUCTURED_REPLY: u32 = 8;
pub const NBD_OPT_LIST_META_CONTEXT: u32 = 9;
pub const NBD_OPT_SET_META_CONTEXT: u32 = 10;
pub const NBD_OPT_EXTENDED_HEADERS: u32 = 11;

// ---- option reply types -------------------------------------------------

pub const NBD_REP_ACK: u32 = 1;
pub const NBD_REP_SERVER: u32 = 2;
pub const NBD_REP_INFO: u32 = 3;
pub const NBD_REP_META_CONTEXT: u32 = 4;
const NBD_REP_FLAG_ERROR: u32 = 1 << 31;
pub const NBD_REP_ERR_UNSUP: u32 = NBD_REP_FLAG_ERROR | 1;
pub const NBD_REP_ERR_POLICY: u32 = NBD_REP_FLAG_ERROR | 2;
pub const NBD_REP_ERR_INVALID: u32 = NBD_REP_FLAG_ERROR | 3;
pub const NBD_REP_ERR_PLATFORM: u32 = NBD_REP_FLAG_ERROR | 4;
pub const NBD_REP_ERR_TLS_REQD: u32 = NBD_REP_FLAG_ERROR | 5;
pub const NBD_REP_ERR_UNKNOWN: u32 = NBD_REP_FLAG_ERROR | 6;
pub const NBD_REP_ERR_SHUTDOWN: u32 = NBD_REP_FLAG_ERROR | 7;
pub const NBD_REP_ERR_BLOCK_SIZE_REQD: u32 = NBD_REP_FLAG_ERROR | 8;
pub const NBD_REP_ERR_TOO_BIG: u32 = NBD_REP_FLAG_ERROR | 9;
pub const NBD_REP_ERR_EXT_HEADER_REQD: u32 = NBD_REP_FLAG_ERROR | 10;

// ---- info types ---------------------------------------------------------

pub const NBD_INFO_EXPORT: u16 = 0;
pub const NBD_INFO_NAME: u16 = 1;
pub const NBD_INFO_DESCRIPTION: u16 = 2;
pub const NBD_INFO_BLOCK_SIZE: u16 = 3;

// ---- command flags ------------------------------------------------------

pub const NBD_CMD_FLAG_FUA: u16 = 1 << 0;
pub const NBD_CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const NBD_CMD_FLAG_DF: u16 = 1 << 2;
pub const NBD_CMD_FLAG_REQ_ONE: u16 = 1 << 3;
pub const NBD_CMD_FLAG_FAST_ZERO: u16 = 1 << 4;
pub const NBD_CMD_FLAG_PAYLOAD_LEN: u16 = 1 << 5;

// ---- command types ------------------------------------------------------

pub const NBD_CMD_READ: u16 = 0;
pub const NBD_CMD_WRITE: u16 = 1;
pub const NBD_CMD_DISC: u16 = 2;
pub const NBD_CMD_FLUSH: u16 = 3;
pub const NBD_CMD_TRIM: u16 = 4;
pub const NBD_CMD_CACHE: u16 = 5;
pub const NBD_CMD_WRITE_ZEROES: u16 = 6;
pub const NBD_CMD_BLOCK_STATUS: u16 = 7;
pub const NBD_CMD_RESIZE: u16 = 8;

// ---- structured reply flags and chunk types -----------------------------

pub const NBD_REPLY_FLAG_DONE: u16 = 1 << 0;
pub const NBD_REPLY_TYPE_NONE: u16 = 0;
pub const NBD_REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const NBD_REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const NBD_REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const NBD_REPLY_TYPE_BLOCK_STATUS_EXT: u16 = 6;
pub const NBD_REPLY_TYPE_ERROR: u16 = (1 << 15) | 1;
pub const NBD_REPLY_TYPE_ERROR_OFFSET: u16 = (1 << 15) | 2;

// ---- block status flags -------------------------------------------------

/// `base:allocation`: extent is a hole.
pub const NBD_STATE_HOLE: u32 = 1 << 0;
/// `base:allocation`: extent reads as zeroes.
pub const NBD_STATE_ZERO: u32 = 1 << 1;
/// `qemu:dirty-bitmap:*`: extent is dirty.
pub const NBD_STATE_DIRTY: u32 = 1 << 0;

// ---- error values -------------------------------------------------------

pub const NBD_SUCCESS: u32 = 0;
pub const NBD_EPERM: u32 = 1;
pub const NBD_EIO: u32 = 5;
pub const NBD_ENOMEM: u32 = 12;
pub const NBD_EINVAL: u32 = 22;
pub const NBD_ENOSPC: u32 = 28;
pub const NBD_EOVERFLOW: u32 = 75;
pub const NBD_ENOTSUP: u32 = 95;
pub const NBD_ESHUTDOWN: u32 = 108;

// ---- metadata contexts --------------------------------------------------

pub const CONTEXT_BASE_ALLOCATION: &str = "base:allocation";
pub const CONTEXT_QEMU_ALLOCATION_DEPTH: &str = "qemu:allocation-depth";
pub const CONTEXT_QEMU_DIRTY_BITMAP_PREFIX: &str = "qemu:dirty-bitmap:";

// ---- sizes and limits ---------------------------------------------------

/// Bytes of the server's newstyle greeting.
pub const GREETING_LEN: usize = 18;
/// Bytes of an option request header (magic, option, length).
pub const OPTION_HEADER_LEN: usize = 16;
/// Bytes of an option reply header (magic, option, type, length).
pub const OPTION_REPLY_HEADER_LEN: usize = 20;
/// Zero padding after the NBD_OPT_EXPORT_NAME reply unless NO_ZEROES.
pub const EXPORT_NAME_PADDING: usize = 124;
/// Compact request header size.
pub const REQUEST_LEN: usize = 28;
/// Extended request header size.
pub const EXTENDED_REQUEST_LEN: usize = 32;
/// Simple reply header size.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Structured reply chunk header size.
pub const STRUCTURED_REPLY_LEN: usize = 20;
/// Extended reply chunk header size.
pub const EXTENDED_REPLY_LEN: usize = 32;

/// Maximum string length (export names, queries, messages) per the spec.
pub const NBD_MAX_STRING_SIZE: usize = 4096;
/// Maximum export description length we send.
pub const NBD_MAX_DESCRIPTION_SIZE: usize = 4096;
/// Maximum request payload, like QEMU's `NBD_MAX_BUFFER_SIZE` (32 MiB).
/// Also the option length above which the handshake drops the client.
pub const NBD_MAX_PAYLOAD: u32 = 32 * 1024 * 1024;
/// Default preferred block size when the export gives none.
pub const NBD_DEFAULT_PREFERRED_BLOCK: u32 = 4096;
