//! vhost-user-blk over a unix socket, driven by `ringstor-vu-load` (libblkio's
//! Rust core; Debian's fio has no libblkio engine).
//!
//! Two shapes: one queue on one iothread (`vhost-user-blk`), and two queues
//! (`vhost-user-blk-2q`). ringstor spreads its two queues over two
//! iothreads (`iothread` list); QSD 10's vhost-user-blk export takes one
//! `iothread` only, so its two queues share one iothread, which is the best
//! QSD can do. nbdkit and qemu-nbd have no vhost-user-blk: their rows are
//! skipped.

use crate::qsd;
use crate::servers::ServerKind;
use crate::transport::{Backend, LaunchSpec, Transport};
use std::path::{Path, PathBuf};

/// The vhost-user-blk transport with `queues` request queues.
#[derive(Debug)]
pub struct VhostUserBlk {
    /// Request queues the client uses (and the export offers).
    pub queues: u16,
    /// The load generator binary.
    pub client: PathBuf,
}

impl Transport for VhostUserBlk {
    fn id(&self) -> &'static str {
        if self.queues > 1 {
            "vhost-user-blk-2q"
        } else {
            "vhost-user-blk"
        }
    }

    fn launch(&self, server: ServerKind, backend: &Backend, dir: &Path) -> Option<LaunchSpec> {
        let sock = dir.join(format!("{}-vu.sock", server.id()));
        let s = sock.to_string_lossy().into_owned();
        let mut args = qsd::base_args(backend);
        let ringstor = matches!(server, ServerKind::Ringstor | ServerKind::RingstorNoStats);
        let iothreads = match server {
            _ if ringstor && self.queues > 1 => {
                args.push("--object".into());
                args.push("iothread,id=io1".into());
                format!("iothread.0={},iothread.1=io1", qsd::IOTHREAD)
            }
            _ if ringstor => format!("iothread={}", qsd::IOTHREAD),
            ServerKind::Qsd => format!("iothread={}", qsd::IOTHREAD),
            _ => return None,
        };
        args.push("--export".into());
        args.push(format!(
            "type=vhost-user-blk,id=exp0,node-name={},addr.type=unix,addr.path={},writable=on,num-queues={},{iothreads}",
            qsd::NODE,
            qsd::escape(&s),
            self.queues
        ));
        Some(LaunchSpec {
            args,
            ready_socket: sock,
            ready_tcp: None,
            fio_args: vec![
                format!("--vu-socket={s}"),
                format!("--vu-queues={}", self.queues),
            ],
            fio_prefix: Vec::new(),
            env: match server {
                ServerKind::RingstorNoStats => vec![("RINGSTOR_STATS".into(), "off".into())],
                _ => Vec::new(),
            },
        })
    }

    fn client(&self) -> Option<PathBuf> {
        Some(self.client.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::CacheMode;

    #[test]
    fn two_queues_on_two_ringstor_iothreads_one_for_qsd() {
        let t = VhostUserBlk {
            queues: 2,
            client: "/x".into(),
        };
        let b = Backend::File {
            path: "/img".into(),
            cache: CacheMode::PageCache,
        };
        let r = t.launch(ServerKind::Ringstor, &b, Path::new("/d")).unwrap();
        let export = r.args.last().unwrap();
        assert!(
            export.contains("num-queues=2,iothread.0=io0,iothread.1=io1"),
            "{export}"
        );
        let q = t.launch(ServerKind::Qsd, &b, Path::new("/d")).unwrap();
        assert!(q
            .args
            .last()
            .unwrap()
            .ends_with("num-queues=2,iothread=io0"));
        assert!(t.launch(ServerKind::Nbdkit, &b, Path::new("/d")).is_none());
        assert_eq!(r.fio_args[1], "--vu-queues=2");
    }
}
