//! Asking iothreads for their numbers: the control plane posts one job to
//! every iothread's mailbox and waits for all of them, so a query costs
//! each iothread one copy of its counters between two turns of its loop,
//! and recording itself never waits for anyone.

use std::time::{Duration, Instant};

use engine::iothread::IoThreadHandle;

use super::local::{self, Filter};
use super::snapshot::{ThreadSnapshot, View};

/// How long a query waits for an iothread before leaving it out.
pub const COLLECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What to do on each iothread.
#[derive(Debug, Clone)]
pub struct Request {
    /// Which numbers to copy.
    pub view: View,
    /// Which exports.
    pub filter: Filter,
    /// Reset the since-reset view after copying.
    pub reset: bool,
}

/// Runs `req` on every thread in `threads` and returns their answers,
/// in the order given; an iothread that does not answer within
/// [`COLLECT_TIMEOUT`] is left out (and logged).
pub fn collect(threads: &[IoThreadHandle], req: &Request) -> Vec<ThreadSnapshot> {
    let mut waiting = Vec::with_capacity(threads.len());
    for t in threads {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let name = t.name().to_string();
        let r = req.clone();
        let posted = t.post(move || {
            let snap = local::snapshot(&name, r.view, &r.filter);
            if r.reset {
                local::reset(&r.filter);
            }
            let _ = tx.send(snap);
        });
        if posted.is_ok() {
            waiting.push((t.name().to_string(), rx));
        }
    }
    let deadline = Instant::now() + COLLECT_TIMEOUT;
    waiting
        .into_iter()
        .filter_map(|(name, rx)| {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(s) => Some(s),
                Err(_) => {
                    log::warn!("stats: iothread {name} did not answer; its numbers are left out");
                    None
                }
            }
        })
        .collect()
}

/// Tells every thread to drop what it keeps of exports that are gone.
pub fn forget(threads: &[IoThreadHandle], instances: Vec<u64>) {
    for t in threads {
        let ids = instances.clone();
        // A stopped iothread has nothing left to forget.
        let _ = t.post(move || local::forget(&ids));
    }
}
