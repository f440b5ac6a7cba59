//! Monitor listeners and connection handling.
//!
//! Plain blocking threads: one accept thread per listener and one thread
//! per connection. A connection thread frames input (`lexer`), runs the
//! protocol state machine (`session`) and, for real commands, hands a
//! `QmpRequest` to the single control thread and blocks for its answer.
//! Like QEMU without OOB, a connection reads no further input while its
//! command runs, so replies come back in request order.

use super::chardev::{Chardev, Socket};
use super::conn::{MonitorConn, Stream};
use super::error::{MonitorError, QmpError};
use super::event::EventBus;
use super::fds::MonitorFds;
use super::lexer::JsonStream;
use super::session::{Action, Session};
use super::wire::{error_response, greeting, success_response};
use super::{MonitorAddr, QmpRequest};
use crossbeam_channel::Sender;
use drivers::socket::{listen, ListenAddr};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde_json::Value;
use std::io::{self, ErrorKind, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// Description given when the control thread has gone away.
const CONTROL_GONE: &str = "ringstor control thread is not running";

/// What every connection of one listener shares.
struct Shared {
    pretty: bool,
    /// Descriptors stored with `getfd`: per monitor, as in QEMU, so they
    /// outlive the connection that sent them.
    fds: Arc<MonitorFds>,
    requests: Sender<QmpRequest>,
    events: EventBus,
    conns: Mutex<Vec<Weak<MonitorConn>>>,
}

/// A listening QMP monitor (`--chardev socket,server=on,wait=off` plus
/// `--monitor`). Dropping it (or calling `shutdown`) stops accepting,
/// closes its connections and removes the Unix socket file it created.
pub struct MonitorServer {
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
    /// Writing end of the accept thread's wake-up pipe.
    wake: Option<UnixStream>,
    local_addr: Option<SocketAddr>,
    socket_path: Option<PathBuf>,
}

impl std::fmt::Debug for MonitorServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorServer")
            .field("local_addr", &self.local_addr)
            .field("socket_path", &self.socket_path)
            .finish_non_exhaustive()
    }
}

impl MonitorServer {
    /// Binds `addr` (or takes the opened chardev) and starts accepting
    /// monitor connections. Commands go to `requests`; events emitted on
    /// `events` reach negotiated clients.
    pub fn start(
        addr: MonitorAddr,
        pretty: bool,
        requests: Sender<QmpRequest>,
        events: EventBus,
    ) -> Result<MonitorServer, MonitorError> {
        let chardev = match addr {
            MonitorAddr::Unix(path) => Chardev::new(listen(ListenAddr::Unix(path))?),
            MonitorAddr::Tcp { host, port } => {
                Chardev::new(listen(ListenAddr::Tcp { host, port })?)
            }
            MonitorAddr::Open(c) => c,
        };
        let Some((listener, socket_path, first)) = chardev.take() else {
            return Err(MonitorError::Io(io::Error::other("chardev already in use")));
        };
        let local_addr = listener.local_addr();
        // Non-blocking so a connection that vanishes between poll() and
        // accept() cannot wedge the accept thread.
        listener.set_nonblocking(true)?;
        let (wake, wake_rx) = UnixStream::pair()?;
        let shared = Arc::new(Shared {
            pretty,
            fds: Arc::new(MonitorFds::default()),
            requests,
            events,
            conns: Mutex::new(Vec::new()),
        });
        if let Some(first) = first {
            spawn_connection(first, &shared);
        }
        let thread_shared = Arc::clone(&shared);
        let accept_thread = std::thread::Builder::new()
            .name("qmp-accept".into())
            .spawn(move || accept_loop(listener, wake_rx, thread_shared))?;
        Ok(MonitorServer {
            shared,
            accept_thread: Some(accept_thread),
            wake: Some(wake),
            local_addr,
            socket_path,
        })
    }

    /// The bound TCP address (the real port when started with port `0`).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The Unix socket path, for Unix monitors.
    pub fn path(&self) -> Option<&Path> {
        self.socket_path.as_deref()
    }

    /// Stops accepting, closes open connections and removes the socket
    /// file. Idempotent; also done on drop.
    pub fn shutdown(&mut self) {
        if let Some(mut wake) = self.wake.take() {
            // Either the byte or the hang-up wakes the accept thread.
            let _ = wake.write_all(&[0]);
        }
        if let Some(t) = self.accept_thread.take() {
            if t.join().is_err() {
                log::error!("qmp: accept thread panicked");
            }
        }
        let conns =
            std::mem::take(&mut *self.shared.conns.lock().unwrap_or_else(|e| e.into_inner()));
        for conn in conns.iter().filter_map(Weak::upgrade) {
            conn.close();
        }
        if let Some(path) = self.socket_path.take() {
            // QEMU unlinks its listening socket on exit too.
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != ErrorKind::NotFound {
                    log::warn!("qmp: cannot remove {}: {e}", path.display());
                }
            }
        }
    }
}

