//! NBD over a unix socket, driven by fio's `nbd` engine (libnbd):
//! `--ioengine=nbd --uri=nbd+unix:///disk?socket=PATH`. Every fio job
//! (`numjobs`) opens its own connection.
//!
//! Fairness settings per server (same image, same cache mode, writable):
//! * ringstor / QSD: one iothread (`--object iothread,id=io0`, export
//!   `iothread=io0`), file node `aio=io_uring,cache.direct=on|off`.
//! * qemu-nbd: `--cache=none|writeback --aio=io_uring -f raw`, `--shared=32`
//!   so 4 and 16 connections are allowed, `--persistent`.
//! * nbdkit: `file` plugin `cache=none|default` (nbdkit 1.32 has no
//!   O_DIRECT; `cache=none` evicts pages after each request), default
//!   thread pool; `null` plugin for the null backend.

use crate::jobs::CacheMode;
use crate::qsd;
use crate::servers::ServerKind;
use crate::transport::{Backend, LaunchSpec, Transport};
use std::path::Path;

/// Export name used by every server.
pub const EXPORT: &str = "disk";

/// The NBD transport.
#[derive(Debug, Default)]
pub struct Nbd;

impl Transport for Nbd {
    fn id(&self) -> &'static str {
        "nbd"
    }

    fn launch(&self, server: ServerKind, backend: &Backend, dir: &Path) -> Option<LaunchSpec> {
        let sock = dir.join(format!("{}.sock", server.id()));
        let s = sock.to_string_lossy().into_owned();
        let args: Vec<String> = match server {
            ServerKind::Ringstor | ServerKind::RingstorNoStats | ServerKind::Qsd => {
                let mut a = qsd::base_args(backend);
                a.push("--nbd-server".into());
                a.push(format!("addr.type=unix,addr.path={}", qsd::escape(&s)));
                a.push("--export".into());
                a.push(format!(
                    "type=nbd,id=exp0,node-name={},name={EXPORT},writable=on,iothread={}",
                    qsd::NODE,
                    qsd::IOTHREAD
                ));
                a
            }
            ServerKind::QemuNbd => {
                let mut a: Vec<String> = vec![
                    format!("--socket={s}"),
                    format!("--export-name={EXPORT}"),
                    "--persistent".into(),
                    "--shared=32".into(),
                ];
                match backend {
                    Backend::File { path, cache } => {
                        a.push("--format=raw".into());
                        a.push(format!("--cache={}", qemu_nbd_cache(*cache)));
                        a.push("--aio=io_uring".into());
                        a.push(path.to_string_lossy().into_owned());
                    }
                    Backend::Null { size } => {
                        a.push("--image-opts".into());
                        a.push(format!("driver=null-co,size={size},read-zeroes=on"));
                    }
                    // The qcow2 rows compare ringstor with QSD only.
                    Backend::Qcow2 { .. } => return None,
                    // So do the rbd rows (nbdkit and qemu-nbd have no rbd here).
                    Backend::Rbd(_) => return None,
                }
                a
            }
            ServerKind::Nbdkit => {
                let mut a: Vec<String> = vec![
                    "--foreground".into(),
                    "--exit-with-parent".into(),
                    format!("--unix={s}"),
                ];
                match backend {
                    Backend::File { path, cache } => {
                        a.push("file".into());
                        a.push(format!("file={}", path.to_string_lossy()));
                        a.push(format!("cache={}", nbdkit_cache(*cache)));
                    }
                    Backend::Null { size } => {
                        a.push("null".into());
                        a.push(format!("size={size}"));
                    }
                    Backend::Qcow2 { .. } => return None,
                    Backend::Rbd(_) => return None,
                }
                a
            }
        };
        Some(LaunchSpec {
            args,
            fio_args: vec![
                "--ioengine=nbd".into(),
                format!("--uri=nbd+unix:///{EXPORT}?socket={s}"),
            ],
            ready_socket: sock,
            ready_tcp: None,
            fio_prefix: Vec::new(),
            env: match server {
                ServerKind::RingstorNoStats => vec![("RINGSTOR_STATS".into(), "off".into())],
                _ => Vec::new(),
            },
        })
    }
}

fn qemu_nbd_cache(c: CacheMode) -> &'static str {
    match c {
        CacheMode::PageCache => "writeback",
        CacheMode::Direct => "none",
    }
}

fn nbdkit_cache(c: CacheMode) -> &'static str {
    match c {
        CacheMode::PageCache => "default",
        CacheMode::Direct => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(cache: CacheMode) -> Backend {
        Backend::File {
            path: "/t/img".into(),
            cache,
        }
    }

    #[test]
    fn ringstor_gets_exactly_the_qsd_command_line() {
        let d = Path::new("/t");
        let q = Nbd.launch(ServerKind::Qsd, &file(CacheMode::PageCache), d);
        let r = Nbd.launch(ServerKind::Ringstor, &file(CacheMode::PageCache), d);
        let (q, r) = (q.unwrap(), r.unwrap());
        let strip = |v: &[String]| {
            v.join(" ")
                .replace("ringstor.sock", "X")
                .replace("qsd.sock", "X")
        };
        assert_eq!(strip(&q.args), strip(&r.args));
        assert!(q
            .args
            .contains(&"addr.type=unix,addr.path=/t/qsd.sock".to_string()));
        assert!(q
            .args
            .iter()
            .any(|a| a.ends_with("writable=on,iothread=io0")));
        assert_eq!(q.fio_args[1], "--uri=nbd+unix:///disk?socket=/t/qsd.sock");
    }

    #[test]
    fn cache_modes_map_per_server() {
        let d = Path::new("/t");
        let k = Nbd
            .launch(ServerKind::Nbdkit, &file(CacheMode::Direct), d)
            .unwrap();
        assert!(k.args.contains(&"cache=none".to_string()));
        let n = Nbd
            .launch(ServerKind::QemuNbd, &file(CacheMode::Direct), d)
            .unwrap();
        assert!(n.args.contains(&"--cache=none".to_string()));
        let n = Nbd
            .launch(ServerKind::QemuNbd, &file(CacheMode::PageCache), d)
            .unwrap();
        assert!(n.args.contains(&"--cache=writeback".to_string()));
        let k = Nbd
            .launch(ServerKind::Nbdkit, &Backend::Null { size: 4096 }, d)
            .unwrap();
        assert!(k
            .args
            .ends_with(&["null".to_string(), "size=4096".to_string()]));
    }
}
