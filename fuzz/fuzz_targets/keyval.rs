//! The command-line option parsers: keyval (`key=value,dotted.key=..`,
//! `,,` escapes, arrays, JSON when the value starts with `{`) and the whole
//! qemu-storage-daemon command line.
//!
//! Input layout: byte 0 picks the mode, the rest is the text.
//! * `mode % 5` in 0..=3: one option value, parsed by `parse_option` with
//!   the implied key QSD uses for `--nbd-server` (none), `--object`
//!   (`qom-type`), `--export` (`type`) or `--blockdev` (`driver`); then
//!   taken into every QAPI type an option becomes, the way `main.rs` does
//!   (`Input::new(value, syntax)` and the type's `parse`), and into a few
//!   plain structs via `from_option`.
//! * `mode % 5 == 4`: an argv, the text split at NUL bytes, through
//!   `parse_args`; every item it returns then goes the `main.rs` way.
//!
//! Invariants: no panic; keyval output has only string leaves, objects and
//! non-empty arrays; printing it back as keyval (`,,`-escaped, explicit
//! keys, array indexes) parses to the same object; printing JSON output
//! back as JSON parses to the same object.
#![no_main]

use std::ffi::OsString;

use control::cli::{self, CliCommand, CliItem, ParsedOption};
use control::qapi::{
    BlockExportOptions, BlockdevOptions, CacheOptions, FileDriverOptions, Input, IothreadOptions,
    NbdServerOptions, NullDriverOptions, ObjectOptions, Syntax,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const IMPLIED: [Option<&str>; 4] = [None, Some("qom-type"), Some("type"), Some("driver")];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 5 {
        4 => command_line(rest),
        m => {
            // Command-line arguments are UTF-8 by the time keyval sees
            // them (`parse_args` refuses anything else).
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            one_option(text, IMPLIED[usize::from(m)]);
        }
    }
});

fn one_option(text: &str, implied: Option<&str>) {
    let Ok(opt) = cli::parse_option(text, implied) else {
        // The plain keyval entry point must agree for non-JSON input.
        if !text.starts_with('{') {
            assert!(cli::keyval::parse(text, implied).is_err());
        }
        return;
    };
    if opt.keyval {
        check_keyval_shape(&opt.value);
        assert_eq!(
            cli::keyval::parse(text, implied).as_ref(),
            Ok(&opt.value),
            "parse_option and keyval::parse disagree"
        );
        let printed = print_keyval(&opt.value);
        match cli::keyval::parse(&printed, None) {
            Ok(again) => assert_eq!(again, opt.value, "keyval round trip via {printed:?}"),
            Err(e) => panic!("printed keyval {printed:?} does not parse: {e}"),
        }
    } else {
        let printed = serde_json::to_string(&opt.value).expect("a Map serializes");
        match cli::parse_option(&printed, implied) {
            Ok(again) => assert_eq!(again.value, opt.value, "JSON round trip via {printed}"),
            Err(e) => panic!("printed JSON {printed} does not parse: {e}"),
        }
    }
    typed(&opt);
}

fn command_line(bytes: &[u8]) {
    use std::os::unix::ffi::OsStringExt;
    let argv: Vec<OsString> = if bytes.is_empty() {
        Vec::new()
    } else {
        bytes
            .split(|&b| b == 0)
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect()
    };
    let Ok(CliCommand::Run(args)) = cli::parse_args(argv) else {
        return;
    };
    for item in &args.items {
        match item {
            CliItem::Blockdev(o) => {
                let _ = BlockdevOptions::parse(input(o));
            }
            CliItem::Object(o) => {
                let _ = ObjectOptions::parse(input(o));
            }
            CliItem::NbdServer(o) => {
                let _ = NbdServerOptions::parse(input(o));
            }
            CliItem::Export(o) => {
                let _ = BlockExportOptions::parse(input(o));
            }
            CliItem::Chardev(_) | CliItem::Monitor(_) => {}
        }
        if let CliItem::Blockdev(o)
        | CliItem::Object(o)
        | CliItem::NbdServer(o)
        | CliItem::Export(o) = item
        {
            if o.keyval {
                check_keyval_shape(&o.value);
            }
        }
    }
}

/// What `main.rs` hands the command handlers.
fn input(o: &ParsedOption) -> Input {
    let syntax = if o.keyval {
        Syntax::Keyval
    } else {
        Syntax::Json
    };
    Input::new(o.value.clone(), syntax)
}

/// Every type an option can become; any of them may refuse it.
fn typed(o: &ParsedOption) {
    let _ = BlockdevOptions::parse(input(o));
    let _ = BlockExportOptions::parse(input(o));
    let _ = ObjectOptions::parse(input(o));
    let _ = NbdServerOptions::parse(input(o));
    let _ = NbdServerOptions::parse_legacy(input(o));
    let _ = cli::from_option::<IothreadOptions>(o.clone());
    let _ = cli::from_option::<CacheOptions>(o.clone());
    let _ = cli::from_option::<NullDriverOptions>(o.clone());
    let _ = cli::from_option::<FileDriverOptions>(o.clone());
}

/// Keyval output: objects, non-empty arrays, string leaves.
fn check_keyval_shape(map: &Map<String, Value>) {
    for v in map.values() {
        check_keyval_value(v);
    }
}

fn check_keyval_value(v: &Value) {
    match v {
        Value::String(_) => {}
        Value::Object(m) => {
            assert!(!m.is_empty(), "keyval made an empty object");
            check_keyval_shape(m);
        }
        Value::Array(items) => {
            assert!(!items.is_empty(), "keyval made an empty array");
            items.iter().for_each(check_keyval_value);
        }
        other => panic!("keyval leaf is not a string: {other:?}"),
    }
}

/// Prints keyval output back as keyval with explicit keys.
fn print_keyval(map: &Map<String, Value>) -> String {
    let mut pairs = Vec::new();
    flatten(map_entries(map), "", &mut pairs);
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace(',', ",,")))
        .collect::<Vec<_>>()
        .join(",")
}

fn map_entries(map: &Map<String, Value>) -> Vec<(String, &Value)> {
    map.iter().map(|(k, v)| (k.clone(), v)).collect()
}

fn flatten(entries: Vec<(String, &Value)>, prefix: &str, out: &mut Vec<(String, String)>) {
    for (k, v) in entries {
        let key = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::String(s) => out.push((key, s.clone())),
            Value::Object(m) => flatten(map_entries(m), &key, out),
            Value::Array(items) => flatten(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i.to_string(), v))
                    .collect(),
                &key,
                out,
            ),
            other => panic!("keyval leaf is not a string: {other:?}"),
        }
    }
}
