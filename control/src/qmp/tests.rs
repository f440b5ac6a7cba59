//! Socket-level tests of the monitor: a real `MonitorServer` on a temp
//! Unix socket (or TCP port 0) with a fake control thread.

use super::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A fake control thread: `query-version`, `echo` (returns arguments),
/// `slow` (answers after 300 ms); everything else is CommandNotFound.
fn fake_control() -> crossbeam_channel::Sender<QmpRequest> {
    let (tx, rx) = crossbeam_channel::unbounded::<QmpRequest>();
    std::thread::spawn(move || {
        for req in rx {
            let answer = match req.command.as_str() {
                "query-version" => Ok(version_info()),
                "echo" => Ok(Value::Object(req.arguments.clone())),
                "slow" => {
                    std::thread::sleep(Duration::from_millis(300));
                    Ok(Value::Null)
                }
                other => Err(QmpError::unknown_command(other)),
            };
            // The client may have disconnected; that's fine.
            let _ = req.reply.send(answer);
        }
    });
    tx
}

struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    fn connect(path: &Path) -> std::io::Result<Client> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Client {
            writer: s.try_clone()?,
            reader: BufReader::new(s),
        })
    }

    fn raw_line(&mut self) -> std::io::Result<String> {
        let mut l = String::new();
        self.reader.read_line(&mut l)?;
        Ok(l)
    }

    fn recv(&mut self) -> Result<Value, Box<dyn std::error::Error>> {
        let l = self.raw_line()?;
        Ok(serde_json::from_str(l.trim_end())?)
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)
    }

    fn cmd(&mut self, req: &str) -> Result<Value, Box<dyn std::error::Error>> {
        self.send(req.as_bytes())?;
        self.recv()
    }

    /// Connects, reads the greeting and negotiates capabilities.
    fn ready(path: &Path) -> Result<Client, Box<dyn std::error::Error>> {
        let mut c = Client::connect(path)?;
        c.recv()?;
        assert_eq!(
            c.cmd("{\"execute\":\"qmp_capabilities\"}")?,
            json!({"return": {}})
        );
        Ok(c)
    }

    fn expect_silence(&mut self) -> TestResult {
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut b = [0u8; 1];
        match self.reader.read(&mut b) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("expected no output, got {other:?}"),
        }
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(())
    }
}

fn unix_server(dir: &Path, pretty: bool) -> Result<(MonitorServer, EventBus), MonitorError> {
    let events = EventBus::new();
    let path = dir.join("qmp.sock");
    let server = MonitorServer::start(
        MonitorAddr::Unix(path),
        pretty,
        fake_control(),
        events.clone(),
    )?;
    Ok((server, events))
}

#[test]
fn greeting_negotiation_and_id_echo() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (server, _events) = unix_server(dir.path(), false)?;
    let path = server.path().map(Path::to_path_buf).unwrap_or_default();
    let mut c = Client::connect(&path)?;
    assert_eq!(
        c.raw_line()?,
        format!(
            "{{\"QMP\": {{\"version\": {{\"qemu\": {{\"micro\": 2, \"minor\": 0, \"major\": 10}}, \"package\": \"ringstor {}\"}}, \"capabilities\": [\"oob\"]}}}}\r\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    c.send(b"{\"execute\":\"query-version\",\"id\":\"x\"}")?;
    assert_eq!(
        c.raw_line()?,
        "{\"id\": \"x\", \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Expecting capabilities negotiation with 'qmp_capabilities'\"}}\r\n"
    );
    assert_eq!(
        c.cmd("{\"execute\":\"qmp_capabilities\",\"id\":{\"a\":[1]}}")?,
        json!({"return": {}, "id": {"a": [1]}})
    );
    assert_eq!(
        c.cmd("{\"execute\":\"query-version\",\"id\":[1,\"y\"]}")?,
        json!({"return": version_info(), "id": [1, "y"]})
    );
    assert_eq!(
        c.cmd("{\"execute\":\"nope\",\"id\":3}")?,
        json!({"id": 3, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}})
    );
    assert_eq!(
        c.cmd("{\"execute\":\"echo\",\"arguments\":{\"k\":[true,null]}}")?,
        json!({"return": {"k": [true, null]}})
    );
    assert_eq!(c.cmd("{\"execute\":\"slow\"}")?, json!({"return": {}}));
    Ok(())
}

