//! QMP error values: the `{"class": ..., "desc": ...}` member of an error
//! reply, plus the error type returned when a monitor cannot be started.
//!
//! The class names are part of the wire protocol (clients such as libvirt
//! and the qemu.qmp Python package match on them), so they serialize
//! verbatim as QEMU's `QapiErrorClass` names.

use serde::Serialize;
use std::fmt;

/// QEMU's `QapiErrorClass`. Almost every error is `GenericError`; the others
/// survive only for backwards compatibility, and QMP clients still test for
/// them by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ErrorClass {
    GenericError,
    CommandNotFound,
    DeviceNotFound,
    KVMMissingCap,
}

impl ErrorClass {
    /// The wire name of the class, e.g. `"GenericError"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::GenericError => "GenericError",
            ErrorClass::CommandNotFound => "CommandNotFound",
            ErrorClass::DeviceNotFound => "DeviceNotFound",
            ErrorClass::KVMMissingCap => "KVMMissingCap",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error reply to a QMP command: `{"error": {"class": .., "desc": ..}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{desc}")]
pub struct QmpError {
    pub class: ErrorClass,
    pub desc: String,
}

impl QmpError {
    /// A `GenericError` with the given human-readable description.
    pub fn generic(desc: impl Into<String>) -> Self {
        QmpError {
            class: ErrorClass::GenericError,
            desc: desc.into(),
        }
    }

    /// A `CommandNotFound` error with the given description.
    pub fn not_found(desc: impl Into<String>) -> Self {
        QmpError {
            class: ErrorClass::CommandNotFound,
            desc: desc.into(),
        }
    }

    /// QEMU's exact reply for an unknown command name:
    /// `The command NAME has not been found`.
    pub fn unknown_command(name: &str) -> Self {
        Self::not_found(format!("The command {name} has not been found"))
    }

    /// A `DeviceNotFound` error with the given description.
    pub fn device_not_found(desc: impl Into<String>) -> Self {
        QmpError {
            class: ErrorClass::DeviceNotFound,
            desc: desc.into(),
        }
    }

    /// The value of the `"error"` member of a reply.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::json!({ "class": self.class.as_str(), "desc": self.desc })
    }
}

/// Why a monitor listener could not be started.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Listen(#[from] drivers::socket::ListenError),
    #[error("monitor I/O error: {0}")]
    Io(#[from] std::io::Error),
}
