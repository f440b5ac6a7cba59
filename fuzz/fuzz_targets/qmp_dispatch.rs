//! QMP commands against a real in-process control plane: a
//! `control::Daemon` (default iothread, block graph, export registry, NBD
//! server) built once per process, driven through `Daemon::execute`, the
//! control thread's own entry point, with null and temp-file nodes.
//!
//! Input (via `arbitrary`): up to `MAX_OPS` commands. Each names a command
//! from the list `query-commands` reports, or an arbitrary name, and takes
//! either a valid argument object from `TEMPLATES` mutated a few times
//! (members from QAPI's member names and values from a pool of names, enum
//! values and edge numbers, or arbitrary JSON) or an arbitrary JSON object
//! (bounded depth and size).
//!
//! Safety: before dispatch every `filename`/`path` string anywhere in the
//! arguments is replaced by a file or socket path in a per-process temp
//! directory, every `host` by a loopback literal (no name lookups) and a
//! numeric `port` by `0`; nothing else reaches the filesystem or network.
//! `quit` only sets a flag that `Daemon::run` (never called here) reads.
//!
//! State: after each input everything the input created is deleted through
//! the same commands (exports, the NBD server, nodes, iothreads) and the
//! baseline (`null0`: null-co, `io0`: iothread) recreated if it was
//! changed, so memory and threads stay bounded and inputs stay
//! independent.
//!
//! `FUZZ_TRACE=1` prints every command and its result (e.g. when running
//! an artifact).
//!
//! Invariants: no panic; unknown names get exactly QEMU's
//! `CommandNotFound` and known ones never do; errors have a description;
//! every return value prints with QEMU's writer; `query-*` return lists; a
//! successful `blockdev-add`/`object-add`/`block-export-add` shows up in its
//! `query-*`, and `blockdev-del`/`object-del` remove it; after the reset
//! only the baseline is left (no leaked exports, node users or iothreads).
#![no_main]

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use arbitrary::{Arbitrary, Result as AResult, Unstructured};
use control::qmp::{to_qemu_json, ErrorClass};
use control::Daemon;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Number, Value};

const MAX_OPS: usize = 8;
const MAX_DEPTH: usize = 4;
const MAX_MEMBERS: usize = 6;

/// Node and iothread every input starts with.
const BASE_NODE: &str = "null0";
const BASE_IOTHREAD: &str = "io0";

struct Fixture {
    daemon: Daemon,
    /// Names `query-commands` reports.
    commands: Vec<String>,
    tmp: PathBuf,
    /// `query-named-block-nodes` / `query-iothreads` entries of the baseline.
    base_node: Value,
    base_iothread: Value,
    /// `FUZZ_TRACE=1`: print each command and its result to stderr.
    trace: bool,
    /// `metrics` objects added (no query lists them), deleted by `reset`.
    metrics: Vec<String>,
}

fn fixture() -> &'static Mutex<Fixture> {
    static F: OnceLock<Mutex<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        remove_stale_temp_dirs();
        let tmp = std::env::temp_dir().join(format!("{TMP_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&tmp).expect("temp dir");
        for (name, len) in [("disk0", 1u64 << 20), ("disk1", 64 << 10), ("empty", 0)] {
            let f = std::fs::File::create(tmp.join(name)).expect("temp file");
            f.set_len(len).expect("set_len");
        }
        let mut daemon = Daemon::new().expect("Daemon::new");
        let commands = match daemon.execute("query-commands", Map::new()) {
            Ok(Value::Array(list)) => list
                .iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect(),
            other => panic!("query-commands: {other:?}"),
        };
        let mut f = Fixture {
            daemon,
            commands,
            tmp,
            base_node: Value::Null,
            base_iothread: Value::Null,
            trace: std::env::var_os("FUZZ_TRACE").is_some(),
            metrics: Vec::new(),
        };
        create_baseline(&mut f.daemon);
        f.base_node = find(
            &query(&mut f.daemon, "query-named-block-nodes"),
            "node-name",
            BASE_NODE,
        )
        .expect("baseline node");
        f.base_iothread = find(
            &query(&mut f.daemon, "query-iothreads"),
            "id",
            BASE_IOTHREAD,
        )
        .expect("baseline iothread");
        Mutex::new(f)
    })
}

