//! QAPI parsing: QEMU's error wording for unknown, missing and mistyped
//! members, union dispatch, and keyval versus JSON typing.

use serde_json::{json, Value};

use super::*;

fn input(v: Value, syntax: Syntax) -> Input {
    match v {
        Value::Object(m) => Input::new(m, syntax),
        _ => panic!("test input must be an object"),
    }
}

fn blockdev(v: Value) -> Result<BlockdevOptions, String> {
    BlockdevOptions::parse(input(v, Syntax::Json)).map_err(|e| e.to_string())
}

fn blockdev_kv(v: Value) -> Result<BlockdevOptions, String> {
    BlockdevOptions::parse(input(v, Syntax::Keyval)).map_err(|e| e.to_string())
}

#[test]
fn file_node_parses() {
    let o = blockdev(
        json!({"driver": "file", "node-name": "f0", "filename": "/x",
        "aio": "io_uring", "cache": {"direct": true}, "locking": "off"}),
    )
    .unwrap();
    assert_eq!(o.driver, "file");
    assert_eq!(o.base.node_name.as_deref(), Some("f0"));
    assert_eq!(o.cache.direct, Some(true));
    match o.options {
        DriverOptions::File(f) => {
            assert_eq!(f.filename, "/x");
            assert_eq!(f.locking, Some(OnOffAuto::Off));
        }
        other => panic!("wrong variant {other:?}"),
    }
}

#[test]
fn unknown_member() {
    assert_eq!(
        blockdev(json!({"driver": "file", "node-name": "f0", "filename": "/x", "foo": 1})),
        Err("Parameter 'foo' is unexpected".into())
    );
    assert_eq!(
        blockdev(
            json!({"driver": "file", "node-name": "f0", "filename": "/x",
            "cache": {"bar": true}})
        ),
        Err("Parameter 'cache.bar' is unexpected".into())
    );
}

#[test]
fn missing_member() {
    assert_eq!(
        blockdev(json!({"driver": "file", "node-name": "f0"})),
        Err("Parameter 'filename' is missing".into())
    );
    assert_eq!(
        blockdev(json!({"node-name": "f0"})),
        Err("Parameter 'driver' is missing".into())
    );
}

#[test]
fn wrong_type() {
    assert_eq!(
        blockdev(
            json!({"driver": "file", "node-name": "f0", "filename": "/x",
            "read-only": "yes"})
        ),
        Err("Invalid parameter type for 'read-only', expected: boolean".into())
    );
    assert_eq!(
        blockdev(
            json!({"driver": "file", "node-name": "f0", "filename": "/x",
            "cache": {"direct": 1}})
        ),
        Err("Invalid parameter type for 'cache.direct', expected: boolean".into())
    );
    assert_eq!(
        blockdev(
            json!({"driver": "file", "node-name": "f0", "filename": "/x",
            "aio-max-batch": "x"})
        ),
        Err("Invalid parameter type for 'aio-max-batch', expected: integer".into())
    );
}

#[test]
fn bad_enum_value() {
    assert_eq!(
        blockdev(json!({"driver": "file", "node-name": "f0", "filename": "/x", "aio": "foo"})),
        Err("Parameter 'aio' does not accept value 'foo'".into())
    );
    assert_eq!(
        blockdev(json!({"driver": "bogus", "node-name": "f0"})),
        Err("Parameter 'driver' does not accept value 'bogus'".into())
    );
}

#[test]
fn raw_with_reference_and_nested_definition() {
    let o = blockdev(json!({"driver": "raw", "node-name": "r0", "file": "f0"})).unwrap();
    assert!(matches!(o.options,
        DriverOptions::Raw(RawDriverOptions { file: BlockdevRef::Reference(ref n), .. }) if n == "f0"));
    let o = blockdev(json!({"driver": "raw", "node-name": "r0", "offset": 4096,
        "file": {"driver": "file", "filename": "/x"}}))
    .unwrap();
    match o.options {
        DriverOptions::Raw(r) => {
            assert_eq!(r.offset, Some(4096));
            assert!(matches!(r.file, BlockdevRef::Definition(_)));
        }
        other => panic!("wrong variant {other:?}"),
    }
    // Errors inside the nested node name it from the top.
    assert_eq!(
        blockdev(json!({"driver": "raw", "node-name": "r0",
            "file": {"driver": "file", "filename": "/x", "foo": 1}})),
        Err("Parameter 'file.foo' is unexpected".into())
    );
}

