//! Coercion tests: QEMU's scalar syntaxes, a sample QAPI-like struct in
//! keyval and strict JSON mode, and QSD's error wording.

use serde::Deserialize;
use serde_json::json;

use super::*;
use crate::cli::keyval::parse_option;

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum Discard {
    Ignore,
    Unmap,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Cache {
    direct: Option<bool>,
    no_flush: Option<bool>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Addr {
    host: String,
    port: u16,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Sample {
    node_name: String,
    read_only: Option<bool>,
    latency_ns: Option<u64>,
    offset: Option<i64>,
    #[serde(deserialize_with = "deserialize_size")]
    size: u64,
    #[serde(default, deserialize_with = "deserialize_opt_size")]
    cluster_size: Option<u64>,
    discard: Option<Discard>,
    cache: Option<Cache>,
    addrs: Option<Vec<Addr>>,
    ratio: Option<f64>,
}

fn keyval<T: DeserializeOwned>(s: &str) -> Result<T, CliError> {
    from_option(parse_option(s, None)?)
}

fn err<T: DeserializeOwned + fmt::Debug>(s: &str) -> String {
    match keyval::<T>(s) {
        Ok(v) => panic!("{s:?} deserialized unexpectedly: {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bools() {
    for t in ["on", "yes", "true", "y"] {
        assert_eq!(parse_bool(t), Some(true));
    }
    for f in ["off", "no", "false", "n"] {
        assert_eq!(parse_bool(f), Some(false));
    }
    for bad in ["ON", "1", "", "maybe"] {
        assert_eq!(parse_bool(bad), None);
    }
}

#[test]
fn ints() {
    assert_eq!(parse_int("42"), Some(42));
    assert_eq!(parse_int("-42"), Some(-42));
    assert_eq!(parse_int(" +5"), Some(5));
    assert_eq!(parse_int("0x10"), Some(16));
    assert_eq!(parse_int("0X1f"), Some(31));
    assert_eq!(parse_int("010"), Some(8)); // C base 0: octal
    assert_eq!(parse_int("0"), Some(0));
    assert_eq!(parse_int("-9223372036854775808"), Some(i64::MIN));
    for bad in [
        "",
        "-",
        "0x",
        "08",
        "1k",
        "1 ",
        "abc",
        "9223372036854775808",
        "--1",
        "+-1",
    ] {
        assert_eq!(parse_int(bad), None, "{bad:?}");
    }
    assert_eq!(parse_uint("18446744073709551615"), Some(u64::MAX));
    assert_eq!(parse_uint("18446744073709551616"), None);
    assert_eq!(parse_uint("-1"), None);
}

#[test]
fn sizes() {
    let cases = [
        ("0", 0),
        ("512", 512),
        ("1b", 1),
        ("1B", 1),
        ("1k", 1024),
        ("1K", 1024),
        ("64k", 65536),
        ("1.5k", 1536),
        ("1M", 1 << 20),
        ("2G", 2 << 30),
        ("1T", 1 << 40),
        ("1P", 1 << 50),
        ("1E", 1 << 60),
        ("0x10", 16),
        ("1.0", 1),
        ("5.", 5),
        (" 5", 5),
        (".5k", 512),
        ("0.3333k", 341),
        ("15E", 15 << 60),
    ];
    for (s, v) in cases {
        assert_eq!(parse_size(s), Some(v), "{s:?}");
    }
    for bad in [
        "", "0.5", "1kB", "0x10k", "0x1.0", "1e3", "-1", "16E", "k", ".", "1 k", "1.5.5k", "0x",
    ] {
        assert_eq!(parse_size(bad), None, "{bad:?}");
    }
}

#[test]
fn keyval_sample_struct() {
    let s: Result<Sample, _> = keyval(
        "node-name=n0,read-only=on,latency-ns=0x10,offset=-3,size=1G,cluster-size=64k,\
         discard=unmap,cache.direct=yes,cache.no-flush=off,\
         addrs.0.host=a,addrs.0.port=10809,addrs.1.host=b,addrs.1.port=1,ratio=0.5",
    );
    assert_eq!(
        s,
        Ok(Sample {
            node_name: "n0".into(),
            read_only: Some(true),
            latency_ns: Some(16),
            offset: Some(-3),
            size: 1 << 30,
            cluster_size: Some(65536),
            discard: Some(Discard::Unmap),
            cache: Some(Cache {
                direct: Some(true),
                no_flush: Some(false),
            }),
            addrs: Some(vec![
                Addr {
                    host: "a".into(),
                    port: 10809
                },
                Addr {
                    host: "b".into(),
                    port: 1
                },
            ]),
            ratio: Some(0.5),
        })
    );
    let minimal: Result<Sample, _> = keyval("node-name=n,size=0");
    assert_eq!(
        minimal.map(|s| (s.read_only, s.cluster_size, s.cache)),
        Ok((None, None, None))
    );
}

#[test]
fn keyval_errors_use_qsd_wording() {
    assert_eq!(
        err::<Sample>("node-name=n,size=1,read-only=maybe"),
        "Parameter 'read-only' expects 'on' or 'off'"
    );
    assert_eq!(
        err::<Sample>("node-name=n,size=1,foo=1"),
        "Parameter 'foo' is unexpected"
    );
    assert_eq!(
        err::<Sample>("node-name=n,size=1,cache.foo=1"),
        "Parameter 'cache.foo' is unexpected"
    );
    assert_eq!(
        err::<Sample>("node-name=n,size=1,cache.direct=x"),
        "Parameter 'cache.direct' expects 'on' or 'off'"
    );
    assert_eq!(
        err::<Sample>("node-name=n,size=1,cache=x"),
        "Invalid parameter type for 'cache', expected: object"
    );
    assert_eq!(
        err::<Sample>("node-name=n,size=1,latency-ns=abc"),
        "Parameter 'latency-ns' expects integer"
    );
    assert_eq!(
        err::<Sample>("node-name=n,size=1,latency-ns=-1"),
        "Parameter 'latency-ns' expects integer"
    );
    assert_eq!(
        err::<Sample>("node-name=n,size=1x"),
        "Parameter 'size' expects size"
    );
    assert_eq!(
        err::<Sample>("node-name=n,size=1,cluster-size=1kB"),
        "Parameter 'cluster-size' expects size"
    );
    assert_eq!(
        err::<Sample>("node-name=n,size=1,discard=bogus"),
        "Parameter 'discard' does not accept value 'bogus'"
    );
    assert_eq!(err::<Sample>("size=1"), "Parameter 'node-name' is missing");
    assert_eq!(
        err::<Sample>("node-name=n,size=1,addrs.0.host=a"),
        "Parameter 'addrs.0.port' is missing"
    );
    assert_eq!(
        err::<Sample>("node-name=n,size=1,addrs.0.host=a,addrs.0.port=70000"),
        "Parameter 'addrs.0.port' expects integer"
    );
    assert_eq!(
        err::<Sample>("node-name=n,size=1,ratio=x"),
        "Parameter 'ratio' expects number"
    );
    assert_eq!(
        err::<Sample>("node-name.x=n,size=1"),
        "Invalid parameter type for 'node-name', expected: string"
    );
}

#[test]
fn strict_json() {
    let ok: Result<Sample, _> = from_strict(json!({
        "node-name": "n", "size": 4096, "read-only": true, "cache": {"direct": false},
        "discard": "ignore", "addrs": [{"host": "h", "port": 1}]
    }));
    assert_eq!(
        ok.as_ref()
            .map(|s| (s.size, s.read_only, s.discard.is_some())),
        Ok((4096, Some(true), true))
    );

    let e = |v: Value| {
        from_strict::<Sample>(v)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        e(json!({"node-name": "n", "size": 1, "read-only": "on"})),
        Err("Invalid parameter type for 'read-only', expected: boolean".into())
    );
    assert_eq!(
        e(json!({"node-name": "n", "size": "1k"})),
        Err("Invalid parameter type for 'size', expected: integer".into())
    );
    assert_eq!(
        e(json!({"node-name": "n", "size": 1, "cache": {"direct": 1}})),
        Err("Invalid parameter type for 'cache.direct', expected: boolean".into())
    );
    assert_eq!(
        e(json!({"node-name": "n", "size": 1, "addrs": [{"host": "h", "port": "1"}]})),
        Err("Invalid parameter type for 'addrs[0].port', expected: integer".into())
    );
    assert_eq!(
        e(json!({"node-name": "n", "size": 1, "x": 1})),
        Err("Parameter 'x' is unexpected".into())
    );
    // from_option picks strict mode for JSON syntax.
    let opt = parse_option(r#"{"node-name":"n","size":"1"}"#, None);
    assert!(opt.and_then(from_option::<Sample>).is_err());
}

#[test]
fn size_helper_is_strict_with_serde_json() {
    #[derive(Deserialize)]
    struct S {
        #[serde(deserialize_with = "deserialize_size")]
        size: u64,
    }
    assert_eq!(
        serde_json::from_value::<S>(json!({"size": 5}))
            .map(|s| s.size)
            .ok(),
        Some(5)
    );
    assert!(serde_json::from_value::<S>(json!({"size": "5k"})).is_err());
}

#[test]
fn discriminator() {
    let mut m = Map::new();
    m.insert("driver".into(), json!("file"));
    m.insert("filename".into(), json!("/x"));
    assert_eq!(take_discriminator(&mut m, "driver"), Ok("file".into()));
    assert_eq!(m.len(), 1);
    assert_eq!(
        take_discriminator(&mut m, "driver"),
        Err(CliError::Missing("driver".into()))
    );
}

#[test]
fn externally_tagged_enum_and_maps() {
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "kebab-case")]
    enum Addr {
        Unix { path: String },
        Inet(Vec<u16>),
    }
    assert_eq!(
        keyval::<Addr>("unix.path=/s"),
        Ok(Addr::Unix { path: "/s".into() })
    );
    assert_eq!(
        keyval::<Addr>("inet.0=1,inet.1=0x2"),
        Ok(Addr::Inet(vec![1, 2]))
    );
    let m: Result<std::collections::BTreeMap<String, u32>, _> = keyval("a=1,b=2");
    assert_eq!(
        m.map(|m| m.into_iter().collect::<Vec<_>>()),
        Ok(vec![("a".into(), 1), ("b".into(), 2)])
    );
}