#[test]
fn malformed_input_then_valid_command() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (server, _events) = unix_server(dir.path(), false)?;
    let path = server.path().map(Path::to_path_buf).unwrap_or_default();
    let mut c = Client::ready(&path)?;
    c.send(b"garbage\n{\"execute\":\"query-version\",\"id\":1}")?;
    assert_eq!(
        c.recv()?,
        json!({"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword 'garbage'"}})
    );
    assert_eq!(c.recv()?["id"], json!(1));
    // Unbalanced input is held until 0xFF forces a resync.
    c.send(b"{\"execute\":[")?;
    c.send(b"\xff{\"execute\":\"query-version\",\"id\":2}")?;
    assert_eq!(
        c.recv()?,
        json!({"error": {"class": "GenericError", "desc": "JSON parse error, stray '\u{FFFD}'"}})
    );
    assert_eq!(c.recv()?["id"], json!(2));
    // Two commands in one write, one split over two writes.
    c.send(b"{\"execute\":\"echo\",\"id\":3}{\"execute\":\"ec")?;
    c.send(b"ho\",\"id\":4}")?;
    assert_eq!(c.recv()?["id"], json!(3));
    assert_eq!(c.recv()?["id"], json!(4));
    Ok(())
}

#[test]
fn events_reach_negotiated_monitors_only() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (server, events) = unix_server(dir.path(), false)?;
    let path = server.path().map(Path::to_path_buf).unwrap_or_default();
    let mut a = Client::ready(&path)?;
    let mut b = Client::ready(&path)?;
    let mut fresh = Client::connect(&path)?;
    fresh.recv()?;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    events.emit("BLOCK_EXPORT_DELETED", json!({"id": "e0"}));
    for c in [&mut a, &mut b] {
        let raw = c.raw_line()?;
        // QSD prints timestamp, event, data in that order.
        assert!(raw.starts_with("{\"timestamp\": {\"seconds\": "), "{raw}");
        let ev: Value = serde_json::from_str(raw.trim_end())?;
        assert_eq!(ev["event"], json!("BLOCK_EXPORT_DELETED"));
        assert_eq!(ev["data"], json!({"id": "e0"}));
        let secs = ev["timestamp"]["seconds"].as_u64().unwrap_or(0);
        assert!(secs >= before && secs < before + 60);
        assert!(ev["timestamp"]["microseconds"].as_u64().unwrap_or(u64::MAX) < 1_000_000);
    }
    fresh.expect_silence()?;
    // Events without data carry no "data" member.
    events.emit("RESUME", Value::Null);
    let ev = a.recv()?;
    assert_eq!(ev["event"], json!("RESUME"));
    assert!(ev.get("data").is_none());
    assert_eq!(b.recv()?["event"], json!("RESUME"));
    // Commands on both monitors still work independently.
    assert_eq!(
        b.cmd("{\"execute\":\"echo\",\"id\":\"b\"}")?["id"],
        json!("b")
    );
    assert_eq!(
        a.cmd("{\"execute\":\"echo\",\"id\":\"a\"}")?["id"],
        json!("a")
    );
    Ok(())
}

#[test]
fn disconnect_mid_command_is_harmless() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (server, events) = unix_server(dir.path(), false)?;
    let path = server.path().map(Path::to_path_buf).unwrap_or_default();
    {
        let mut gone = Client::ready(&path)?;
        gone.send(b"{\"execute\":\"slow\"}")?;
    } // dropped while the control thread is still working
    let mut c = Client::ready(&path)?;
    std::thread::sleep(Duration::from_millis(400));
    events.emit("X", json!({}));
    assert_eq!(c.recv()?["event"], json!("X"));
    assert_eq!(
        c.cmd("{\"execute\":\"slow\",\"id\":9}")?,
        json!({"return": {}, "id": 9})
    );
    Ok(())
}

