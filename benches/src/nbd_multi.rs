//! `--transport nbd-2t`: NBD as [`crate::nbd::Nbd`], with ringstor's export
//! spread over an iothread list of two (`iothread.0=io0,iothread.1=io1`;
//! connections are placed round robin). QSD 10's NBD export takes one
//! `iothread`, so it keeps one: the best it can do. For the many-connection
//! rows (`randread-4k-qd32-16conn`), where one ring stops being enough.

use crate::nbd::Nbd;
use crate::qsd;
use crate::servers::ServerKind;
use crate::transport::{Backend, LaunchSpec, Transport};
use std::path::Path;

/// NBD with two ringstor iothreads.
#[derive(Debug, Default)]
pub struct NbdTwoIothreads;

impl Transport for NbdTwoIothreads {
    fn id(&self) -> &'static str {
        "nbd-2t"
    }

    fn launch(&self, server: ServerKind, backend: &Backend, dir: &Path) -> Option<LaunchSpec> {
        let mut spec = Nbd.launch(server, backend, dir)?;
        if matches!(server, ServerKind::Ringstor | ServerKind::RingstorNoStats) {
            let one = format!("iothread={}", qsd::IOTHREAD);
            let two = format!("iothread.0={},iothread.1=io1", qsd::IOTHREAD);
            for a in &mut spec.args {
                if a.starts_with("type=nbd,") && a.ends_with(&one) {
                    *a = format!("{}{two}", &a[..a.len() - one.len()]);
                }
            }
            // Objects before the export that names them.
            let at = spec
                .args
                .iter()
                .position(|a| a == "--export")
                .unwrap_or(spec.args.len());
            spec.args
                .splice(at..at, ["--object".to_string(), "iothread,id=io1".into()]);
        }
        Some(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ringstor_gets_two_iothreads_qsd_one() {
        let b = Backend::Null { size: 1 << 20 };
        let r = NbdTwoIothreads
            .launch(ServerKind::Ringstor, &b, Path::new("/d"))
            .unwrap();
        assert!(r
            .args
            .iter()
            .any(|a| a.starts_with("type=nbd,") && a.ends_with("iothread.0=io0,iothread.1=io1")));
        assert!(r.args.iter().any(|a| a == "iothread,id=io1"));
        let q = NbdTwoIothreads
            .launch(ServerKind::Qsd, &b, Path::new("/d"))
            .unwrap();
        assert!(q.args.iter().any(|a| a.ends_with(",iothread=io0")));
        assert!(!q.args.iter().any(|a| a == "iothread,id=io1"));
    }
}
