//! The NBD server's exports: what the handshake looks up by name, and the
//! [`Export`] the control plane holds for each.
//!
//! The map is read at handshake time only (never on the data path). Each
//! export counts its connections and keeps a `dup` of every connection's
//! socket, so a hard removal can `shutdown(2)` them from the control thread
//! without racing the iothread that owns (and may close) the original fd.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use engine::block::DirtyBitmap;

use super::proto::consts::NBD_MAX_PAYLOAD;
use super::proto::{transmission_flags, ExportCaps, ExportCatalog, ExportInfo};
use super::server::NbdBitmap;
use crate::export::{Export, ExportCommon, ExportError, RemoveMode};

/// How long a hard removal lets in-flight replies go out before it cuts
/// the connections.
const HARD_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// `NBD_INFO_BLOCK_SIZE` preferred size.
const PREFERRED_BLOCK: u32 = 4096;

/// One export as the server sees it.
pub(crate) struct ExportShared {
    pub(crate) common: ExportCommon,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) allocation_depth: bool,
    /// Names of the offered bitmaps (context `qemu:dirty-bitmap:NAME`).
    pub(crate) bitmaps: Vec<String>,
    /// Their bits, by context index.
    pub(crate) bitmap_bits: Vec<Arc<DirtyBitmap>>,
    pub(crate) multi_conn: bool,
    /// Round-robin cursor over `common.iothreads`.
    next_thread: AtomicUsize,
    clients: AtomicUsize,
    removing: AtomicBool,
    drained_sent: AtomicBool,
    /// dup'd sockets of live connections, by connection id.
    sockets: Mutex<BTreeMap<u64, OwnedFd>>,
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

impl ExportShared {
    pub(crate) fn info(&self) -> ExportInfo {
        let caps = ExportCaps {
            read_only: !self.common.writable,
            flush: true,
            fua: true,
            rotational: false,
            trim: true,
            write_zeroes: true,
            fast_zero: true,
            df: true,
            multi_conn: self.multi_conn,
            cache: true,
            block_status_payload: true,
        };
        ExportInfo {
            name: self.name.clone(),
            description: self.description.clone(),
            size: self.common.node.size(),
            transmission_flags: transmission_flags(caps),
            min_block: 1,
            preferred_block: PREFERRED_BLOCK,
            max_block: NBD_MAX_PAYLOAD,
            allocation_depth: self.allocation_depth,
            bitmaps: self.bitmaps.clone(),
        }
    }

    /// Picks the iothread for a new connection.
    pub(crate) fn pick_thread(&self) -> Option<engine::iothread::IoThreadHandle> {
        let n = self.common.iothreads.len();
        if n == 0 {
            return None;
        }
        let i = self.next_thread.fetch_add(1, Ordering::Relaxed) % n;
        Some(self.common.iothreads[i].clone())
    }

    /// Registers a connection (with a dup of its socket); `None` when the
    /// export is being removed.
    pub(crate) fn connect(&self, dup: OwnedFd) -> Option<u64> {
        let mut s = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        if self.removing.load(Ordering::Acquire) {
            return None;
        }
        let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        s.insert(id, dup);
        self.clients.fetch_add(1, Ordering::AcqRel);
        Some(id)
    }

    /// A connection ended.
    pub(crate) fn disconnect(&self, id: u64) {
        let left = {
            let mut s = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
            s.remove(&id);
            self.clients.fetch_sub(1, Ordering::AcqRel) - 1
        };
        if left == 0 && self.removing.load(Ordering::Acquire) {
            self.drained();
        }
    }

    fn drained(&self) {
        if !self.drained_sent.swap(true, Ordering::AcqRel) {
            (self.common.on_drained)(&self.common.id);
        }
    }

    fn shutdown_all(&self, how: nix::sys::socket::Shutdown) {
        let s = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        for fd in s.values() {
            let _ = nix::sys::socket::shutdown(std::os::fd::AsRawFd::as_raw_fd(fd), how);
        }
    }

