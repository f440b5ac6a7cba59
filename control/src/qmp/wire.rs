//! QMP output: the greeting, reply/event builders and QEMU's exact JSON
//! text format.
//!
//! QEMU prints JSON with its own writer (`qobject/json-writer.c`) and the
//! output goes through `monitor_puts()`, so to be indistinguishable on the
//! wire we copy both:
//! - `", "` and `": "` separators; with `pretty=on`, 4-space indentation
//!   and an empty object printed as `{` newline `}`;
//! - object members in `QDict` iteration order (hash bucket order of
//!   QEMU's `tdb_hash`), which is why replies read `{"return": .., "id": ..}`
//!   but `{"id": .., "error": ..}`;
//! - every non-ASCII or control character escaped as `\uXXXX` (upper-case
//!   hex, surrogate pairs beyond the BMP);
//! - doubles as `%.17g`;
//! - one message per line, each `\n` sent as `\r\n`.

use super::error::QmpError;
use serde_json::{json, Map, Value};
use std::fmt::Write as _;

/// The QEMU version ringstor claims, so tools that gate features on the
/// QEMU version treat it like the qemu-storage-daemon it mimics.
pub const QEMU_VERSION: (u64, u64, u64) = (10, 0, 2);

/// The `package` string of `query-version` and the greeting.
pub fn package_string() -> String {
    format!("ringstor {}", env!("CARGO_PKG_VERSION"))
}

/// The `VersionInfo` object (greeting and `query-version`).
pub fn version_info() -> Value {
    let (major, minor, micro) = QEMU_VERSION;
    json!({
        "qemu": { "major": major, "minor": minor, "micro": micro },
        "package": package_string(),
    })
}

/// The greeting sent when a client connects. `oob` is offered like QSD.
pub fn greeting() -> Value {
    json!({ "QMP": { "version": version_info(), "capabilities": ["oob"] } })
}

/// `{"return": value}` (plus `"id"` when the request carried one).
pub fn success_response(ret: Value, id: Option<&Value>) -> Value {
    let mut m = Map::new();
    m.insert("return".into(), ret);
    if let Some(id) = id {
        m.insert("id".into(), id.clone());
    }
    Value::Object(m)
}

/// `{"error": {"class": .., "desc": ..}}` (plus `"id"` when known).
pub fn error_response(err: &QmpError, id: Option<&Value>) -> Value {
    let mut m = Map::new();
    m.insert("error".into(), err.to_value());
    if let Some(id) = id {
        m.insert("id".into(), id.clone());
    }
    Value::Object(m)
}

/// QEMU's `tdb_hash()` from qobject/qdict.c, reduced to a bucket index.
fn qdict_bucket(key: &str) -> u32 {
    const QDICT_BUCKET_MAX: u32 = 512;
    let bytes = key.as_bytes();
    // C computes in `unsigned`; strlen() truncation is irrelevant here.
    let mut value = 0x238F_13AFu32.wrapping_mul(bytes.len() as u32);
    for (i, &b) in bytes.iter().enumerate() {
        value = value.wrapping_add(u32::from(b) << ((i * 5) % 24));
    }
    1_103_515_243u32.wrapping_mul(value).wrapping_add(12345) % QDICT_BUCKET_MAX
}

/// Object keys in the order QEMU iterates (and prints) them. Within one
/// bucket QEMU visits the most recently inserted key first; insertion order
/// is not kept by `serde_json::Map`, so ties fall back to byte order.
pub(crate) fn qdict_keys(map: &Map<String, Value>) -> Vec<&String> {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_by(|a, b| qdict_bucket(a).cmp(&qdict_bucket(b)).then_with(|| a.cmp(b)));
    keys
}

