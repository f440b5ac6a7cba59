//! Unit tests for the NBD protocol codec: handshake (`handshake.rs`),
//! request parsing/validation and reply encoding (`wire.rs`), the
//! handshake of a server that requires TLS (`starttls.rs`).

mod fuzz_regressions;
mod handshake;
mod meta;
mod starttls;
mod wire;

use super::consts::*;
use super::{ExportCatalog, ExportInfo};

/// Catalog with a writable 1 MiB export "disk" (depth + two bitmaps,
/// 512-byte minimum block) and a read-only default export "".
pub(super) struct Cat;

pub(super) fn disk() -> ExportInfo {
    ExportInfo {
        name: "disk".into(),
        description: "test disk".into(),
        size: 1 << 20,
        transmission_flags: NBD_FLAG_HAS_FLAGS
            | NBD_FLAG_SEND_FLUSH
            | NBD_FLAG_SEND_FUA
            | NBD_FLAG_SEND_TRIM
            | NBD_FLAG_SEND_WRITE_ZEROES
            | NBD_FLAG_SEND_DF
            | NBD_FLAG_BLOCK_STATUS_PAYLOAD,
        min_block: 512,
        preferred_block: 4096,
        max_block: 32 << 20,
        allocation_depth: true,
        bitmaps: vec!["b1".into(), "b2".into()],
    }
}

fn default_export() -> ExportInfo {
    ExportInfo {
        name: "".into(),
        description: String::new(),
        size: 4096,
        transmission_flags: NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY,
        min_block: 1,
        preferred_block: 4096,
        max_block: 1 << 20,
        allocation_depth: false,
        bitmaps: vec![],
    }
}

impl ExportCatalog for Cat {
    fn list(&self) -> Vec<(String, String)> {
        vec![("disk".into(), "test disk".into()), ("".into(), "".into())]
    }
    fn lookup(&self, name: &str) -> Option<ExportInfo> {
        match name {
            "disk" => Some(disk()),
            "" => Some(default_export()),
            _ => None,
        }
    }
}
