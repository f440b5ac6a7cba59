//! Unit tests of framing, printing and protocol checks against strings
//! captured by hand from qemu-storage-daemon 10.0.2.

use super::lexer::JsonStream;
use super::session::{Action, Session};
use super::wire::{encode_message, format_g17};
use serde_json::{json, Value};

fn frame(chunks: &[&[u8]]) -> Vec<Result<Value, String>> {
    let mut s = JsonStream::new();
    let mut out = Vec::new();
    for c in chunks {
        s.feed(c, &mut out);
    }
    out
}

fn line(v: &Value) -> String {
    String::from_utf8_lossy(&encode_message(v, false)).into_owned()
}

fn reply_of(session: &mut Session, input: &[u8]) -> String {
    let mut msgs = frame(&[input]);
    assert_eq!(msgs.len(), 1, "one message expected from {input:?}");
    match session.handle(msgs.remove(0)) {
        Action::Reply(v) => line(&v),
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[test]
fn framing_handles_streams_splits_and_garbage() {
    let out = frame(&[b"{\"a\": 1} {\"b\"", b": [2, 3]}\n[1]"]);
    assert_eq!(
        out,
        vec![
            Ok(json!({"a": 1})),
            Ok(json!({"b": [2, 3]})),
            Ok(json!([1]))
        ]
    );
    // Keyword garbage is a parse error; 0xFF is a lexical error that puts
    // the lexer into recovery until the next structural character.
    let out = frame(&[b"x\xff{\"execute\":\"q\"}"]);
    assert_eq!(out[0], Err("JSON parse error, invalid keyword 'x'".into()));
    assert_eq!(out[1], Err("JSON parse error, stray '\u{FFFD}'".into()));
    assert_eq!(out[2], Ok(json!({"execute": "q"})));
    // Unbalanced input waits; a control character resynchronizes.
    let out = frame(&[b"{\"a\":[1,", b"\x1b{\"execute\":\"q\"}"]);
    assert_eq!(
        out,
        vec![
            Err("JSON parse error, stray '\u{1b}'".into()),
            Ok(json!({"execute": "q"}))
        ]
    );
    // Unterminated string across a newline, as seen from QSD.
    assert_eq!(
        frame(&[b"\"abc\n"]),
        vec![Err("JSON parse error, stray '\"abc\n'".into())]
    );
    // "01" is a lexical error; recovery then swallows "-1.@".
    let out = frame(&[b"01-1.@{\"execute\":\"q\"}"]);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], Err("JSON parse error, stray '01'".into()));
}

