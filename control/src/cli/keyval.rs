//! QEMU's `KEY=VALUE,...` ("keyval") option syntax, as in QEMU's
//! `util/keyval.c`, reduced to a JSON object.
//!
//! ```text
//! key-vals     = [ key-val { ',' key-val } [ ',' ] ]
//! key-val      = key '=' val
//! key          = key-fragment { '.' key-fragment }
//! val          = { [^,] | ',,' }
//! ```
//!
//! Dotted keys build nested objects, numeric fragments build arrays
//! (`addr.0.host=x`), and every leaf is a string because keyval has no types:
//! [`super::coerce`] converts strings when the target type is known.  The
//! first value may omit its key when the option has an *implied key*
//! (`--object iothread,id=io0` means `qom-type=iothread`).
//!
//! Deviation from QEMU: QEMU lets the last of repeated keys win; ringstor
//! rejects the repetition, because a silently dropped setting hides typos.
//!
//! Options starting with `{` are JSON instead ([`parse_option`]), like QSD.

use serde_json::{Map, Value};

use super::error::CliError;

/// QEMU's limit on one key fragment (`char key_in_cur[128]` in keyval.c).
const MAX_FRAGMENT_LEN: usize = 127;

/// ringstor's limit on key depth.  QEMU has none, but parsing and
/// deserializing recurse per level, so a hostile `a.a.a...` of 64 KiB must
/// not be able to exhaust the stack; real QAPI options nest a few levels.
const MAX_DEPTH: usize = 64;

/// One option value from the command line, in either syntax.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedOption {
    /// The option as a JSON object.  Leaves are strings when `keyval`.
    pub value: Map<String, Value>,
    /// True for keyval syntax: typed consumers must deserialize with
    /// [`super::coerce::from_keyval`], which converts the string leaves.
    /// False for JSON syntax, which is typed and must be taken strictly.
    pub keyval: bool,
}

/// Parse a command-line option value: JSON if it starts with `{` (exactly
/// like QSD, no leading whitespace allowed), keyval otherwise.
pub fn parse_option(input: &str, implied_key: Option<&str>) -> Result<ParsedOption, CliError> {
    if input.starts_with('{') {
        return Ok(ParsedOption {
            value: parse_json_object(input)?,
            keyval: false,
        });
    }
    Ok(ParsedOption {
        value: parse(input, implied_key)?,
        keyval: true,
    })
}

/// Parse a JSON object, rejecting trailing text like QEMU's parser does.
fn parse_json_object(input: &str) -> Result<Map<String, Value>, CliError> {
    // QEMU's own JSON parser, for QEMU's error wording.
    let value = crate::qmp::parse_json_text(input).map_err(|e| {
        match e.strip_prefix("JSON parse error, ") {
            Some(rest) => CliError::Json(rest.to_string()),
            None if e.starts_with("Expecting at most one") => CliError::JsonTrailing,
            None => CliError::Json(e),
        }
    })?;
    match value {
        Value::Object(map) => Ok(map),
        // Unreachable in practice (input starts with '{'), kept as an error
        // rather than a panic.
        _ => Err(CliError::Json("expected a JSON object".into())),
    }
}

/// Parse keyval syntax into a JSON object whose leaves are strings.
pub fn parse(input: &str, implied_key: Option<&str>) -> Result<Map<String, Value>, CliError> {
    let mut root = Map::new();
    let mut rest = input;
    let mut implied = implied_key;
    while !rest.is_empty() {
        rest = parse_one(&mut root, rest, implied)?;
        // Only the very first key-val may omit its key.
        implied = None;
    }
    listify_members(&mut root, "")?;
    Ok(root)
}

/// Parse one `key=value` from the front of `params` into `root` and return
/// the remaining text (after the separating comma).
fn parse_one<'a>(
    root: &mut Map<String, Value>,
    params: &'a str,
    implied_key: Option<&str>,
) -> Result<&'a str, CliError> {
    let key_len = params.find(['=', ',']).unwrap_or(params.len());
    let after_key = &params[key_len..];

    // A non-empty leading value without '=' is sugar for implied-key=value.
    let (key, value_start) = match implied_key {
        Some(implied) if key_len > 0 && !after_key.starts_with('=') => (implied, params),
        _ => {
            let key = &params[..key_len];
            validate_key(key)?;
            match after_key.strip_prefix('=') {
                Some(v) => (key, v),
                None => return Err(CliError::ExpectedEquals(key.to_string())),
            }
        }
    };

    let (value, rest) = take_value(value_start);
    put(root, key, value)?;
    Ok(rest)
}