/// Formats a double like C's `printf("%.17g")`.
pub(crate) fn format_g17(v: f64) -> String {
    if v.is_nan() {
        return if v.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if v.is_infinite() {
        return if v < 0.0 { "-inf" } else { "inf" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // 17 significant digits, correctly rounded, as d.dddde<exp>.
    let sci = format!("{:.16e}", v.abs());
    let (mant, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    let sign = if v < 0.0 { "-" } else { "" };
    let strip = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if !(-4..17).contains(&exp) {
        let m = strip(format!("{}.{}", &digits[..1], &digits[1..]));
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    } else if exp >= 0 {
        let point = (exp + 1) as usize;
        let s = format!("{}.{}", &digits[..point], &digits[point..]);
        format!("{sign}{}", strip(s))
    } else {
        let zeros = "0".repeat((-exp - 1) as usize);
        format!("{sign}{}", strip(format!("0.{zeros}{digits}")))
    }
}

fn quoted_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => {
                let cp = u32::from(c);
                if cp > 0xFFFF {
                    let v = cp - 0x10000;
                    let _ = write!(
                        out,
                        "\\u{:04X}\\u{:04X}",
                        0xD800 + (v >> 10),
                        0xDC00 + (v & 0x3FF)
                    );
                } else if !(0x20..0x7F).contains(&cp) {
                    let _ = write!(out, "\\u{cp:04X}");
                } else {
                    out.push(c);
                }
            }
        }
    }
    out.push('"');
}

/// json-writer.c's state: depth and whether a comma is due.
struct Writer {
    pretty: bool,
    out: String,
    depth: usize,
    need_comma: bool,
}

impl Writer {
    fn newline(&mut self) {
        if self.pretty {
            self.out.push('\n');
            self.out.push_str(&" ".repeat(self.depth * 4));
        }
    }

    /// maybe_comma_name(): separator before a member or element.
    fn separator(&mut self, name: Option<&str>) {
        if self.need_comma {
            self.out.push(',');
            if self.pretty {
                self.newline();
            } else {
                self.out.push(' ');
            }
        } else {
            if !self.out.is_empty() {
                self.newline();
            }
            self.need_comma = true;
        }
        if let Some(name) = name {
            quoted_str(&mut self.out, name);
            self.out.push_str(": ");
        }
    }

    fn value(&mut self, name: Option<&str>, v: &Value) {
        self.separator(name);
        match v {
            Value::Null => self.out.push_str("null"),
            Value::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    let _ = write!(self.out, "{i}");
                } else if let Some(u) = n.as_u64() {
                    let _ = write!(self.out, "{u}");
                } else {
                    let f = n.as_f64().unwrap_or(0.0);
                    self.out.push_str(&format_g17(f));
                }
            }
            Value::String(s) => quoted_str(&mut self.out, s),
            Value::Array(items) => {
                self.out.push('[');
                self.enter();
                for item in items {
                    self.value(None, item);
                }
                self.leave();
                self.out.push(']');
            }
            Value::Object(map) => {
                self.out.push('{');
                self.enter();
                for k in qdict_keys(map) {
                    self.value(Some(k), &map[k.as_str()]);
                }
                self.leave();
                self.out.push('}');
            }
        }
    }

    fn enter(&mut self) {
        self.depth += 1;
        self.need_comma = false;
    }

    fn leave(&mut self) {
        self.depth -= 1;
        self.need_comma = true;
        self.newline();
    }
}

/// QEMU's `qobject_to_json_pretty()` text of `v`, without line ending.
pub fn to_qemu_json(v: &Value, pretty: bool) -> String {
    let mut w = Writer {
        pretty,
        out: String::new(),
        depth: 0,
        need_comma: false,
    };
    w.value(None, v);
    w.out
}

/// The bytes QEMU would send for message `v`: JSON text, a newline, and
/// every `\n` turned into `\r\n` by `monitor_puts()`.
pub fn encode_message(v: &Value, pretty: bool) -> Vec<u8> {
    let mut text = to_qemu_json(v, pretty);
    text.push('\n');
    text.replace('\n', "\r\n").into_bytes()
}