const TMP_PREFIX: &str = "ringstor-fuzz-";

/// libFuzzer exits without unwinding, so each process leaves its temp dir
/// behind; the next one removes those whose process is gone.
fn remove_stale_temp_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(TMP_PREFIX)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn create_baseline(d: &mut Daemon) {
    let node = json!({"driver": "null-co", "node-name": BASE_NODE, "size": 1 << 20,
                      "read-zeroes": true});
    if let Err(e) = d.execute("blockdev-add", obj(node)) {
        panic!("baseline blockdev-add: {e}");
    }
    if let Err(e) = d.execute(
        "object-add",
        obj(json!({"qom-type": "iothread", "id": BASE_IOTHREAD})),
    ) {
        panic!("baseline object-add: {e}");
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Runs a `query-*` command that must succeed with a list.
fn query(d: &mut Daemon, cmd: &str) -> Vec<Value> {
    match d.execute(cmd, Map::new()) {
        Ok(Value::Array(list)) => list,
        other => panic!("{cmd}: {other:?}"),
    }
}

fn find(list: &[Value], key: &str, name: &str) -> Option<Value> {
    list.iter().find(|e| e[key] == name).cloned()
}

fn names(list: &[Value], key: &str) -> Vec<String> {
    list.iter()
        .filter_map(|e| e[key].as_str().map(str::to_string))
        .collect()
}

/// A `query-iothreads` entry without what changes when the thread is
/// recreated with the same options.
fn iothread_identity(e: &Value) -> Value {
    let mut e = e.clone();
    if let Value::Object(m) = &mut e {
        m.remove("thread-id");
        m.remove("cpu");
    }
    e
}

/// Deletes what an input created and restores the baseline; asserts that
/// deletion through QMP really gets back there.
fn reset(f: &mut Fixture) {
    let d = &mut f.daemon;
    for id in names(&query(d, "query-block-exports"), "id") {
        if let Err(e) = d.execute("block-export-del", obj(json!({"id": id, "mode": "hard"}))) {
            panic!("block-export-del {id} (hard): {e}");
        }
    }
    let left = query(d, "query-block-exports");
    assert!(left.is_empty(), "exports survive hard removal: {left:?}");
    let _ = d.execute("nbd-server-stop", Map::new());

    // Parents first: retry until a pass deletes nothing.
    let base_node_ok =
        |list: &[Value]| find(list, "node-name", BASE_NODE) == Some(f.base_node.clone());
    loop {
        let nodes = query(d, "query-named-block-nodes");
        let keep_base = base_node_ok(&nodes);
        let mut progress = false;
        for n in names(&nodes, "node-name") {
            if n == BASE_NODE && keep_base {
                continue;
            }
            if d.execute("blockdev-del", obj(json!({"node-name": n})))
                .is_ok()
            {
                progress = true;
            }
        }
        if !progress {
            break;
        }
    }
    let nodes = query(d, "query-named-block-nodes");
    let extra: Vec<String> = names(&nodes, "node-name")
        .into_iter()
        .filter(|n| n != BASE_NODE || !base_node_ok(&nodes))
        .collect();
    assert!(
        extra.is_empty(),
        "nodes left after deleting everything: {extra:?} in {nodes:?}"
    );

    for id in std::mem::take(&mut f.metrics) {
        // Already deleted by the input itself, or still there.
        let _ = d.execute("object-del", obj(json!({"id": id})));
    }
    let threads = query(d, "query-iothreads");
    let keep_io = find(&threads, "id", BASE_IOTHREAD)
        .is_some_and(|e| iothread_identity(&e) == iothread_identity(&f.base_iothread));
    for id in names(&threads, "id") {
        if id == BASE_IOTHREAD && keep_io {
            continue;
        }
        if let Err(e) = d.execute("object-del", obj(json!({"id": id}))) {
            panic!("object-del {id} with no exports left: {e}");
        }
    }
    if nodes.is_empty() {
        let node = json!({"driver": "null-co", "node-name": BASE_NODE, "size": 1 << 20,
                          "read-zeroes": true});
        if let Err(e) = d.execute("blockdev-add", obj(node)) {
            panic!("baseline blockdev-add: {e}");
        }
    }
    if !keep_io {
        if let Err(e) = d.execute(
            "object-add",
            obj(json!({"qom-type": "iothread", "id": BASE_IOTHREAD})),
        ) {
            panic!("baseline object-add: {e}");
        }
    }
}

// ---------------------------------------------------------------- input

/// Valid argument objects, by command.
fn templates() -> &'static [(&'static str, Value)] {
    static T: OnceLock<Vec<(&'static str, Value)>> = OnceLock::new();
    T.get_or_init(|| {
        vec![
            ("blockdev-add", json!({"driver": "null-co", "node-name": "n1", "size": 1048576})),
            ("blockdev-add", json!({"driver": "null-aio", "node-name": "n2", "read-zeroes": true,
                                    "latency-ns": 0, "detect-zeroes": "unmap"})),
            ("blockdev-add", json!({"driver": "raw", "node-name": "r1", "file": "null0"})),
            ("blockdev-add", json!({"driver": "raw", "node-name": "r2", "offset": 512, "size": 4096,
                                    "file": {"driver": "null-co", "size": 65536}})),
            ("blockdev-add", json!({"driver": "file", "node-name": "f1", "filename": "disk0",
                                    "cache": {"direct": false, "no-flush": true}, "locking": "off"})),
            ("blockdev-add", json!({"driver": "raw", "node-name": "r3", "read-only": true,
                                    "file": {"driver": "file", "filename": "disk1", "aio": "io_uring"}})),
            ("blockdev-add", json!({"driver": "host_device", "node-name": "h1", "filename": "disk0"})),
            ("blockdev-del", json!({"node-name": "n1"})),
            ("query-named-block-nodes", json!({"flat": true})),
            ("object-add", json!({"qom-type": "iothread", "id": "io1"})),
            ("object-add", json!({"qom-type": "iothread", "id": "io2", "poll-max-ns": 0,
                                  "aio-max-batch": 8, "cpu": 0})),
            ("object-del", json!({"id": "io1"})),
            ("nbd-server-start", json!({"addr": {"type": "unix", "data": {"path": "sock0"}}})),
            ("nbd-server-start", json!({"addr": {"type": "inet",
                                                 "data": {"host": "127.0.0.1", "port": "0"}},
                                        "max-connections": 1})),
            ("nbd-server-add", json!({"device": "null0", "name": "legacy", "writable": true})),
            ("nbd-server-remove", json!({"name": "legacy", "mode": "hard"})),
            ("block-export-add", json!({"type": "nbd", "id": "e0", "node-name": "null0",
                                        "name": "exp", "writable": true})),
            ("block-export-add", json!({"type": "nbd", "id": "e1", "node-name": "n1",
                                        "iothread": "io0", "fixed-iothread": true,
                                        "allocation-depth": true, "description": "d"})),
            ("block-export-add", json!({"type": "nbd", "id": "e2", "node-name": "r1",
                                        "iothread": ["io0", "io1"], "bitmaps": ["b0"]})),
            ("block-dirty-bitmap-add", json!({"node": "null0", "name": "b0"})),
            ("block-dirty-bitmap-add", json!({"node": "r1", "name": "b1", "granularity": 4096,
                                              "persistent": false, "disabled": true})),
            ("block-dirty-bitmap-disable", json!({"node": "null0", "name": "b0"})),
            ("block-dirty-bitmap-enable", json!({"node": "null0", "name": "b0"})),
            ("block-dirty-bitmap-clear", json!({"node": "null0", "name": "b0"})),
            ("block-dirty-bitmap-merge", json!({"node": "null0", "target": "b0",
                                                "bitmaps": ["b0", {"node": "r1", "name": "b1"}]})),
            ("block-dirty-bitmap-remove", json!({"node": "null0", "name": "b0"})),
            ("transaction", json!({"actions": [
                {"type": "block-dirty-bitmap-add", "data": {"node": "null0", "name": "b2"}},
                {"type": "block-dirty-bitmap-disable", "data": {"node": "null0", "name": "b0"}},
                {"type": "abort", "data": {}}],
                "properties": {"completion-mode": "individual"}})),
            ("block-export-del", json!({"id": "e0"})),
            ("block-export-del", json!({"id": "e1", "mode": "hard"})),
            ("nbd-server-stop", json!({})),
            ("query-block-exports", json!({})),
            ("query-iothreads", json!({})),
            ("query-version", json!({})),
            ("query-commands", json!({})),
            ("qmp_capabilities", json!({"enable": ["oob"]})),
            ("quit", json!({})),
        ]
    })
}

/// Member names of the QAPI types the commands take.
const MEMBERS: &[&str] = &[
    "driver",
    "node-name",
    "read-only",
    "auto-read-only",
    "discard",
    "detect-zeroes",
    "force-share",
    "cache",
    "direct",
    "no-flush",
    "filename",
    "aio",
    "aio-max-batch",
    "locking",
    "drop-cache",
    "x-check-cache-dropped",
    "size",
    "latency-ns",
    "read-zeroes",
    "file",
    "offset",
    "type",
    "id",
    "writable",
    "writethrough",
    "iothread",
    "fixed-iothread",
    "name",
    "description",
    "bitmaps",
    "allocation-depth",
    "node",
    "mode",
    "addr",
    "data",
    "path",
    "host",
    "port",
    "abstract",
    "tight",
    "numeric",
    "to",
    "ipv4",
    "ipv6",
    "keep-alive",
    "mptcp",
    "str",
    "tls-creds",
    "tls-authz",
    "max-connections",
    "handshake-max-seconds",
    "device",
    "bitmap",
    "qom-type",
    "poll-max-ns",
    "poll-grow",
    "poll-shrink",
    "thread-pool-min",
    "thread-pool-max",
    "cpu",
    "flat",
    "enable",
    "target",
    "granularity",
    "persistent",
    "disabled",
    "actions",
    "properties",
    "completion-mode",
];

/// Strings worth trying: names the templates use, enum values, oddities.
const STRINGS: &[&str] = &[
    "null0",
    "n1",
    "n2",
    "r1",
    "r2",
    "f1",
    "io0",
    "io1",
    "io2",
    "e0",
    "e1",
    "e2",
    "exp",
    "legacy",
    "disk0",
    "disk1",
    "sock0",
    "b0",
    "",
    "#block001",
    "a.b",
    "1x",
    "on",
    "off",
    "auto",
    "unmap",
    "ignore",
    "hard",
    "safe",
    "unix",
    "inet",
    "fd",
    "vsock",
    "nbd",
    "fuse",
    "iothread",
    "secret",
    "null-co",
    "null-aio",
    "raw",
    "file",
    "host_device",
    "qcow2",
    "threads",
    "native",
    "io_uring",
    "oob",
    "ringstor-main",
    "b1",
    "b2",
    "abort",
    "grouped",
    "individual",
    "block-dirty-bitmap-add",
    "block-dirty-bitmap-remove",
];

fn arb_number(u: &mut Unstructured) -> AResult<Value> {
    Ok(match u.int_in_range(0..=9)? {
        0 => json!(0),
        1 => json!(1),
        2 => json!(-1),
        3 => json!(4096),
        4 => json!(u64::MAX),
        5 => json!(i64::MIN),
        6 => json!(1u64 << 63),
        7 => Number::from_f64(f64::arbitrary(u)?).map_or(Value::Null, Value::Number),
        8 => json!(i64::arbitrary(u)?),
        _ => json!(u64::arbitrary(u)?),
    })
}

fn arb_string(u: &mut Unstructured) -> AResult<String> {
    Ok(match u.int_in_range(0..=5)? {
        0 => "x".repeat(4097), // one past NBD_MAX_STRING_SIZE
        1 => String::arbitrary(u)?,
        _ => (*u.choose(STRINGS)?).to_string(),
    })
}

fn arb_key(u: &mut Unstructured) -> AResult<String> {
    Ok(if u.ratio(1, 8)? {
        String::arbitrary(u)?
    } else {
        (*u.choose(MEMBERS)?).to_string()
    })
}

fn arb_value(u: &mut Unstructured, depth: usize) -> AResult<Value> {
    let top = if depth >= MAX_DEPTH { 4 } else { 6 };
    Ok(match u.int_in_range(0..=top)? {
        0 => Value::Null,
        1 => Value::Bool(bool::arbitrary(u)?),
        2 => arb_number(u)?,
        3 | 4 => Value::String(arb_string(u)?),
        5 => {
            let n = u.int_in_range(0..=MAX_MEMBERS)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(arb_value(u, depth + 1)?);
            }
            Value::Array(items)
        }
        _ => Value::Object(arb_object(u, depth + 1)?),
    })
}