/// Read a value up to a single comma; `,,` stands for a literal comma.
/// Returns the value and the text after the terminating comma.
pub(crate) fn take_value(s: &str) -> (String, &str) {
    let mut value = String::new();
    let mut rest = s;
    loop {
        match rest.find(',') {
            None => {
                value.push_str(rest);
                return (value, "");
            }
            Some(i) => {
                value.push_str(&rest[..i]);
                let after = &rest[i + 1..];
                match after.strip_prefix(',') {
                    Some(more) => {
                        value.push(',');
                        rest = more;
                    }
                    None => return (value, after),
                }
            }
        }
    }
}

/// Check a dotted key: the first fragment must be a QAPI name, later ones a
/// QAPI name or a decimal index, each 1..=127 characters.
fn validate_key(key: &str) -> Result<(), CliError> {
    if key.split('.').count() > MAX_DEPTH {
        return Err(CliError::Message(format!(
            "Parameter '{key}' is nested more than {MAX_DEPTH} levels deep"
        )));
    }
    for (i, fragment) in key.split('.').enumerate() {
        let ok = is_qapi_name(fragment) || (i > 0 && is_index(fragment));
        if !ok {
            return Err(CliError::InvalidParameter(key.to_string()));
        }
        if fragment.len() > MAX_FRAGMENT_LEN {
            return Err(CliError::ParameterTooLong(fragment.to_string()));
        }
    }
    Ok(())
}

/// `[A-Za-z][A-Za-z0-9_-]*`, QEMU's `parse_qapi_name` without the
/// downstream `__RFQDN_` prefix (which no ringstor option uses).
fn is_qapi_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A non-empty run of decimal digits.
fn is_index(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Store `value` at the dotted path `key`, creating objects on the way.
fn put(root: &mut Map<String, Value>, key: &str, value: String) -> Result<(), CliError> {
    let fragments: Vec<&str> = key.split('.').collect();
    let Some((leaf, inner)) = fragments.split_last() else {
        return Err(CliError::InvalidParameter(key.to_string()));
    };
    let mut cur = root;
    let mut consumed = 0usize;
    for fragment in inner {
        consumed += fragment.len();
        let entry = cur
            .entry((*fragment).to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        cur = match entry {
            Value::Object(map) => map,
            // Earlier `a=x`, now `a.b=y`.
            _ => return Err(CliError::UsedInconsistently(key[..consumed].to_string())),
        };
        consumed += 1; // the '.'
    }
    match cur.get(*leaf) {
        // Earlier `a.b=x`, now `a=y`.
        Some(Value::Object(_)) => Err(CliError::UsedInconsistently(key.to_string())),
        // A repeated key: the last one wins, as in qemu-storage-daemon.
        _ => {
            cur.insert((*leaf).to_string(), Value::String(value));
            Ok(())
        }
    }
}

/// Replace, below `map`, every object whose keys are all indexes by an
/// array.  `path` is the dotted key of `map` ("" for the root), for errors.
fn listify_members(map: &mut Map<String, Value>, path: &str) -> Result<(), CliError> {
    for (key, value) in map.iter_mut() {
        let Value::Object(inner) = value else {
            continue;
        };
        let inner_path = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        listify_members(inner, &inner_path)?;
        if let Some(list) = listify(inner, &inner_path)? {
            *value = Value::Array(list);
        }
    }
    Ok(())
}

/// Turn an all-index object into an array; `None` if it has no index keys.
fn listify(map: &mut Map<String, Value>, path: &str) -> Result<Option<Vec<Value>>, CliError> {
    let indexes = map.keys().filter(|k| is_index(k)).count();
    if indexes == 0 {
        return Ok(None);
    }
    if indexes != map.len() {
        return Err(CliError::UsedInconsistently(path.to_string()));
    }
    // Slots are bounded by the number of members, so a huge index cannot
    // make us allocate: it simply leaves a gap that is reported below.
    let mut slots: Vec<Option<Value>> = vec![None; map.len()];
    for (key, value) in std::mem::take(map) {
        let index = key.parse::<usize>().unwrap_or(usize::MAX);
        match slots.get_mut(index) {
            // `a.0` and `a.00` name the same element.
            Some(Some(_)) => return Err(CliError::Duplicate(format!("{path}.{index}"))),
            Some(slot) => *slot = Some(value),
            None => {}
        }
    }
    let mut list = Vec::with_capacity(slots.len());
    for (i, slot) in slots.into_iter().enumerate() {
        match slot {
            Some(v) => list.push(v),
            None => return Err(CliError::MissingIndex(format!("{path}.{i}"))),
        }
    }
    Ok(Some(list))
}

#[cfg(test)]
mod tests;