impl Drop for MonitorServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: Socket, wake: UnixStream, shared: Arc<Shared>) {
    loop {
        let (ready, woken) = {
            let mut fds = [
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("qmp: poll on monitor listener failed: {e}");
                    return;
                }
            }
            let ready = fds[0].revents().is_some_and(|r| !r.is_empty());
            let woken = fds[1].revents().is_some_and(|r| !r.is_empty());
            (ready, woken)
        };
        if woken {
            return;
        }
        if !ready {
            continue;
        }
        match listener.accept() {
            Ok(stream) => spawn_connection(stream, &shared),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                // E.g. EMFILE: back off instead of spinning on poll().
                log::warn!("qmp: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn spawn_connection(stream: Stream, shared: &Arc<Shared>) {
    let shared = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name("qmp-conn".into())
        .spawn(move || {
            if let Err(e) = serve(stream, &shared) {
                log::debug!("qmp: monitor connection ended: {e}");
            }
        });
    if let Err(e) = spawned {
        log::warn!("qmp: cannot start connection thread: {e}");
    }
}

/// Runs one monitor connection until the client disconnects.
fn serve(mut reader: Stream, shared: &Shared) -> io::Result<()> {
    let conn = Arc::new(MonitorConn::new(reader.try_clone()?, shared.pretty)?);
    {
        let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|w| w.strong_count() > 0);
        conns.push(Arc::downgrade(&conn));
    }
    shared.events.subscribe(&conn);
    let result = serve_session(&mut reader, &conn, shared);
    conn.close();
    result
}

fn serve_session(reader: &mut Stream, conn: &MonitorConn, shared: &Shared) -> io::Result<()> {
    if !conn.send(&greeting()) {
        return Ok(());
    }
    let mut input = SessionInput::new();
    let mut buf = vec![0u8; 16 * 1024];
    // The descriptors of the last read that carried any, as QEMU's socket
    // chardev keeps them: `getfd` takes the first and closes the others; a
    // later batch, or the end of the connection, closes what nobody took.
    let mut passed: Vec<OwnedFd> = Vec::new();
    loop {
        let n = match reader.read_with_fds(&mut buf) {
            Ok((0, _)) => return Ok(()),
            Ok((n, fds)) => {
                if !fds.is_empty() {
                    passed = fds;
                }
                n
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let go_on = input.feed(
            &buf[..n],
            |command, arguments| {
                let fd = match command.as_str() {
                    "getfd" => std::mem::take(&mut passed).into_iter().next(),
                    _ => None,
                };
                run_command(shared, command, arguments, fd)
            },
            |negotiated, response| {
                if negotiated {
                    conn.set_negotiated();
                }
                conn.send(response)
            },
        );
        if !go_on {
            return Ok(());
        }
    }
}

/// The input side of one connection, free of I/O: framing, the protocol
/// state machine and the reply for each message. `serve_session` runs it
/// on socket reads; `fuzz_session` on fuzzer input.
pub(crate) struct SessionInput {
    session: Session,
    framer: JsonStream,
    messages: Vec<super::lexer::Message>,
}

impl SessionInput {
    pub(crate) fn new() -> Self {
        SessionInput {
            session: Session::new(),
            framer: JsonStream::new(),
            messages: Vec::new(),
        }
    }

    /// Feeds one read's worth of bytes. Each complete message gets exactly
    /// one response, handed to `send` with whether the session is
    /// negotiated; commands are run by `run`. Returns false as soon as
    /// `send` does (the connection is gone).
    pub(crate) fn feed(
        &mut self,
        bytes: &[u8],
        mut run: impl FnMut(String, serde_json::Map<String, Value>) -> Result<Value, QmpError>,
        mut send: impl FnMut(bool, &Value) -> bool,
    ) -> bool {
        self.framer.feed(bytes, &mut self.messages);
        for msg in self.messages.drain(..) {
            let response = match self.session.handle(msg) {
                Action::Reply(v) => v,
                Action::Forward {
                    command,
                    arguments,
                    id,
                } => command_response(run(command, arguments), id.as_ref()),
            };
            if !send(self.session.negotiated(), &response) {
                return false;
            }
        }
        true
    }
}

/// The reply to a command that ran: QEMU answers `{}` for commands that
/// return nothing.
fn command_response(result: Result<Value, QmpError>, id: Option<&Value>) -> Value {
    match result {
        Ok(Value::Null) => success_response(Value::Object(Default::default()), id),
        Ok(v) => success_response(v, id),
        Err(e) => error_response(&e, id),
    }
}

/// Hands a command to the control thread and waits for its answer. If the
/// client disconnects meanwhile, the answer is simply dropped later.
fn run_command(
    shared: &Shared,
    command: String,
    arguments: serde_json::Map<String, Value>,
    fd: Option<OwnedFd>,
) -> Result<Value, QmpError> {
    let (reply, answer) = crossbeam_channel::bounded(1);
    let req = QmpRequest {
        command,
        arguments,
        reply,
        monitor: shared.fds.clone(),
        fd,
    };
    match shared.requests.send(req) {
        Ok(()) => answer
            .recv()
            .unwrap_or_else(|_| Err(QmpError::generic(CONTROL_GONE))),
        Err(_) => Err(QmpError::generic(CONTROL_GONE)),
    }
}
