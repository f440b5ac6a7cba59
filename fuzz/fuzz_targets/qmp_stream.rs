//! The QMP input path of one monitor connection, without a socket: bytes
//! through QEMU's JSON lexer and streamer, the parser, the session state
//! machine (capabilities negotiation, request checks) and the reply
//! writer, via `control::qmp::fuzz_session`.
//!
//! Input layout: byte 0: bit 0 `pretty=on`; byte 1: split seed (0 = the
//! whole stream in one read, else reads of 1..=64 bytes from a small PRNG);
//! rest: the client's byte stream.
//!
//! The stand-in control thread echoes a command's arguments when there are
//! any and answers `CommandNotFound` naming the command otherwise, so
//! arbitrary parsed values and names reach the writer.
//!
//! Invariants: no panic; the first message is the greeting; every message
//! is printable ASCII ending in `\r\n` (one line unless pretty), valid JSON
//! (checked with serde_json, independently of the QEMU-style parser), an
//! object with exactly one of `return`/`error`/`QMP`/`event` and nothing
//! else but `id`; errors have a known class and a string `desc`; echoed
//! arguments read back equal to what the command got; and the output does
//! not depend on how the stream was split into reads.
#![no_main]

use control::qmp::{fuzz_session, QmpError};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const CLASSES: &[&str] = &[
    "GenericError",
    "CommandNotFound",
    "DeviceNotFound",
    "KVMMissingCap",
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let pretty = data[0] & 1 != 0;
    let seed = data[1];
    let stream = &data[2..];

    let (whole, args_whole) = run(&[stream], pretty);
    check(&whole, &args_whole, pretty);
    if seed != 0 {
        let chunks = split(stream, seed);
        let (parts, args_parts) = run(&chunks, pretty);
        assert_eq!(whole, parts, "output depends on how input is split");
        assert_eq!(args_whole, args_parts);
    }
});

/// Runs a session; returns the messages and the non-empty argument
/// objects commands received, in order.
fn run(chunks: &[&[u8]], pretty: bool) -> (Vec<String>, Vec<Map<String, Value>>) {
    let mut seen = Vec::new();
    let out = fuzz_session(chunks.iter().copied(), pretty, |command, arguments| {
        if arguments.is_empty() {
            Err(QmpError::unknown_command(&command))
        } else {
            seen.push(arguments.clone());
            Ok(Value::Object(arguments))
        }
    });
    (out, seen)
}

/// Reads of 1..=64 bytes from an xorshift PRNG seeded by `seed`.
fn split(stream: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut x = u32::from(seed) | 0x9e37_7900;
    let mut chunks = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (x as usize % 64 + 1).min(rest.len());
        let (a, b) = rest.split_at(n);
        chunks.push(a);
        rest = b;
    }
    chunks
}

fn check(messages: &[String], echoed: &[Map<String, Value>], pretty: bool) {
    let mut echoes = echoed.iter();
    // Garbage input gets the same error reply many times; check each
    // distinct text once (echoes, which must be matched in order, always).
    let mut checked = std::collections::HashSet::new();
    for (i, text) in messages.iter().enumerate() {
        if i > 0 && !text.contains("\"return\"") && !checked.insert(text.as_str()) {
            continue;
        }
        assert!(text.is_ascii(), "non-ASCII output: {text:?}");
        let body = text
            .strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("message does not end in CRLF: {text:?}"));
        assert!(
            !body.replace("\r\n", "").contains(['\r', '\n']),
            "bare CR or LF in {text:?}"
        );
        if !pretty {
            assert!(!body.contains('\n'), "multi-line message: {text:?}");
        }
        assert!(
            body.bytes()
                .all(|b| (0x20..0x7f).contains(&b) || b == b'\r' || b == b'\n'),
            "control character in {text:?}"
        );
        let v = parse(body).unwrap_or_else(|e| panic!("invalid JSON ({e}): {text:?}"));
        let Value::Object(m) = &v else {
            panic!("not an object: {text:?}");
        };
        let kinds: Vec<&str> = ["return", "error", "QMP", "event"]
            .into_iter()
            .filter(|k| m.contains_key(*k))
            .collect();
        assert_eq!(kinds.len(), 1, "want exactly one kind: {text:?}");
        assert!(
            m.keys().all(|k| k == kinds[0] || k == "id"),
            "unexpected member in {text:?}"
        );
        assert_eq!(i == 0, kinds[0] == "QMP", "greeting must come first, once");
        assert_ne!(kinds[0], "event", "no events without an event source");
        match kinds[0] {
            "error" => {
                let e = m["error"].as_object().expect("error is an object");
                assert_eq!(e.len(), 2, "error has class and desc: {text:?}");
                let class = e["class"].as_str().expect("class is a string");
                assert!(CLASSES.contains(&class), "unknown class {class}");
                assert!(e["desc"].is_string(), "desc is a string");
            }
            "return" => {
                let Value::Object(r) = &m["return"] else {
                    panic!("only objects are returned here: {text:?}");
                };
                if !r.is_empty() {
                    let want = echoes.next().expect("a return nobody asked for");
                    assert!(
                        same(&m["return"], &Value::Object(want.clone())),
                        "echo changed the arguments:\n  sent {want:?}\n  got  {text:?}"
                    );
                }
            }
            _ => assert!(m.get("id").is_none(), "greeting with id"),
        }
    }
    assert!(echoes.next().is_none(), "a command got no reply");
}

/// serde_json without its 128-level limit: QMP allows 1024.
fn parse(text: &str) -> serde_json::Result<Value> {
    use serde::Deserialize;
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    let v = Value::deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Value equality with numbers compared by value: QEMU's writer prints a
/// double like 1.0 as `1` (`%.17g`), which reads back as an integer.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y
                || (x.as_i64().is_some() && x.as_i64() == y.as_i64())
                || (x.as_u64().is_some() && x.as_u64() == y.as_u64())
                || x.as_f64() == y.as_f64()
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}
