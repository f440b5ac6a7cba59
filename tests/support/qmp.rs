//! A small blocking QMP client (JSON lines over a unix socket).
//!
//! Events that arrive while waiting for a command's reply are queued and can be
//! read later with [`Qmp::wait_event`], so no event is ever lost.

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a single command may take before the test fails.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// An error reply: `{"error": {"class": ..., "desc": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QmpError {
    pub class: String,
    pub desc: String,
}

/// A connected QMP monitor.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// The greeting the server sent on connect.
    pub greeting: Value,
    events: VecDeque<Value>,
}

impl Qmp {
    /// Connect and read the greeting, without negotiating capabilities.
    pub fn connect_raw(path: &Path) -> Qmp {
        let writer = UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("connect to QMP socket {}: {e}", path.display()));
        let reader = BufReader::new(writer.try_clone().expect("clone QMP stream"));
        let mut q = Qmp {
            reader,
            writer,
            greeting: Value::Null,
            events: VecDeque::new(),
        };
        q.greeting = q
            .read_message(REPLY_TIMEOUT)
            .expect("QMP greeting within timeout");
        assert!(
            q.greeting.get("QMP").is_some(),
            "first message is not a QMP greeting: {}",
            q.greeting
        );
        q
    }

    /// Connect, read the greeting and negotiate capabilities.
    pub fn connect(path: &Path) -> Qmp {
        let mut q = Qmp::connect_raw(path);
        q.execute("qmp_capabilities", json!({}))
            .expect("qmp_capabilities accepted");
        q
    }

    /// The `package` string of the greeting.
    pub fn package(&self) -> String {
        self.greeting["QMP"]["version"]["package"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Send raw bytes on the monitor socket.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to QMP socket");
    }

    /// Read the next JSON message (event or reply), or `None` on timeout/EOF.
    pub fn read_message(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        let mut line = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .expect("set QMP read timeout");
            match self.reader.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) if line.ends_with('\n') => {
                    if line.trim().is_empty() {
                        line.clear();
                        continue;
                    }
                    return Some(
                        serde_json::from_str(line.trim())
                            .unwrap_or_else(|e| panic!("server sent invalid JSON {line:?}: {e}")),
                    );
                }
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue
                }
                Err(e) => panic!("read from QMP socket: {e}"),
            }
        }
    }

    /// Read messages until a reply (`return` or `error`); queue events on the way.
    pub fn read_reply(&mut self) -> Value {
        loop {
            let msg = self
                .read_message(REPLY_TIMEOUT)
                .expect("QMP reply within timeout");
            if msg.get("event").is_some() {
                self.events.push_back(msg);
            } else {
                return msg;
            }
        }
    }

    /// Send a full command object and return the full reply object.
    pub fn send(&mut self, msg: &Value) -> Value {
        let mut text = msg.to_string();
        text.push('\n');
        self.send_raw(text.as_bytes());
        self.read_reply()
    }

    /// Like [`Qmp::send`], passing `fds` with the message (`SCM_RIGHTS`),
    /// as `getfd` wants.
    pub fn send_with_fds(&mut self, msg: &Value, fds: &[std::os::fd::RawFd]) -> Value {
        let mut text = msg.to_string();
        text.push('\n');
        crate::inherit::send_with_fds(&self.writer, text.as_bytes(), fds)
            .expect("sendmsg with SCM_RIGHTS");
        self.read_reply()
    }

    /// Execute `cmd` with `args` (pass `json!({})` for none).
    pub fn execute(&mut self, cmd: &str, args: Value) -> Result<Value, QmpError> {
        let msg = if args.as_object().is_some_and(|o| o.is_empty()) {
            json!({ "execute": cmd })
        } else {
            json!({ "execute": cmd, "arguments": args })
        };
        reply_to_result(self.send(&msg))
    }

    /// Execute and fail the test if the command fails.
    #[track_caller]
    pub fn ok(&mut self, cmd: &str, args: Value) -> Value {
        self.execute(cmd, args.clone())
            .unwrap_or_else(|e| panic!("{cmd} {args} failed: {e:?}"))
    }

    /// Execute and fail the test if the command succeeds.
    #[track_caller]
    pub fn err(&mut self, cmd: &str, args: Value) -> QmpError {
        match self.execute(cmd, args.clone()) {
            Ok(v) => panic!("{cmd} {args} unexpectedly succeeded: {v}"),
            Err(e) => e,
        }
    }

    /// Wait for the next event named `name` (queued or new).
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> Option<Value> {
        if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
            return self.events.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self.read_message(left)?;
            if msg["event"] == name {
                return Some(msg);
            }
            if msg.get("event").is_some() {
                self.events.push_back(msg);
            }
        }
    }

    /// Collect all events named `name` arriving within `window`.
    pub fn collect_events(&mut self, name: &str, window: Duration) -> Vec<Value> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(ev) =
            self.wait_event(name, deadline.saturating_duration_since(Instant::now()))
        {
            out.push(ev);
        }
        out
    }
}

/// Turn a reply object into `Ok(return)` or `Err(QmpError)`.
pub fn reply_to_result(reply: Value) -> Result<Value, QmpError> {
    if let Some(r) = reply.get("return") {
        return Ok(r.clone());
    }
    let e = reply
        .get("error")
        .unwrap_or_else(|| panic!("reply has neither return nor error: {reply}"));
    Err(QmpError {
        class: e["class"].as_str().unwrap_or_default().to_string(),
        desc: e["desc"].as_str().unwrap_or_default().to_string(),
    })
}

/// The "shape" of a JSON value: object keys (recursively), array element shape,
/// scalar type names. Used to compare ringstor's replies with QSD's.
pub fn shape(v: &Value) -> Value {
    match v {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        Value::Array(a) => match a.first() {
            Some(x) => json!([shape(x)]),
            None => json!([]),
        },
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
    }
}

/// True if every key present in `want` (a shape) is present in `got` with a
/// compatible shape. Extra keys in `got` are allowed (extensions).
pub fn shape_covers(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| g.get(k).is_some_and(|gv| shape_covers(gv, wv))),
        (Value::Array(g), Value::Array(w)) => match (g.first(), w.first()) {
            (Some(gv), Some(wv)) => shape_covers(gv, wv),
            _ => true,
        },
        _ => got == want,
    }
}
