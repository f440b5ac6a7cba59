//! The control thread: one thread owns all state and serves QMP commands,
//! export-drained notices and signals one at a time.
//!
//! ```text
//!  monitor threads ──QmpRequest──┐
//!  export drivers ──ExportDrained┼──► control thread ──► Daemon state
//!  signal thread ───Signal───────┘        (select!)       nodes, iothreads,
//!                                                          NBD server, exports
//! ```
//!
//! Nothing here does I/O on an image: exports run on iothreads, and
//! exports that name no iothread run on the built-in default iothread.
//!
//! # Event order
//!
//! Like QSD, events caused by a command (`BLOCK_EXPORT_DELETED` from
//! `block-export-del`, `nbd-server-stop` or `quit`) are emitted before the
//! command's reply: the control thread waits (bounded) for the drain.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, unbounded, Receiver, Sender};
use drivers::export::RemoveMode;
use serde_json::{json, Map, Value};

use crate::blocks::BlockGraph;
use crate::error::Result;
use crate::nbd::NbdServer;
use crate::objects::Objects;
use crate::placement::Placement;
use crate::qmp::{EventBus, MonitorAddr, MonitorFds, MonitorServer, QmpError, QmpRequest};
use crate::registry::ExportRegistry;
use crate::stats::StatsHub;

/// How long exports get to drain at `quit` or `nbd-server-stop` before
/// they are dropped anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a hard `block-export-del` waits for the clients to go, so the
/// event comes before the reply as in QSD (later, it just comes later).
pub(crate) const HARD_DEL_WAIT: Duration = Duration::from_secs(1);

/// Messages from inside the daemon to the control thread.
#[derive(Debug)]
pub enum Internal {
    /// An export has no client left after `remove` (removal contract).
    ExportDrained(String),
    /// SIGTERM, SIGINT or SIGHUP: quit cleanly.
    Signal(nix::sys::signal::Signal),
    /// A metrics endpoint wants every export's numbers.
    Metrics(Sender<Vec<crate::stats::ExportView>>),
}

/// All control-plane state; lives on the control thread.
pub struct Daemon {
    pub(crate) blocks: BlockGraph,
    pub(crate) objects: Objects,
    pub(crate) nbd: Option<NbdServer>,
    /// The `tls-creds` object of the running NBD server (in use: it cannot
    /// be deleted).
    pub(crate) nbd_tls_creds: Option<String>,
    pub(crate) exports: ExportRegistry,
    pub(crate) events: EventBus,
    /// Totals of removed exports (`query-blockstats`).
    pub(crate) stats: StatsHub,
    /// Set by `quit` or a signal; the loop ends after the current message.
    pub(crate) quit: bool,
    monitors: Vec<MonitorServer>,
    requests_tx: Sender<QmpRequest>,
    requests_rx: Receiver<QmpRequest>,
    internal_tx: Sender<Internal>,
    internal_rx: Receiver<Internal>,
    /// Messages set aside while waiting for exports to drain.
    pending: VecDeque<Internal>,
    /// Files removed at exit (the pidfile).
    cleanup: Vec<PathBuf>,
    /// The QMP command being run: its monitor and `getfd` descriptor
    /// (QEMU's `monitor_cur()`); `None` for the command line.
    request: Option<(Arc<MonitorFds>, Option<OwnedFd>)>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("objects", &self.objects)
            .field("exports", &self.exports)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Starts the default iothread; everything else comes from commands.
    pub fn new() -> Result<Daemon> {
        let (requests_tx, requests_rx) = unbounded();
        let (internal_tx, internal_rx) = unbounded();
        Ok(Daemon {
            blocks: BlockGraph::default(),
            objects: Objects::new(Placement::from_affinity())?,
            nbd: None,
            nbd_tls_creds: None,
            exports: ExportRegistry::new(internal_tx.clone()),
            events: EventBus::new(),
            stats: StatsHub::default(),
            quit: false,
            monitors: Vec::new(),
            requests_tx,
            requests_rx,
            internal_tx,
            internal_rx,
            pending: VecDeque::new(),
            cleanup: Vec::new(),
            request: None,
        })
    }

    /// Where signal and driver notices go.
    pub fn internal_sender(&self) -> Sender<Internal> {
        self.internal_tx.clone()
    }

    /// Starts a QMP monitor (`--chardev` + `--monitor`).
    pub fn add_monitor(&mut self, addr: MonitorAddr, pretty: bool) -> Result<()> {
        let m = MonitorServer::start(addr, pretty, self.requests_tx.clone(), self.events.clone())?;
        self.monitors.push(m);
        Ok(())
    }

    /// The monitor the running QMP command came from.
    pub(crate) fn request_monitor(&self) -> Option<&Arc<MonitorFds>> {
        self.request.as_ref().map(|(m, _)| m)
    }

    /// The descriptor passed with the running `getfd`, and its monitor.
    pub(crate) fn take_request_fd(&mut self) -> Option<(Arc<MonitorFds>, OwnedFd)> {
        let (monitor, fd) = self.request.as_mut()?;
        Some((monitor.clone(), fd.take()?))
    }

    /// Whether a quit signal has arrived, for start-up steps that block
    /// (`wait=on`); other notices are kept for the control loop.
    pub fn quit_requested(&mut self) -> bool {
        while let Ok(m) = self.internal_rx.try_recv() {
            match m {
                Internal::Signal(sig) => {
                    log::info!("received {sig}, quitting");
                    self.quit = true;
                }
                other => self.pending.push_back(other),
            }
        }
        self.quit
    }

