//! [`ControlError`]: why a control-plane operation failed, and its one
//! mapping into a QMP error (`class`, `desc`).
//!
//! `desc` is the `Display` of the error followed by its source chain
//! (skipping a source whose text the message already contains, since many
//! lower-layer errors print their cause themselves). Almost everything is
//! `GenericError`, as in QEMU.

use std::error::Error;

use crate::qapi::InputError;
use crate::qmp::{ErrorClass, QmpError};

/// Why a command or a command-line item failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Bad arguments (QAPI input errors).
    #[error(transparent)]
    Input(#[from] InputError),
    /// A failure described in QEMU's words.
    #[error("{0}")]
    Failed(String),
    /// QEMU's `DeviceNotFound` class.
    #[error("{0}")]
    DeviceNotFound(String),
    /// Opening or attaching to a block node failed.
    #[error(transparent)]
    Block(#[from] engine::block::BlockError),
    /// A dirty-bitmap operation was refused.
    #[error(transparent)]
    Bitmap(#[from] engine::block::BitmapError),
    /// Starting an iothread failed.
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    /// An export driver refused.
    #[error(transparent)]
    Export(#[from] drivers::export::ExportError),
    /// The NBD server could not start.
    #[error(transparent)]
    Nbd(#[from] crate::nbd::NbdError),
    /// A CPU outside the allowed set.
    #[error(transparent)]
    Placement(#[from] crate::placement::PlacementError),
    /// A monitor could not start.
    #[error(transparent)]
    Monitor(#[from] crate::qmp::MonitorError),
    /// No listening socket for an address.
    #[error(transparent)]
    Listen(#[from] drivers::socket::ListenError),
    /// An `fd` address names no descriptor the daemon may take.
    #[error(transparent)]
    Claim(#[from] drivers::socket::ClaimError),
}

impl ControlError {
    /// A `GenericError` with QEMU's wording.
    pub fn failed(desc: impl Into<String>) -> ControlError {
        ControlError::Failed(desc.into())
    }

    /// The QMP class.
    pub fn class(&self) -> ErrorClass {
        match self {
            ControlError::DeviceNotFound(_) => ErrorClass::DeviceNotFound,
            _ => ErrorClass::GenericError,
        }
    }

    /// The QMP `desc`: the message and the causes it does not show.
    pub fn desc(&self) -> String {
        describe(self)
    }
}

impl From<ControlError> for QmpError {
    fn from(e: ControlError) -> QmpError {
        QmpError {
            class: e.class(),
            desc: e.desc(),
        }
    }
}

/// `Display` of `e` plus the source chain, without repeating a cause the
/// message already includes.
pub fn describe(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    strip_os_error(&out)
}

/// Removes Rust's ` (os error N)` suffixes: QEMU prints only strerror().
fn strip_os_error(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(" (os error ") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + " (os error ".len()..];
        match tail.find(')') {
            Some(j) if tail[..j].bytes().all(|b| b.is_ascii_digit()) => rest = &tail[j + 1..],
            _ => {
                out.push_str(" (os error ");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Control-plane result.
pub type Result<T> = std::result::Result<T, ControlError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desc_includes_sources_once() {
        let e = ControlError::Block(engine::block::BlockError::Open {
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        });
        let q: QmpError = e.into();
        assert_eq!(q.class, ErrorClass::GenericError);
        assert_eq!(q.desc, "Could not open '/x': No such file or directory");
    }
}
