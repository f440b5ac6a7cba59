//! Signals: SIGTERM, SIGINT and SIGHUP become a clean quit.
//!
//! [`block`] must run first thing in `main`, before any thread exists, so
//! every thread inherits the mask and only [`spawn_waiter`]'s thread ever
//! receives these signals (by `sigwait`, no handler, no `unsafe`).
//! SIGPIPE needs nothing here: the Rust runtime sets it to ignored before
//! `main`, so writes to a closed socket fail with `EPIPE`.

use crossbeam_channel::Sender;
use nix::sys::signal::{SigSet, Signal};

use crate::daemon::Internal;

/// The signals that quit.
fn quit_set() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set
}

/// Blocks the quit signals in the calling thread (and its future children).
pub fn block() -> nix::Result<()> {
    quit_set().thread_block()
}

/// Starts the thread that waits for the quit signals and tells the control
/// thread.
pub fn spawn_waiter(tx: Sender<Internal>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = quit_set();
            loop {
                match set.wait() {
                    Ok(sig) => {
                        if tx.send(Internal::Signal(sig)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        log::error!("sigwait: {e}");
                        return;
                    }
                }
            }
        })
        .map(|_| ())
}