#[test]
fn keyval_converts_strings_json_does_not() {
    let o = blockdev_kv(
        json!({"driver": "null-co", "node-name": "n0", "size": "1048576",
        "read-zeroes": "on"}),
    )
    .unwrap();
    match o.options {
        DriverOptions::Null(n) => {
            assert_eq!(n.size, Some(1 << 20));
            assert_eq!(n.read_zeroes, Some(true));
        }
        other => panic!("wrong variant {other:?}"),
    }
    assert_eq!(
        blockdev(json!({"driver": "null-co", "node-name": "n0", "read-zeroes": "on"})),
        Err("Invalid parameter type for 'read-zeroes', expected: boolean".into())
    );
    assert_eq!(
        blockdev_kv(
            json!({"driver": "file", "node-name": "f0", "filename": "/x",
            "cache": {"direct": "maybe"}})
        ),
        Err("Parameter 'cache.direct' expects 'on' or 'off'".into())
    );
}

#[test]
fn object_iothread_and_other_types() {
    let o = ObjectOptions::parse(input(
        json!({"qom-type": "iothread", "id": "io0", "cpu": 1, "poll-max-ns": 0}),
        Syntax::Json,
    ))
    .unwrap();
    let ObjectOptions::Iothread(t) = o else {
        panic!("not an iothread: {o:?}");
    };
    assert_eq!((t.id.as_str(), t.cpu), ("io0", Some(1)));
    let err = |v| {
        ObjectOptions::parse(input(v, Syntax::Json))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(json!({"qom-type": "bogus", "id": "x"})),
        "Parameter 'qom-type' does not accept value 'bogus'"
    );
    assert_eq!(err(json!({"id": "x"})), "Parameter 'qom-type' is missing");
    assert_eq!(
        err(json!({"qom-type": "iothread", "id": "1bad"})),
        "Parameter 'id' expects an identifier"
    );
}

#[test]
fn tls_and_authz_objects_parse_with_qemu_errors() {
    let parse = |v, syntax| ObjectOptions::parse(input(v, syntax)).map_err(|e| e.to_string());
    let o = parse(
        json!({"qom-type": "tls-creds-x509", "id": "t0", "dir": "/d", "endpoint": "server",
               "verify-peer": "off", "sanity-check": "on", "priority": "NORMAL"}),
        Syntax::Keyval,
    )
    .unwrap();
    let ObjectOptions::TlsCredsX509(t) = o else {
        panic!("{o:?}")
    };
    assert_eq!(t.endpoint, Some(TlsEndpoint::Server));
    assert_eq!((t.verify_peer, t.sanity_check), (Some(false), Some(true)));
    assert_eq!(
        parse(
            json!({"qom-type": "tls-creds-x509", "id": "t0", "endpoint": "foo"}),
            Syntax::Json
        ),
        Err("Parameter 'endpoint' does not accept value 'foo'".into())
    );
    assert_eq!(
        parse(
            json!({"qom-type": "tls-creds-x509", "id": "t0", "verify-peer": "yes"}),
            Syntax::Json
        ),
        Err("Invalid parameter type for 'verify-peer', expected: boolean".into())
    );
    assert_eq!(
        parse(
            json!({"qom-type": "tls-creds-x509", "id": "t0", "loaded": true}),
            Syntax::Json
        ),
        Err("Parameter 'loaded' is unexpected".into())
    );
    assert_eq!(
        parse(
            json!({"qom-type": "authz-simple", "id": "a0"}),
            Syntax::Json
        ),
        Err("Parameter 'identity' is missing".into())
    );
    // Keyval lists: rules.N.member, as QSD's command line takes them.
    let o = parse(
        json!({"qom-type": "authz-list", "id": "a1", "policy": "allow",
               "rules": [{"match": "CN=*", "policy": "deny", "format": "glob"},
                         {"match": "CN=x", "policy": "allow"}]}),
        Syntax::Keyval,
    )
    .unwrap();
    let ObjectOptions::AuthzList(l) = o else {
        panic!("{o:?}")
    };
    assert_eq!(l.id, "a1");
    assert_eq!(l.list.policy, Some(AuthzPolicy::Allow));
    let rules = l.list.rules.unwrap_or_default();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].format, Some(AuthzFormat::Glob));
    assert_eq!(rules[1].format, None);
    assert_eq!(
        parse(
            json!({"qom-type": "authz-list", "id": "a3", "rules": [{"match": "x"}]}),
            Syntax::Json
        ),
        Err("Parameter 'rules[0].policy' is missing".into())
    );
    assert_eq!(
        parse(
            json!({"qom-type": "authz-list", "id": "a2", "policy": "maybe"}),
            Syntax::Json
        ),
        Err("Parameter 'policy' does not accept value 'maybe'".into())
    );
    assert_eq!(
        parse(
            json!({"qom-type": "authz-listfile", "id": "a7"}),
            Syntax::Json
        ),
        Err("Parameter 'filename' is missing".into())
    );
    assert!(parse(
        json!({"qom-type": "tls-creds-psk", "id": "p0", "dir": "/d", "username": "u"}),
        Syntax::Json
    )
    .is_ok());
}