#[test]
fn control_thread_gone_gives_generic_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (tx, rx) = crossbeam_channel::unbounded();
    drop(rx);
    let path = dir.path().join("q.sock");
    let _server =
        MonitorServer::start(MonitorAddr::Unix(path.clone()), false, tx, EventBus::new())?;
    let mut c = Client::ready(&path)?;
    assert_eq!(
        c.cmd("{\"execute\":\"query-version\",\"id\":1}")?,
        json!({"id": 1, "error": {"class": "GenericError", "desc": "ringstor control thread is not running"}})
    );
    Ok(())
}

#[test]
fn pretty_monitor_prints_like_qsd() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (server, _events) = unix_server(dir.path(), true)?;
    let path = server.path().map(Path::to_path_buf).unwrap_or_default();
    let mut c = Client::connect(&path)?;
    let mut greeting = String::new();
    while !greeting.ends_with("}\r\n}\r\n") || greeting.len() < 20 {
        greeting.push_str(&c.raw_line()?);
        if greeting.ends_with("\r\n}\r\n") {
            break;
        }
    }
    assert!(greeting.starts_with("{\r\n    \"QMP\": {\r\n        \"version\": {\r\n"));
    c.send(b"{\"execute\":\"qmp_capabilities\"}")?;
    let mut reply = String::new();
    for _ in 0..4 {
        reply.push_str(&c.raw_line()?);
    }
    assert_eq!(reply, "{\r\n    \"return\": {\r\n    }\r\n}\r\n");
    Ok(())
}

#[test]
fn tcp_port_zero_reports_bound_port() -> TestResult {
    let addr = MonitorAddr::Tcp {
        host: "127.0.0.1".into(),
        port: "0".into(),
    };
    let server = MonitorServer::start(addr, false, fake_control(), EventBus::new())?;
    let local = server.local_addr().ok_or("no local addr")?;
    assert_ne!(local.port(), 0);
    let s = std::net::TcpStream::connect(local)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut r = BufReader::new(s);
    let mut l = String::new();
    r.read_line(&mut l)?;
    assert!(l.starts_with("{\"QMP\": "));
    Ok(())
}

#[test]
fn socket_file_lifecycle() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("m.sock");
    // A stale socket from a previous run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path)?);
    assert!(path.exists());
    let mut server = MonitorServer::start(
        MonitorAddr::Unix(path.clone()),
        false,
        fake_control(),
        EventBus::new(),
    )?;
    let mut c = Client::ready(&path)?;
    server.shutdown();
    assert!(!path.exists());
    // Open connections are closed too.
    let mut rest = String::new();
    assert_eq!(c.reader.read_to_string(&mut rest)?, 0);
    // A regular file is never deleted.
    std::fs::write(&path, b"data")?;
    let err = MonitorServer::start(
        MonitorAddr::Unix(path.clone()),
        false,
        fake_control(),
        EventBus::new(),
    );
    assert!(err.is_err());
    assert_eq!(std::fs::read(&path)?, b"data");
    Ok(())
}

/// Not a test: serves a monitor on $RINGSTOR_QMP_SOCK (default
/// /tmp/ringstor-qmp.sock) for 60 s so it can be compared with QSD by hand.
#[test]
#[ignore]
fn manual_server() -> TestResult {
    let path =
        std::env::var("RINGSTOR_QMP_SOCK").unwrap_or_else(|_| "/tmp/ringstor-qmp.sock".into());
    let pretty = std::env::var("RINGSTOR_QMP_PRETTY").is_ok();
    let events = EventBus::new();
    let _server = MonitorServer::start(
        MonitorAddr::Unix(path.into()),
        pretty,
        fake_control(),
        events.clone(),
    )?;
    for _ in 0..60 {
        std::thread::sleep(Duration::from_secs(1));
        events.emit("TICK", Value::Null);
    }
    Ok(())
}
