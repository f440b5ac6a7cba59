//! `--chardev` (QemuOpts) and `--monitor` tests; expected messages follow
//! qemu-storage-daemon 10.0 where it has an equivalent.

use super::*;

fn chardev(s: &str) -> Result<ChardevOpts, String> {
    parse_chardev(s).map(|(c, _)| c).map_err(|e| e.to_string())
}

fn unix(id: &str, path: &str, server: bool, wait: bool) -> ChardevOpts {
    ChardevOpts {
        id: id.into(),
        backend: "socket".into(),
        path: Some(path.into()),
        host: None,
        port: None,
        fd: None,
        server,
        wait,
    }
}

#[test]
fn unix_socket() {
    assert_eq!(
        chardev("socket,id=m,path=/tmp/s,server=on,wait=off"),
        Ok(unix("m", "/tmp/s", true, false))
    );
    assert_eq!(
        chardev("backend=socket,id=m,path=/tmp/s"),
        Ok(unix("m", "/tmp/s", false, true))
    );
    assert_eq!(
        chardev("socket,id=m,path=/tmp/a,,b,server=yes"),
        Ok(unix("m", "/tmp/a,b", true, true))
    );
}

#[test]
fn tcp_socket() {
    let c = chardev("socket,id=q,host=127.0.0.1,port=4444,server=on,wait=off");
    assert_eq!(
        c.map(|c| (c.host, c.port, c.path)),
        Ok((Some("127.0.0.1".into()), Some("4444".into()), None))
    );
    assert_eq!(
        chardev("socket,id=c,host=h"),
        Err("chardev: socket: no port given".into())
    );
}

#[test]
fn inherited_socket() {
    let c = chardev("socket,id=m,fd=3,server=on,wait=off").map(|c| (c.fd, c.path, c.host));
    assert_eq!(c, Ok((Some("3".into()), None, None)));
    // A name from socket activation; QEMU ignores a port next to fd.
    let c = chardev("socket,id=m,fd=qmp,port=4,server=on").map(|c| (c.fd, c.wait));
    assert_eq!(c, Ok((Some("qmp".into()), true)));
    // QemuOpts treats an empty value as absent.
    assert_eq!(
        chardev("socket,id=m,fd=,server=on"),
        Err("chardev: socket: 'path', 'host' or 'fd' option required".into())
    );
}

#[test]
fn legacy_flags_warn() {
    let r = parse_chardev("socket,id=m,path=/s,server,nowait");
    let (c, warnings) = match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c, unix("m", "/s", true, false));
    assert_eq!(warnings.len(), 2);
    assert!(warnings[0].contains("'server'") && warnings[0].contains("server=on"));
    assert!(warnings[1].contains("'nowait'") && warnings[1].contains("wait=off"));
}

#[test]
fn json_chardev() {
    assert_eq!(
        chardev(r#"{"backend":"socket","id":"m","path":"/s","server":true,"wait":false}"#),
        Ok(unix("m", "/s", true, false))
    );
    assert_eq!(
        chardev(r#"{"backend":"socket","id":"m","path":["x"]}"#),
        Err("Invalid parameter type for 'path', expected: string".into())
    );
}

#[test]
fn chardev_errors() {
    let cases = [
        (
            "socket,id=c,path=/s,server=on,wait=off,bogus=1",
            "Invalid parameter 'bogus'",
        ),
        (
            "socket,id=c,path=/s,server=maybe",
            "Parameter 'server' expects 'on' or 'off'",
        ),
        (
            "socket,path=/s,server=on,wait=off",
            "chardev: no id specified",
        ),
        ("id=c,path=/s", "chardev: \"c\" missing backend"),
        (
            "socket,id=1c,path=/s",
            "Parameter 'id' expects an identifier",
        ),
        (
            "socket,id=c,path=/s,wait=off",
            "'wait' option is incompatible with socket in client connect mode",
        ),
        (
            "socket,id=c,path=/s,nowait=on",
            "Invalid parameter 'nowait'",
        ),
        (
            "socket,id=c",
            "chardev: socket: 'path', 'host' or 'fd' option required",
        ),
        (
            "socket,id=c,id=d,path=/s",
            "Parameter 'id' is set more than once",
        ),
        (
            "socket,id=c,path=/s,host=h,port=1",
            "None or one of 'path', 'fd' or 'host' option required.",
        ),
        (
            "socket,id=c,path=/s,port=1",
            "chardev: socket: 'path' cannot be combined with 'host' or 'port'",
        ),
        (
            "socket,id=c,fd=3,path=/s,server=on",
            "None or one of 'path', 'fd' or 'host' option required.",
        ),
        (
            "socket,id=c,fd=3,host=h,port=1",
            "None or one of 'path', 'fd' or 'host' option required.",
        ),
        (
            "file,id=c,path=/s",
            "chardev backend 'file' is not supported (ringstor supports only 'socket')",
        ),
        (
            ",id=c,path=/s",
            "chardev backend '' is not supported (ringstor supports only 'socket')",
        ),
        ("", "chardev: no id specified"),
    ];
    for (input, want) in cases {
        assert_eq!(chardev(input), Err(want.to_string()), "{input:?}");
    }
}

#[test]
fn monitor() {
    let m = |s: &str| parse_monitor(s).map_err(|e| e.to_string());
    let mon = |c: &str, pretty| {
        Ok(MonitorOpts {
            chardev: c.into(),
            pretty,
        })
    };
    assert_eq!(m("mon0"), mon("mon0", false));
    assert_eq!(m("chardev=mon0,mode=control,pretty=on"), mon("mon0", true));
    assert_eq!(m("mon0,id=x,pretty=off"), mon("mon0", false));
    assert_eq!(m(r#"{"chardev":"c","pretty":true}"#), mon("c", true));
    assert_eq!(m("c,mode=readline"), Err("Only QMP is supported".into()));
    assert_eq!(
        m("c,mode=x"),
        Err("Parameter 'mode' does not accept value 'x'".into())
    );
    assert_eq!(
        m("chardev=c,pretty=x"),
        Err("Parameter 'pretty' expects 'on' or 'off'".into())
    );
    assert_eq!(
        m("c,bogus=1"),
        Err("Parameter 'bogus' is unexpected".into())
    );
    assert_eq!(m(""), Err("Parameter 'chardev' is missing".into()));
    assert_eq!(
        m(r#"{"chardev":"c","pretty":"on"}"#),
        Err("Invalid parameter type for 'pretty', expected: boolean".into())
    );
}