fn arb_object(u: &mut Unstructured, depth: usize) -> AResult<Map<String, Value>> {
    let n = u.int_in_range(0..=MAX_MEMBERS)?;
    let mut m = Map::new();
    for _ in 0..n {
        m.insert(arb_key(u)?, arb_value(u, depth)?);
    }
    Ok(m)
}

/// One mutation somewhere inside `m`.
fn mutate(u: &mut Unstructured, m: &mut Map<String, Value>, depth: usize) -> AResult<()> {
    // Sometimes descend into a nested object member.
    let nested: Vec<String> = m
        .iter()
        .filter(|(_, v)| v.is_object())
        .map(|(k, _)| k.clone())
        .collect();
    if !nested.is_empty() && u.ratio(1, 3)? {
        let k = u.choose(&nested)?.clone();
        if let Some(Value::Object(inner)) = m.get_mut(&k) {
            return mutate(u, inner, depth + 1);
        }
    }
    match u.int_in_range(0..=2)? {
        0 if !m.is_empty() => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = u.choose(&keys)?.clone();
            m.remove(&k);
        }
        1 if !m.is_empty() => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = u.choose(&keys)?.clone();
            m.insert(k, arb_value(u, depth)?);
        }
        _ => {
            m.insert(arb_key(u)?, arb_value(u, depth)?);
        }
    }
    Ok(())
}

