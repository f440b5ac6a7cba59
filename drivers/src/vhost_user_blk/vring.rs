//! What the frontend told us about one vring, and the queue running on an
//! iothread when it is started.

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::virtio_blk::{QueueControl, QueueEnd};

/// How long stopping a queue waits for its requests in flight.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A queue running on an iothread.
pub struct Running {
    pub control: Arc<QueueControl>,
    pub done: Receiver<QueueEnd>,
}

/// One vring's configuration (`SET_VRING_*`).
#[derive(Default)]
pub struct Vring {
    pub size: u16,
    /// Frontend virtual addresses (`SET_VRING_ADDR`).
    pub desc_va: u64,
    pub avail_va: u64,
    pub used_va: u64,
    pub addr_set: bool,
    /// `SET_VRING_BASE`, then where the queue stopped.
    pub next_avail: u16,
    pub next_used: Option<u16>,
    pub kick: Option<File>,
    pub call: Option<Arc<File>>,
    pub err: Option<Arc<File>>,
    /// `SET_VRING_ENABLE` (starts enabled when protocol features are off).
    pub enabled: bool,
    pub running: Option<Running>,
}

impl Vring {
    /// Stops the running queue, waiting for its requests in flight, and
    /// records where it ended. True when it stopped in time (or was not
    /// running).
    pub fn stop(&mut self, index: usize) -> bool {
        let Some(r) = self.running.take() else {
            return true;
        };
        r.control.stop();
        match r.done.recv_timeout(STOP_TIMEOUT) {
            Ok(end) => {
                self.next_avail = end.next_avail;
                self.next_used = Some(end.next_used);
                true
            }
            Err(_) => {
                log::warn!("vhost-user-blk: queue {index} did not stop within {STOP_TIMEOUT:?}");
                false
            }
        }
    }
}
