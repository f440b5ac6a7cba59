//! Keyval parser tests, modelled on QEMU's `tests/unit/test-keyval.c` and on
//! error lines printed by `qemu-storage-daemon` 10.0.

use serde_json::{json, Value};

use super::*;

fn kv(input: &str, implied: Option<&str>) -> Result<Value, CliError> {
    parse(input, implied).map(Value::Object)
}

fn err(input: &str, implied: Option<&str>) -> String {
    match parse(input, implied) {
        Ok(v) => panic!("{input:?} parsed unexpectedly: {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn empty_input_is_empty_object() {
    assert_eq!(kv("", None), Ok(json!({})));
    assert_eq!(kv("", Some("driver")), Ok(json!({})));
}

#[test]
fn plain_pairs_and_trailing_comma() {
    assert_eq!(
        kv("driver=null-co,node-name=a,", None),
        Ok(json!({"driver": "null-co", "node-name": "a"}))
    );
    assert_eq!(kv("a_b=1,x-y=", None), Ok(json!({"a_b": "1", "x-y": ""})));
}

#[test]
fn comma_escaping() {
    assert_eq!(
        kv("path=/tmp/a,,b,x=,,", None),
        Ok(json!({"path": "/tmp/a,b", "x": ","}))
    );
    // The value may contain '=' and '.' freely.
    assert_eq!(kv("a=b=c.d", None), Ok(json!({"a": "b=c.d"})));
    // ",,," is an escaped comma followed by the separator.
    assert_eq!(kv("a=x,,,b=y", None), Ok(json!({"a": "x,", "b": "y"})));
}

#[test]
fn implied_key() {
    assert_eq!(
        kv("iothread,id=io0", Some("qom-type")),
        Ok(json!({"qom-type": "iothread", "id": "io0"}))
    );
    // An explicit key still works.
    assert_eq!(
        kv("qom-type=iothread,id=io0", Some("qom-type")),
        Ok(json!({"qom-type": "iothread", "id": "io0"}))
    );
    // Only the first value may omit its key.
    assert_eq!(
        err("nbd,foo", Some("type")),
        "Expected '=' after parameter 'foo'"
    );
    // Escaped comma inside the implied value.
    assert_eq!(kv("a,,b", Some("k")), Ok(json!({"k": "a,b"})));
    // Without an implied key a bare word is an error (QSD wording).
    assert_eq!(
        err("null-co", None),
        "Expected '=' after parameter 'null-co'"
    );
    // Setting the implied key again: the last value wins, as in QSD.
    assert_eq!(
        kv("nbd,type=fuse", Some("type")),
        Ok(json!({"type": "fuse"}))
    );
}

#[test]
fn dotted_keys_nest() {
    assert_eq!(
        kv("cache.direct=on,cache.no-flush=off,a.b.c=1", None),
        Ok(json!({"cache": {"direct": "on", "no-flush": "off"}, "a": {"b": {"c": "1"}}}))
    );
}

#[test]
fn numeric_fragments_make_arrays() {
    assert_eq!(
        kv("addr.1.host=b,addr.0.host=a,addr.0.port=1", None),
        Ok(json!({"addr": [{"host": "a", "port": "1"}, {"host": "b"}]}))
    );
    assert_eq!(
        kv(
            "l.0=a,l.1=b,l.2=c,l.3=d,l.4=e,l.5=f,l.6=g,l.7=h,l.8=i,l.9=j,l.10=k",
            None
        )
        .ok()
        .and_then(|v| v.get("l").cloned()),
        Some(json!([
            "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"
        ]))
    );
    assert_eq!(kv("m.0.0=x", None), Ok(json!({"m": [["x"]]})));
}

#[test]
fn array_errors() {
    assert_eq!(err("driver=null-co,a.1=1", None), "Parameter 'a.0' missing");
    assert_eq!(err("a.0=1,a.2=1", None), "Parameter 'a.1' missing");
    assert_eq!(
        err("a.99999999999999999999=1", None),
        "Parameter 'a.0' missing"
    );
    assert_eq!(
        err("driver=null-co,a.0=1,a.x=2", None),
        "Parameters 'a.*' used inconsistently"
    );
    assert_eq!(
        err("a.0=1,a.00=2", None),
        "Parameter 'a.0' is set more than once"
    );
}

#[test]
fn inconsistent_use() {
    assert_eq!(
        err("driver=null-co,a.b=1,a=2", None),
        "Parameters 'a.*' used inconsistently"
    );
    assert_eq!(
        err("a=2,a.b=1", None),
        "Parameters 'a.*' used inconsistently"
    );
    assert_eq!(
        err("x.0.a=1,x.0=2", None),
        "Parameters 'x.0.*' used inconsistently"
    );
}

#[test]
fn repeated_keys_last_wins() {
    // qemu-storage-daemon --blockdev null-co,node-name=a,node-name=b
    // creates node 'b'.
    assert_eq!(
        kv("driver=null-co,node-name=a,node-name=b", None),
        Ok(json!({"driver": "null-co", "node-name": "b"}))
    );
    assert_eq!(kv("a.b=1,a.b=2", None), Ok(json!({"a": {"b": "2"}})));
}

#[test]
fn bad_keys() {
    assert_eq!(err("driver=null-co,=x", None), "Invalid parameter ''");
    assert_eq!(err(",node-name=a", None), "Invalid parameter ''");
    assert_eq!(err("=x", Some("driver")), "Invalid parameter ''");
    assert_eq!(err("a..b=1", None), "Invalid parameter 'a..b'");
    assert_eq!(err("a.b.=1", None), "Invalid parameter 'a.b.'");
    assert_eq!(err(".a=1", None), "Invalid parameter '.a'");
    assert_eq!(err("1=1", None), "Invalid parameter '1'");
    assert_eq!(err("a b=1", None), "Invalid parameter 'a b'");
    assert_eq!(err("a.0x=1", None), "Invalid parameter 'a.0x'");
    assert_eq!(err("é=1", None), "Invalid parameter 'é'");
    let long = "k".repeat(128);
    assert_eq!(
        err(&format!("{long}=1"), None),
        format!("Parameter '{long}' is too long")
    );
    assert!(parse(&format!("{}=1", "k".repeat(127)), None).is_ok());
    let deep = vec!["a"; 64].join(".");
    assert!(parse(&format!("{deep}=1"), None).is_ok());
    assert!(err(&format!("{deep}.a=1"), None).contains("nested more than 64 levels"));
    assert_eq!(
        err("driver=null-co,node-name", None),
        "Expected '=' after parameter 'node-name'"
    );
    // ",," at the end is an escaped comma, not an empty key.
    assert_eq!(kv("a=1,,", None), Ok(json!({"a": "1,"})));
}

#[test]
fn option_json_and_keyval() {
    let opt = parse_option(
        r#"{"driver":"null-co","size":1024,"ro":true}"#,
        Some("driver"),
    );
    assert_eq!(
        opt.map(|o| (Value::Object(o.value), o.keyval)),
        Ok((
            json!({"driver": "null-co", "size": 1024, "ro": true}),
            false
        ))
    );
    let opt = parse_option("null-co,size=1k", Some("driver"));
    assert_eq!(
        opt.map(|o| (Value::Object(o.value), o.keyval)),
        Ok((json!({"driver": "null-co", "size": "1k"}), true))
    );
    // Leading space is not JSON (QSD takes it as the implied value).
    let opt = parse_option(r#" {"a":1}"#, Some("driver"));
    assert_eq!(
        opt.map(|o| (Value::Object(o.value), o.keyval)),
        Ok((json!({"driver": r#" {"a":1}"#}), true))
    );
}

#[test]
fn option_json_errors() {
    let e = parse_option(r#"{"driver":"null-co","#, None).map(|_| ());
    assert!(matches!(e, Err(CliError::Json(_))), "{e:?}");
    assert_eq!(
        parse_option(r#"{"driver":"null-co"} x"#, None).map(|_| ()),
        Err(CliError::JsonTrailing)
    );
    assert_eq!(
        CliError::JsonTrailing.to_string(),
        "Expecting at most one JSON value"
    );
}