#[test]
fn parser_errors_match_qemu() {
    let cases: &[(&[u8], &str)] = &[
        (b"{\"a\" 1}", "JSON parse error, missing : in object pair"),
        (b"{1:2}", "JSON parse error, key is not a string in object"),
        (b"{\"a\":}", "JSON parse error, expecting value"),
        (b"]", "JSON parse error, expecting value"),
        (b"{\"a\":1]", "JSON parse error, expected separator in dict"),
        (b"[1 2]", "JSON parse error, expected separator in list"),
        (b"{\"a\":1,\"a\":2}", "JSON parse error, duplicate key"),
        (
            b"{\"a\":\"\\x\"}",
            "JSON parse error, invalid escape sequence in string",
        ),
        (
            b"{\"a\":\"\\ud800\"}",
            "JSON parse error, \\ud800 is not a valid Unicode character",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(frame(&[input]), vec![Err(want.to_string())], "{input:?}");
    }
    assert_eq!(
        frame(&[b"{'a': \"\\u00e9\\ud83d\\ude00\", \"n\": -0}"]),
        vec![Ok(json!({"a": "\u{e9}\u{1F600}", "n": 0}))]
    );
}

#[test]
fn output_format_matches_qsd() {
    // Captured from QSD: member order, separators, escapes, CRLF.
    assert_eq!(
        line(&json!({"return": {}, "id": {"a": [1]}})),
        "{\"return\": {}, \"id\": {\"a\": [1]}}\r\n"
    );
    assert_eq!(
        line(&json!({"id": "\u{e9}\u{1F600}/\u{1}", "error": {"desc": "d", "class": "C"}})),
        "{\"id\": \"\\u00E9\\uD83D\\uDE00/\\u0001\", \"error\": {\"class\": \"C\", \"desc\": \"d\"}}\r\n"
    );
    let pretty = encode_message(&json!({"return": {}, "id": []}), true);
    assert_eq!(
        String::from_utf8_lossy(&pretty),
        "{\r\n    \"return\": {\r\n    },\r\n    \"id\": [\r\n    ]\r\n}\r\n"
    );
    assert_eq!(format_g17(1.5), "1.5");
    assert_eq!(format_g17(1000.0), "1000");
    assert_eq!(format_g17(0.1), "0.10000000000000001");
    assert_eq!(format_g17(1.8446744073709552e19), "1.8446744073709552e+19");
    assert_eq!(format_g17(-2.5e-7), "-2.4999999999999999e-07");
    assert_eq!(format_g17(-0.0), "-0");
}

#[test]
fn session_checks_match_qsd() {
    let mut s = Session::new();
    assert_eq!(
        reply_of(&mut s, b"{\"execute\":\"query-version\"}"),
        "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Expecting capabilities negotiation with 'qmp_capabilities'\"}}\r\n"
    );
    assert_eq!(
        reply_of(&mut s, b"{\"exec-oob\":\"query-version\",\"id\":5}"),
        "{\"id\": 5, \"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input member 'exec-oob' is unexpected\"}}\r\n"
    );
    let bad_caps = [
        (
            "{\"enable\":[\"foo\"]}",
            "Parameter 'null' does not accept value 'foo'",
        ),
        (
            "{\"enable\":\"oob\"}",
            "Invalid parameter type for 'enable', expected: array",
        ),
        (
            "{\"enable\":[1]}",
            "Invalid parameter type for 'enable[0]', expected: string",
        ),
        ("{\"bogus\":1}", "Parameter 'bogus' is unexpected"),
    ];
    for (args, desc) in bad_caps {
        let input = format!("{{\"execute\":\"qmp_capabilities\",\"arguments\":{args}}}");
        let want = format!(
            "{{\"error\": {{\"class\": \"GenericError\", \"desc\": \"{}\"}}}}\r\n",
            desc.replace('"', "\\\"")
        );
        assert_eq!(reply_of(&mut s, input.as_bytes()), want);
    }
    assert!(!s.negotiated());
    assert_eq!(
        reply_of(
            &mut s,
            b"{\"execute\":\"qmp_capabilities\",\"arguments\":{\"enable\":[\"oob\"]},\"id\":1}"
        ),
        "{\"return\": {}, \"id\": 1}\r\n"
    );
    assert!(s.negotiated());
    let cases: &[(&[u8], &str)] = &[
        (
            b"{\"execute\":\"qmp_capabilities\",\"id\":{\"a\":[1]}}",
            "{\"id\": {\"a\": [1]}, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Capabilities negotiation is already complete, command ignored\"}}\r\n",
        ),
        (
            b"{\"exec-oob\":\"query-version\",\"id\":5}",
            "{\"id\": 5, \"error\": {\"class\": \"GenericError\", \"desc\": \"The command query-version does not support OOB\"}}\r\n",
        ),
        // QSD 10.0 looks the command up before checking for OOB support.
        (
            b"{\"exec-oob\":\"nosuch\",\"id\":3}",
            "{\"id\": 3, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command nosuch has not been found\"}}\r\n",
        ),
        (
            b"{\"exec-oob\":\"qmp_capabilities\"}",
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"The command qmp_capabilities does not support OOB\"}}\r\n",
        ),
        (
            b"[1,2]",
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input must be a JSON object\"}}\r\n",
        ),
        (
            b"{\"id\":1}",
            "{\"id\": 1, \"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input lacks member 'execute'\"}}\r\n",
        ),
        (
            b"{\"execute\":1}",
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input member 'execute' must be a string\"}}\r\n",
        ),
        (
            b"{\"execute\":\"x\",\"arguments\":[]}",
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input member 'arguments' must be an object\"}}\r\n",
        ),
        (
            b"{\"execute\":\"qmp_capabilities\",\"id\":7,\"foo\":1}",
            "{\"id\": 7, \"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input member 'foo' is unexpected\"}}\r\n",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(reply_of(&mut s, input), *want, "{input:?}");
    }
    let mut msgs = frame(&[b"{\"execute\":\"x\",\"arguments\":{\"a\":1},\"id\":\"i\"}"]);
    assert_eq!(
        s.handle(msgs.remove(0)),
        Action::Forward {
            command: "x".into(),
            arguments: json!({"a": 1}).as_object().cloned().unwrap_or_default(),
            id: Some(json!("i")),
        }
    );
}

/// `fuzz_session` runs the connection's real input path: greeting, one
/// reply per message in order, `{}` for a command returning nothing, ids
/// echoed, and the same output however the input is split into reads.
#[test]
fn fuzz_session_is_the_connection_input_path() {
    let input: &[u8] = b"{\"execute\":\"query-version\"}\
        {\"execute\":\"qmp_capabilities\"}\
        {\"execute\":\"nothing\",\"id\":1}\
        {\"execute\":\"fail\",\"id\":\"x\"}  [1";
    let run = |command: String, _args: serde_json::Map<String, Value>| match command.as_str() {
        "nothing" => Ok(Value::Null),
        other => Err(super::QmpError::unknown_command(other)),
    };
    let whole = super::fuzz_session([input], false, run);
    assert_eq!(whole.len(), 5, "{whole:?}");
    assert!(
        whole[0].starts_with("{\"QMP\": {\"version\": "),
        "{}",
        whole[0]
    );
    assert_eq!(
        whole[1],
        "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \
         \"Expecting capabilities negotiation with 'qmp_capabilities'\"}}\r\n"
    );
    assert_eq!(whole[2], "{\"return\": {}}\r\n");
    assert_eq!(whole[3], "{\"return\": {}, \"id\": 1}\r\n");
    assert_eq!(
        whole[4],
        "{\"id\": \"x\", \"error\": {\"class\": \"CommandNotFound\", \"desc\": \
         \"The command fail has not been found\"}}\r\n"
    );
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(super::fuzz_session(bytes, false, run), whole);
}
