//! Stand-in for `drivers::nbd::server` until it is merged: same API, binds
//! the listening socket but serves nothing. Removed after the merge.

use std::collections::BTreeSet;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use drivers::export::{Export, ExportCommon, ExportError, RemoveMode};
use engine::iothread::IoThreadHandle;

pub enum NbdAddr {
    Unix(PathBuf),
    Tcp { host: String, port: String },
    Fd(std::os::fd::OwnedFd),
}

pub struct NbdServerConfig {
    pub addr: NbdAddr,
    pub max_connections: u32,
    pub handshake_timeout: Duration,
}

pub struct NbdExportOptions {
    pub name: String,
    pub description: Option<String>,
    pub allocation_depth: bool,
    pub bitmaps: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    #[error("Failed to bind socket to {0}: {1}")]
    Bind(String, #[source] std::io::Error),
}

pub struct NbdServer {
    path: Option<PathBuf>,
    _listener: Option<UnixListener>,
    names: std::sync::Arc<Mutex<BTreeSet<String>>>,
}

impl NbdServer {
    pub fn start(
        config: NbdServerConfig,
        _accept_on: IoThreadHandle,
    ) -> Result<NbdServer, NbdError> {
        match config.addr {
            NbdAddr::Unix(p) => {
                let l = UnixListener::bind(&p)
                    .map_err(|e| NbdError::Bind(p.display().to_string(), e))?;
                Ok(NbdServer {
                    path: Some(p),
                    _listener: Some(l),
                    names: Default::default(),
                })
            }
            _ => Ok(NbdServer {
                path: None,
                _listener: None,
                names: Default::default(),
            }),
        }
    }

    pub fn add_export(
        &self,
        common: ExportCommon,
        opts: NbdExportOptions,
    ) -> Result<Box<dyn Export>, ExportError> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if !names.insert(opts.name.clone()) {
            return Err(ExportError::Failed(format!(
                "NBD server already has export named '{}'",
                opts.name
            )));
        }
        Ok(Box::new(ShimExport {
            common,
            name: opts.name,
            names: self.names.clone(),
        }))
    }

    pub fn has_export_name(&self, name: &str) -> bool {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    pub fn stop(&self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

struct ShimExport {
    common: ExportCommon,
    name: String,
    names: std::sync::Arc<Mutex<BTreeSet<String>>>,
}

impl Export for ShimExport {
    fn id(&self) -> &str {
        &self.common.id
    }
    fn kind(&self) -> &'static str {
        "nbd"
    }
    fn remove(&mut self, _mode: RemoveMode) -> Result<(), ExportError> {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.name);
        (self.common.on_drained)(&self.common.id);
        Ok(())
    }
    fn clients(&self) -> usize {
        0
    }
}
