//! The QMP monitor transport, wire-compatible with qemu-storage-daemon.
//!
//! This layer owns sockets, the greeting, input framing, capabilities
//! negotiation, protocol-level errors and event delivery. It implements no
//! commands: each accepted command becomes a [`QmpRequest`] sent to the
//! control thread, which answers on the request's `reply` channel.
//!
//! Layout: `lexer` + `parser` turn bytes into JSON values exactly like
//! QEMU; `wire` prints replies exactly like QEMU; `session` is the
//! per-connection protocol state machine; `conn` is the shared socket
//! writer; `event` broadcasts events; `chardev` is a listening socket
//! before its monitor starts (`wait=on`); `fds` holds what `getfd` stored;
//! `server` runs listeners and connection threads, and receives the
//! descriptors clients pass (`SCM_RIGHTS`).
#![forbid(unsafe_code)]

mod chardev;
mod conn;
mod error;
mod event;
mod fds;
mod lexer;
mod parser;
mod server;
mod session;
mod wire;

#[cfg(test)]
mod protocol_tests;
#[cfg(test)]
mod tests;

pub use chardev::Chardev;
pub use error::{ErrorClass, MonitorError, QmpError};
pub use event::EventBus;
pub use fds::MonitorFds;
pub use server::MonitorServer;
/// Parses a whole JSON text (a command-line option) with QEMU's parser and
/// wording: `Err` is the QEMU error description; several values give
/// `"Expecting at most one JSON value"`.
pub fn parse_json_text(text: &str) -> Result<serde_json::Value, String> {
    let mut stream = lexer::JsonStream::new();
    let mut out = Vec::new();
    stream.feed(text.as_bytes(), &mut out);
    stream.finish(&mut out);
    let mut values = out.into_iter();
    match (values.next(), values.next()) {
        (None, _) => Err("JSON parse error, premature EOI".into()),
        (Some(first), None) => first,
        (Some(Err(e)), Some(_)) => Err(e),
        (Some(Ok(_)), Some(_)) => Err("Expecting at most one JSON value".into()),
    }
}

pub use wire::{greeting, package_string, to_qemu_json, version_info, QEMU_VERSION};

/// Fuzzing entry point: one monitor connection without a socket. Sends the
/// greeting, feeds `chunks` as successive reads through the same framing,
/// session and reply path `MonitorServer` uses, runs commands with `run`
/// (standing in for the control thread), and returns every message the
/// connection would write, as its wire text (`\r\n` line endings
/// included, several lines each when `pretty`).
#[doc(hidden)]
pub fn fuzz_session<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    pretty: bool,
    mut run: impl FnMut(
        String,
        serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Value, QmpError>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut encode = |v: &serde_json::Value| {
        // QEMU's writer escapes everything outside printable ASCII.
        out.push(String::from_utf8_lossy(&wire::encode_message(v, pretty)).into_owned());
    };
    encode(&greeting());
    let mut input = server::SessionInput::new();
    for chunk in chunks {
        input.feed(chunk, &mut run, |_, response| {
            encode(response);
            true
        });
    }
    out
}

use std::path::PathBuf;
use std::sync::Arc;

/// One command for the control thread. Reply exactly once on `reply` with
/// the command's return value (`Value::Null` means `{}`) or its error; the
/// monitor adds `"id"` and the `return`/`error` wrapper itself. If the
/// client has gone, the send fails harmlessly.
#[derive(Debug)]
pub struct QmpRequest {
    pub command: String,
    pub arguments: serde_json::Map<String, serde_json::Value>,
    pub reply: crossbeam_channel::Sender<Result<serde_json::Value, QmpError>>,
    /// The descriptors the monitor holds (`getfd`), which `fd` socket
    /// addresses in this command may name.
    pub monitor: Arc<MonitorFds>,
    /// For `getfd`: the descriptor the client passed with it (`SCM_RIGHTS`).
    pub fd: Option<std::os::fd::OwnedFd>,
}

/// Where a monitor listens (`--chardev socket,path=..` or `host=..,port=..`),
/// or the chardev already opened (`fd=..`, `wait=on`).
#[derive(Debug)]
pub enum MonitorAddr {
    Unix(PathBuf),
    Tcp { host: String, port: String },
    Open(Chardev),
}