    /// Removes `path` when the daemon exits.
    pub fn remove_at_exit(&mut self, path: PathBuf) {
        self.cleanup.push(path);
    }

    /// Runs a command as if it came from QMP (also used by the CLI).
    pub fn execute(
        &mut self,
        command: &str,
        args: Map<String, Value>,
    ) -> std::result::Result<Value, QmpError> {
        let r = crate::commands::dispatch(self, command, args);
        self.process_internal();
        r
    }

    /// Serves until `quit` or a signal, then shuts down.
    pub fn run(&mut self) {
        while !self.quit {
            if let Some(m) = self.pending.pop_front() {
                self.handle_internal(m);
                continue;
            }
            select! {
                recv(self.requests_rx) -> r => {
                    // We hold a sender, so the channel never disconnects.
                    if let Ok(req) = r {
                        self.handle_request(req);
                    }
                }
                recv(self.internal_rx) -> m => {
                    if let Ok(m) = m {
                        self.handle_internal(m);
                    }
                }
            }
        }
        self.shutdown();
    }

    fn handle_request(&mut self, req: QmpRequest) {
        log::debug!("qmp: {} {:?}", req.command, req.arguments);
        self.request = Some((req.monitor, req.fd));
        let result = self.execute(&req.command, req.arguments);
        // A descriptor the command did not take is closed.
        self.request = None;
        if self.quit {
            // QSD emits the exports' events before quit's reply.
            self.remove_exports(None);
        }
        // The client may have gone; nothing to do then.
        let _ = req.reply.send(result);
    }

    fn handle_internal(&mut self, m: Internal) {
        match m {
            Internal::ExportDrained(id) => self.export_drained(&id),
            Internal::Metrics(tx) => self.answer_metrics(tx),
            Internal::Signal(sig) => {
                log::info!("received {sig}, quitting");
                self.quit = true;
                self.remove_exports(None);
            }
        }
    }

    /// A scrape: the cumulative numbers of every live export.
    fn answer_metrics(&mut self, tx: Sender<Vec<crate::stats::ExportView>>) {
        let views = crate::stats::gather(self, drivers::stats::View::Cumulative, None, false);
        // The scraper may have given up; nothing to do then.
        let _ = tx.send(views);
    }

    pub(crate) fn export_drained(&mut self, id: &str) {
        if let Some(st) = self.exports.stats_of(id) {
            // Its queues are gone; keep what they did for its node.
            let threads = crate::stats::threads(self);
            self.stats.retire(&threads, &st);
        }
        if self.exports.drained(id) {
            self.events
                .emit("BLOCK_EXPORT_DELETED", json!({ "id": id }));
        }
    }

    /// Handles drained notices already queued (exports that drained
    /// synchronously inside a command), keeping other messages for later.
    fn process_internal(&mut self) {
        while let Ok(m) = self.internal_rx.try_recv() {
            match m {
                Internal::ExportDrained(id) => self.export_drained(&id),
                Internal::Metrics(tx) => self.answer_metrics(tx),
                other => self.pending.push_back(other),
            }
        }
    }

    /// Hard-removes the exports of a type (`None`: all) and waits for
    /// them to drain, as QEMU's `blk_exp_close_all_type()` does.
    pub(crate) fn remove_exports(&mut self, kind: Option<&str>) {
        let ids = self.exports.ids(kind);
        // Newest first, the order QSD emits the events in.
        for id in ids.iter().rev() {
            match self.exports.remove(id, RemoveMode::Hard) {
                Ok(()) => {}
                // Already shutting down: just wait for it below.
                Err(e) => log::debug!("export {id}: {e}"),
            }
        }
        if !self.wait_drained(&ids, DRAIN_TIMEOUT) {
            for id in ids {
                if self.exports.kind_of(&id).is_some() {
                    log::warn!("export {id} did not drain in time; dropping it");
                    self.export_drained(&id);
                }
            }
        }
    }

    /// Waits up to `timeout` for the exports `ids` to drain, handling
    /// their notices (and setting other messages aside). True if all did.
    pub(crate) fn wait_drained(&mut self, ids: &[String], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.process_internal();
            if !ids.iter().any(|i| self.exports.kind_of(i).is_some()) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            match self.internal_rx.recv_timeout(deadline - now) {
                Ok(Internal::ExportDrained(id)) => self.export_drained(&id),
                Ok(Internal::Metrics(tx)) => self.answer_metrics(tx),
                Ok(other) => self.pending.push_back(other),
                Err(_) => {}
            }
        }
    }

    /// Tears everything down in dependency order.
    pub fn shutdown(&mut self) {
        self.remove_exports(None);
        if let Some(server) = self.nbd.take() {
            server.stop();
        }
        self.blocks.clear();
        self.objects.stop_all();
        if !self.monitors.is_empty() {
            // Let monitor threads write the last reply before their
            // connections close.
            std::thread::sleep(Duration::from_millis(50));
        }
        for mut m in self.monitors.drain(..) {
            m.shutdown();
        }
        for p in self.cleanup.drain(..) {
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    log::warn!("cannot remove {}: {e}", p.display());
                }
            }
        }
    }
}
