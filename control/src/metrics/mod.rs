//! The `metrics` object: an OpenMetrics (Prometheus) text endpoint, off
//! unless asked for with `--object metrics,id=m0,addr.type=inet,
//! addr.host=127.0.0.1,addr.port=9191` (or `addr.type=unix,addr.path=..`).
//!
//! ```text
//!  scraper ─HTTP─► metrics thread ──Internal::Metrics──► control thread
//!                   (http.rs loop)  ◄── Vec<ExportView> ─  stats::gather:
//!                   render.rs text                         one mailbox job
//!                                                          per iothread
//! ```
//!
//! The endpoint has a thread of its own in the control plane; iothreads
//! only answer the control thread's snapshot job, as for QMP queries.

mod http;
mod render;

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use drivers::socket::{Family, Listener};

use crate::daemon::Internal;
use crate::error::{ControlError, Result};
use crate::stats::ExportView;
pub use render::render;

/// How long a scrape waits for the control thread.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running endpoint; stopping it (or dropping this) joins its thread.
pub struct MetricsServer {
    stopping: Arc<AtomicBool>,
    wake: Option<UnixStream>,
    join: Option<JoinHandle<()>>,
    unix_path: Option<PathBuf>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("unix_path", &self.unix_path)
            .finish_non_exhaustive()
    }
}

/// Asks the control thread for the numbers of every export.
struct ControlScraper {
    control: Sender<Internal>,
    /// Set while the control thread stops this server (and so cannot answer).
    stopping: Arc<AtomicBool>,
}

impl http::Scraper for ControlScraper {
    fn scrape(&mut self) -> String {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<ExportView>>(1);
        if self.control.send(Internal::Metrics(tx)).is_err() {
            return render(Vec::new());
        }
        let deadline = std::time::Instant::now() + SCRAPE_TIMEOUT;
        while std::time::Instant::now() < deadline && !self.stopping.load(Ordering::Acquire) {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(v) => return render(v),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        }
        log::warn!("metrics: the control thread did not answer; empty scrape");
        render(Vec::new())
    }
}

impl MetricsServer {
    /// Serves on `listener` (see [`crate::sockets::listen`]); scrapes ask
    /// `control`.
    pub fn start(id: &str, listener: Listener, control: Sender<Internal>) -> Result<Self> {
        let family = listener.family();
        let (fd, unix_path) = listener.into_parts();
        let listener = match family {
            Family::Inet => http::Listener::Tcp(std::net::TcpListener::from(fd)),
            Family::Unix => http::Listener::Unix(std::os::unix::net::UnixListener::from(fd)),
        };
        let set_nb = match &listener {
            http::Listener::Tcp(l) => l.set_nonblocking(true),
            http::Listener::Unix(l) => l.set_nonblocking(true),
        };
        set_nb.map_err(|e| ControlError::failed(format!("metrics socket: {e}")))?;
        let (wake, wake_rx) =
            UnixStream::pair().map_err(|e| ControlError::failed(format!("metrics socket: {e}")))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let mut scraper = ControlScraper {
            control,
            stopping: stopping.clone(),
        };
        let join = std::thread::Builder::new()
            .name(format!("metrics-{id}"))
            .spawn(move || http::serve(listener, wake_rx, &mut scraper))
            .map_err(|e| ControlError::failed(format!("cannot start the metrics thread: {e}")))?;
        Ok(MetricsServer {
            stopping,
            wake: Some(wake),
            join: Some(join),
            unix_path,
        })
    }

    /// Stops serving and joins the thread.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stopping.store(true, Ordering::Release);
        if let Some(mut w) = self.wake.take() {
            let _ = std::io::Write::write_all(&mut w, b"x");
        }
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
        if let Some(p) = self.unix_path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
