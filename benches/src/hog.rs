//! `--hog CPUS`: a busy loop pinned to CPUS for the whole run, so the rows
//! show how each server copes with a core it shares (polling that does not
//! yield costs the hog, and the hog costs a pinned server's latency).

use crate::error::{Context, Result};
use std::process::{Child, Command, Stdio};

/// The running hog; killed when dropped.
pub struct Hog(Child);

impl Hog {
    /// Starts `taskset -c cpus sh -c 'while :; do :; done'`.
    pub fn start(cpus: &str) -> Result<Hog> {
        let child = Command::new("taskset")
            .args(["-c", cpus, "sh", "-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting the CPU hog on {cpus}"))?;
        Ok(Hog(child))
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