#[derive(Debug)]
struct Op {
    command: String,
    args: Map<String, Value>,
}

fn arb_ops(u: &mut Unstructured, commands: &[String]) -> AResult<Vec<Op>> {
    let n = u.int_in_range(1..=MAX_OPS)?;
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        if u.is_empty() {
            break;
        }
        let (command, args) = match u.int_in_range(0..=9)? {
            // A template, mutated 0..=3 times.
            0..=5 => {
                let (c, v) = u.choose(templates())?;
                let mut args = obj(v.clone());
                for _ in 0..u.int_in_range(0..=3)? {
                    mutate(u, &mut args, 1)?;
                }
                ((*c).to_string(), args)
            }
            // A known command with arbitrary arguments.
            6..=8 => (u.choose(commands)?.clone(), arb_object(u, 1)?),
            // Anything.
            _ => (String::arbitrary(u)?, arb_object(u, 1)?),
        };
        ops.push(Op { command, args });
    }
    Ok(ops)
}

// ---------------------------------------------------------------- safety

/// Confines paths to `tmp` and addresses to loopback, anywhere in `v`.
fn sanitize(v: &mut Value, tmp: &std::path::Path) {
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                match (k.as_str(), &mut *v) {
                    ("filename" | "path", Value::String(s)) => *s = confine(s, tmp),
                    ("host", Value::String(s)) => {
                        let pick = ["127.0.0.1", "::1", "[::1]"];
                        *s = pick[s.len() % pick.len()].to_string();
                    }
                    // Non-numbers fail `parse::<u16>()` without a lookup.
                    ("port", Value::String(s)) if s.trim().parse::<u16>().is_ok() => {
                        *s = "0".to_string();
                    }
                    _ => sanitize(v, tmp),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| sanitize(i, tmp)),
        _ => {}
    }
}

