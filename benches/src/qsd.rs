//! The qemu-storage-daemon command line shared by QSD and ringstor (which
//! accepts exactly QSD's options): one iothread, one block node, and the
//! QEMU option-string escaping. Transports add `--nbd-server`/`--export`.

use crate::jobs::CacheMode;
use crate::transport::Backend;

/// Node name of the exported block node.
pub const NODE: &str = "disk0";
/// Id of the iothread the export runs in.
pub const IOTHREAD: &str = "io0";

/// Escape a value for a QEMU `key=value,...` option string (`,` → `,,`).
pub fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// `--object iothread` and `--blockdev` for the backend.
///
/// File: `driver=file` with `aio=io_uring` and `cache.direct=on|off`; the
/// export serves the protocol node directly (no raw format layer).
/// Null: `driver=null-co` with `read-zeroes=on`. Rbd: a `secret` object
/// with the key and `driver=rbd` with QEMU's default cache (librbd's
/// writeback cache on).
pub fn base_args(backend: &Backend) -> Vec<String> {
    let blockdev = match backend {
        Backend::File { path, cache } => format!(
            "driver=file,node-name={NODE},filename={},aio=io_uring,cache.direct={}",
            escape(&path.to_string_lossy()),
            if *cache == CacheMode::Direct {
                "on"
            } else {
                "off"
            }
        ),
        Backend::Null { size } => {
            format!("driver=null-co,node-name={NODE},size={size},read-zeroes=on")
        }
        Backend::Qcow2 { path } => format!(
            "driver=qcow2,node-name={NODE},file.driver=file,file.filename={},file.aio=io_uring,file.cache.direct=off",
            escape(&path.to_string_lossy())
        ),
        Backend::Rbd(r) => {
            return vec![
                "--object".into(),
                format!("iothread,id={IOTHREAD}"),
                "--object".into(),
                format!(
                    "secret,id=sec0,file={},format=base64",
                    escape(&r.key_file.to_string_lossy())
                ),
                "--blockdev".into(),
                format!(
                    "driver=rbd,node-name={NODE},pool={},image={},conf={},user={},key-secret=sec0,discard=unmap",
                    r.pool,
                    r.image,
                    escape(&r.conf.to_string_lossy()),
                    r.user
                ),
            ]
        }
    };
    vec![
        "--object".into(),
        format!("iothread,id={IOTHREAD}"),
        "--blockdev".into(),
        blockdev,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_blockdev_escapes_commas_and_sets_cache() {
        let b = Backend::File {
            path: "/tmp/a,b.img".into(),
            cache: CacheMode::Direct,
        };
        let a = base_args(&b);
        assert_eq!(a[1], "iothread,id=io0");
        assert_eq!(
            a[3],
            "driver=file,node-name=disk0,filename=/tmp/a,,b.img,aio=io_uring,cache.direct=on"
        );
    }
}
