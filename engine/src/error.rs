//! The engine's errors: setting up iothreads and rings.

use std::io;

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// io_uring_setup failed with every flag combination tried.
    #[error("cannot set up io_uring: {0}")]
    RingSetup(#[source] io::Error),
    /// The wake-up eventfd could not be created.
    #[error("cannot create eventfd: {0}")]
    Eventfd(#[source] io::Error),
    /// The thread could not be created.
    #[error("cannot spawn iothread: {0}")]
    Spawn(#[source] io::Error),
    /// sched_setaffinity refused the CPU.
    #[error("cannot pin iothread to CPU {cpu}: {source}")]
    Pin {
        /// The CPU asked for.
        cpu: usize,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The iothread has stopped.
    #[error("iothread has stopped")]
    Stopped,
    /// The iothread died while starting.
    #[error("iothread died while starting")]
    Died,
}

/// Engine result.
pub type Result<T> = std::result::Result<T, EngineError>;
