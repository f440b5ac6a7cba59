//! Descriptors a monitor's clients stored with `getfd` (QEMU's
//! `mon->fds`): named, owned by the monitor, and taken by whatever names
//! them (an `fd` socket address) or closed by `closefd`.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

/// One monitor's named descriptors.
#[derive(Debug, Default)]
pub struct MonitorFds(Mutex<BTreeMap<String, OwnedFd>>);

impl MonitorFds {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, OwnedFd>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `fd` as `name`; one stored before under that name is closed.
    pub fn insert(&self, name: String, fd: OwnedFd) {
        let old = self.map().insert(name, fd);
        drop(old);
    }

    /// Hands the descriptor named `name` over to the caller.
    pub fn take(&self, name: &str) -> Option<OwnedFd> {
        self.map().remove(name)
    }
}