#[test]
fn nbd_server_flat_and_legacy_addresses() {
    let flat = NbdServerOptions::parse(input(
        json!({"addr": {"type": "unix", "path": "/s"}}),
        Syntax::Json,
    ))
    .unwrap();
    let legacy = NbdServerOptions::parse_legacy(input(
        json!({"addr": {"type": "unix", "data": {"path": "/s"}}}),
        Syntax::Json,
    ))
    .unwrap();
    assert_eq!(flat, legacy);
    assert_eq!(flat.addr, SocketAddress::Unix { path: "/s".into() });
    // QSD >= 9.1 caps connections at 100 unless told otherwise.
    assert_eq!(flat.max_connections, 100);
    let tcp = NbdServerOptions::parse_legacy(input(
        json!({"addr": {"type": "inet", "data": {"host": "::1", "port": "10809"}},
               "max-connections": 4}),
        Syntax::Json,
    ))
    .unwrap();
    assert_eq!(tcp.max_connections, 4);
    assert_eq!(
        NbdServerOptions::parse_legacy(input(
            json!({"addr": {"type": "unix", "path": "/s"}}),
            Syntax::Json
        ))
        .unwrap_err()
        .to_string(),
        "Parameter 'addr.data' is missing"
    );
}

#[test]
fn export_union_dispatch() {
    let o = BlockExportOptions::parse(input(
        json!({"type": "nbd", "id": "e0", "node-name": "f0", "writable": true,
               "name": "disk", "iothread": ["io0", "io1"]}),
        Syntax::Json,
    ))
    .unwrap();
    assert_eq!(
        o.base.iothread,
        Some(IothreadSpec(vec!["io0".into(), "io1".into()]))
    );
    let ExportKind::Nbd(n) = o.kind else {
        panic!("an NBD export");
    };
    assert_eq!(n.name.as_deref(), Some("disk"));
    let err = |v| {
        BlockExportOptions::parse(input(v, Syntax::Json))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(json!({"type": "nbd", "id": "e0", "node-name": "f0", "foo": 1})),
        "Parameter 'foo' is unexpected"
    );
    assert_eq!(
        err(json!({"type": "bogus", "id": "e0", "node-name": "f0"})),
        "Parameter 'type' does not accept value 'bogus'"
    );
    assert_eq!(
        err(json!({"id": "e0", "node-name": "f0"})),
        "Parameter 'type' is missing"
    );
    assert_eq!(
        err(json!({"type": "nbd", "node-name": "f0"})),
        "Parameter 'id' is missing"
    );
    assert_eq!(
        err(json!({"type": "nbd", "id": "e0", "node-name": "f0", "iothread": 5})),
        "Invalid parameter type for 'iothread', expected: string"
    );
    assert_eq!(
        err(json!({"type": "vduse-blk", "id": "e0", "node-name": "f0"})),
        "Parameter 'name' is missing"
    );
    assert_eq!(
        err(json!({"type": "fuse", "id": "e0", "node-name": "f0"})),
        "Parameter 'mountpoint' is missing"
    );
    assert_eq!(
        err(
            json!({"type": "fuse", "id": "e0", "node-name": "f0", "mountpoint": "m", "allow-other": "x"})
        ),
        "Parameter 'allow-other' does not accept value 'x'"
    );
    let long = "x".repeat(NBD_MAX_STRING_SIZE + 1);
    assert_eq!(
        err(json!({"type": "nbd", "id": "e0", "node-name": "f0", "description": long})),
        format!("description '{long}' too long")
    );
}

#[test]
fn object_metrics() {
    let o = ObjectOptions::parse(input(
        json!({"qom-type": "metrics", "id": "m0",
               "addr": {"type": "inet", "host": "127.0.0.1", "port": "9191"}}),
        Syntax::Json,
    ))
    .unwrap();
    let want = ObjectOptions::Metrics(crate::qapi::MetricsOptions {
        id: "m0".into(),
        addr: crate::qapi::SocketAddress::Inet {
            host: "127.0.0.1".into(),
            port: "9191".into(),
        },
    });
    assert_eq!(o, want);
    let err = |v| {
        ObjectOptions::parse(input(v, Syntax::Json))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(json!({"qom-type": "metrics", "id": "m0"})),
        "Parameter 'addr' is missing"
    );
    assert_eq!(
        err(json!({"qom-type": "metrics", "id": "m0", "bogus": 1,
                   "addr": {"type": "unix", "path": "/x"}})),
        "Parameter 'bogus' is unexpected"
    );
}