    /// Hard removal: stop reading requests at once (in-flight ones still
    /// get their replies, so no client sees a reply cut in half), and cut
    /// whatever is left after [`HARD_GRACE`] (a client that does not read).
    fn disconnect_all(self: &Arc<Self>) {
        self.shutdown_all(nix::sys::socket::Shutdown::Read);
        let me = self.clone();
        let Some(thread) = self.common.iothreads.first() else {
            return self.shutdown_all(nix::sys::socket::Shutdown::Both);
        };
        let posted = thread.post(move || {
            engine::iothread::spawn_local(async move {
                engine::op::sleep(HARD_GRACE).await;
                me.shutdown_all(nix::sys::socket::Shutdown::Both);
            })
        });
        if posted.is_err() {
            self.shutdown_all(nix::sys::socket::Shutdown::Both);
        }
    }
}

/// Exports by NBD name.
#[derive(Default)]
pub(crate) struct Registry {
    exports: RwLock<BTreeMap<String, Arc<ExportShared>>>,
}

impl Registry {
    pub(crate) fn get(&self, name: &str) -> Option<Arc<ExportShared>> {
        self.exports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.exports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    }

    fn remove(&self, name: &str) {
        self.exports
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    pub(crate) fn add(
        self: &Arc<Self>,
        common: ExportCommon,
        name: String,
        description: String,
        allocation_depth: bool,
        bitmaps: Vec<NbdBitmap>,
        multi_conn: bool,
    ) -> Result<NbdExport, ExportError> {
        let mut map = self.exports.write().unwrap_or_else(|p| p.into_inner());
        if map.contains_key(&name) {
            return Err(ExportError::Failed(format!(
                "NBD server already has export named '{name}'"
            )));
        }
        let mut holds = Vec::with_capacity(bitmaps.len());
        let mut names = Vec::with_capacity(bitmaps.len());
        let mut bits = Vec::with_capacity(bitmaps.len());
        for b in bitmaps {
            names.push(b.name);
            bits.push(b.bitmap);
            holds.push(b.hold);
        }
        let shared = Arc::new(ExportShared {
            common,
            name: name.clone(),
            description,
            allocation_depth,
            bitmaps: names,
            bitmap_bits: bits,
            multi_conn,
            next_thread: AtomicUsize::new(0),
            clients: AtomicUsize::new(0),
            removing: AtomicBool::new(false),
            drained_sent: AtomicBool::new(false),
            sockets: Mutex::new(BTreeMap::new()),
        });
        map.insert(name, shared.clone());
        Ok(NbdExport {
            shared,
            registry: self.clone(),
            _holds: holds,
        })
    }
}

impl ExportCatalog for Registry {
    fn list(&self) -> Vec<(String, String)> {
        self.exports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|e| (e.name.clone(), e.description.clone()))
            .collect()
    }

    fn lookup(&self, name: &str) -> Option<ExportInfo> {
        self.get(name).map(|e| e.info())
    }
}

/// An NBD export held by the control plane's registry.
pub struct NbdExport {
    shared: Arc<ExportShared>,
    registry: Arc<Registry>,
    /// The offered bitmaps stay busy until the registry drops the export
    /// (after the last client, as QEMU's `nbd_export_delete`).
    _holds: Vec<engine::block::BusyGuard>,
}

impl Export for NbdExport {
    fn id(&self) -> &str {
        &self.shared.common.id
    }

    fn kind(&self) -> &'static str {
        "nbd"
    }

    fn remove(&mut self, mode: RemoveMode) -> Result<(), ExportError> {
        let sh = &self.shared;
        {
            let s = sh.sockets.lock().unwrap_or_else(|p| p.into_inner());
            if mode == RemoveMode::Safe && !s.is_empty() {
                return Err(ExportError::InUse(sh.common.id.clone()));
            }
            sh.removing.store(true, Ordering::Release);
        }
        // New clients can no longer find it.
        self.registry.remove(&sh.name);
        if mode == RemoveMode::Hard {
            sh.disconnect_all();
        }
        if sh.clients.load(Ordering::Acquire) == 0 {
            sh.drained();
        }
        Ok(())
    }

    fn clients(&self) -> usize {
        self.shared.clients.load(Ordering::Acquire)
    }
}

impl Drop for NbdExport {
    fn drop(&mut self) {
        // Dropped without removal (e.g. a failed add): make sure no client stays.
        if !self.shared.removing.swap(true, Ordering::AcqRel) {
            self.registry.remove(&self.shared.name);
            self.shared.shutdown_all(nix::sys::socket::Shutdown::Both);
        }
    }
}