/// A path in `tmp`, chosen by the original string: the template names
/// keep their meaning, anything else maps onto a small fixed set.
fn confine(s: &str, tmp: &std::path::Path) -> String {
    const KNOWN: &[&str] = &["disk0", "disk1", "empty", "sock0", "sock1", "missing"];
    let name = match KNOWN.iter().find(|k| **k == s) {
        Some(k) => k,
        None if s.is_empty() => return String::new(),
        None => {
            let h = s
                .bytes()
                .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
            match h % (KNOWN.len() + 1) {
                i if i < KNOWN.len() => KNOWN[i],
                _ => return tmp.display().to_string(), // a directory
            }
        }
    };
    tmp.join(name).display().to_string()
}

// ---------------------------------------------------------------- checks

fn listed(d: &mut Daemon, cmd: &str, key: &str, name: &str) -> bool {
    find(&query(d, cmd), key, name).is_some()
}

fn run_op(f: &mut Fixture, op: Op) {
    let mut args = Value::Object(op.args);
    sanitize(&mut args, &f.tmp);
    let args = obj(args);
    let known = f.commands.contains(&op.command);
    let d = &mut f.daemon;
    let r = d.execute(&op.command, args.clone());
    if f.trace {
        eprintln!("{} {} -> {r:?}", op.command, Value::Object(args.clone()));
    }
    match &r {
        Ok(v) => {
            let _ = to_qemu_json(v, false);
            let _ = to_qemu_json(v, true);
            assert!(known, "unknown command {:?} succeeded", op.command);
            if op.command.starts_with("query-") && op.command != "query-version" {
                assert!(v.is_array(), "{} returned {v}", op.command);
            }
        }
        Err(e) => {
            assert!(
                !e.desc.is_empty(),
                "{}: empty error description",
                op.command
            );
            let not_found = e.class == ErrorClass::CommandNotFound;
            if !known {
                assert!(not_found, "{:?}: {e:?}", op.command);
                assert_eq!(
                    e.desc,
                    format!("The command {} has not been found", op.command)
                );
            } else if op.command != "qmp_capabilities" {
                // The monitor handles qmp_capabilities; dispatch does not.
                assert!(!not_found, "{} is listed but not found: {e:?}", op.command);
            }
        }
    }
    let Ok(_) = r else { return };
    let s = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_string);
    if op.command == "object-add" && s("qom-type").as_deref() == Some("metrics") {
        f.metrics.extend(s("id"));
    }
    match op.command.as_str() {
        "blockdev-add" => {
            if let Some(n) = s("node-name") {
                assert!(
                    listed(d, "query-named-block-nodes", "node-name", &n),
                    "added node {n} not listed"
                );
            }
        }
        "blockdev-del" => {
            if let Some(n) = s("node-name") {
                assert!(
                    !listed(d, "query-named-block-nodes", "node-name", &n),
                    "deleted node {n} listed"
                );
            }
        }
        // Only iothreads are listed; a `metrics` object is an endpoint.
        "object-add" if s("qom-type").as_deref() == Some("iothread") => {
            if let Some(id) = s("id") {
                assert!(
                    listed(d, "query-iothreads", "id", &id),
                    "added iothread {id} not listed"
                );
            }
        }
        "object-del" => {
            if let Some(id) = s("id") {
                assert!(
                    !listed(d, "query-iothreads", "id", &id),
                    "deleted iothread {id} listed"
                );
            }
        }
        "block-export-add" => {
            if let Some(id) = s("id") {
                assert!(
                    listed(d, "query-block-exports", "id", &id),
                    "added export {id} not listed"
                );
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut f = fixture().lock().unwrap_or_else(|e| e.into_inner());
    let mut u = Unstructured::new(data);
    let Ok(ops) = arb_ops(&mut u, &f.commands.clone()) else {
        return;
    };
    for op in ops {
        run_op(&mut f, op);
    }
    reset(&mut f);
    if f.trace {
        eprintln!("-- reset");
    }
});
