//! Command-line tests; error lines are compared with what
//! qemu-storage-daemon 10.0 prints for the same arguments.

use serde_json::json;

use super::*;

fn parse(args: &[&str]) -> Result<CliCommand, CliError> {
    parse_args(args.iter().map(OsString::from))
}

fn run(args: &[&str]) -> CliArgs {
    match parse(args) {
        Ok(CliCommand::Run(a)) => a,
        other => panic!("{args:?}: {other:?}"),
    }
}

fn err(args: &[&str]) -> String {
    match parse(args) {
        Err(e) => e.to_string(),
        Ok(other) => panic!("{args:?} parsed: {other:?}"),
    }
}

fn value(item: &CliItem) -> serde_json::Value {
    match item {
        CliItem::Blockdev(o) | CliItem::Object(o) | CliItem::NbdServer(o) | CliItem::Export(o) => {
            serde_json::Value::Object(o.value.clone())
        }
        other => panic!("not a keyval item: {other:?}"),
    }
}

#[test]
fn empty_command_line_runs_nothing() {
    assert_eq!(parse(&[]), Ok(CliCommand::Run(CliArgs::default())));
}

#[test]
fn help_and_version() {
    assert_eq!(parse(&["-h"]), Ok(CliCommand::Help));
    assert_eq!(parse(&["--help"]), Ok(CliCommand::Help));
    assert_eq!(parse(&["-V"]), Ok(CliCommand::Version));
    assert_eq!(parse(&["--version"]), Ok(CliCommand::Version));
    assert_eq!(parse(&["--vers"]), Ok(CliCommand::Version));
    assert_eq!(parse(&["-hV"]), Ok(CliCommand::Help));
    // First pass: -V wins over a later bad value but not an earlier bad option.
    assert_eq!(parse(&["--blockdev", "x=1", "-V"]), Ok(CliCommand::Version));
    assert_eq!(err(&["--bogus", "-V"]), "unrecognized option '--bogus'");
    assert_eq!(parse(&["-V", "--bogus"]), Ok(CliCommand::Version));
    assert_eq!(
        err(&["--help=x"]),
        "option '--help' doesn't allow an argument"
    );
    let help = help_text();
    assert!(help.starts_with("Usage: ringstor [options]"));
    for opt in [
        "--blockdev",
        "--object",
        "--nbd-server",
        "--export",
        "--chardev",
        "--monitor",
        "--pidfile",
        "--daemonize",
    ] {
        assert!(help.contains(opt), "{opt}");
    }
    assert!(version_text().starts_with("ringstor version "));
}

#[test]
fn full_qsd_command_line_keeps_order() {
    let a = run(&[
        "--chardev",
        "socket,id=mon0,path=/tmp/qmp.sock,server=on,wait=off",
        "--monitor",
        "chardev=mon0",
        "--object",
        "iothread,id=io0",
        "--blockdev=file,node-name=f0,filename=/tmp/disk.img",
        "--blockdev",
        r#"{"driver":"raw","node-name":"r0","file":"f0"}"#,
        "--nbd-server",
        "addr.type=unix,addr.path=/tmp/nbd.sock",
        "--export",
        "nbd,id=e0,node-name=r0,writable=on",
        "--pidfile",
        "/tmp/rs.pid",
        "--daemonize",
    ]);
    assert_eq!(a.items.len(), 7);
    assert!(matches!(&a.items[0], CliItem::Chardev(c) if c.id == "mon0" && c.server && !c.wait));
    assert!(matches!(&a.items[1], CliItem::Monitor(m) if m.chardev == "mon0" && !m.pretty));
    assert_eq!(
        value(&a.items[2]),
        json!({"qom-type": "iothread", "id": "io0"})
    );
    assert_eq!(
        value(&a.items[3]),
        json!({"driver": "file", "node-name": "f0", "filename": "/tmp/disk.img"})
    );
    assert!(matches!(&a.items[4], CliItem::Blockdev(o) if !o.keyval));
    assert_eq!(
        value(&a.items[5]),
        json!({"addr": {"type": "unix", "path": "/tmp/nbd.sock"}})
    );
    assert_eq!(
        value(&a.items[6]),
        json!({"type": "nbd", "id": "e0", "node-name": "r0", "writable": "on"})
    );
    assert_eq!(a.pidfile, Some(PathBuf::from("/tmp/rs.pid")));
    assert!(a.daemonize);
    assert!(a.warnings.is_empty());
}

#[test]
fn option_errors_name_the_option_as_typed() {
    assert_eq!(
        err(&["--blockdev", "driver=null-co,=x"]),
        "--blockdev driver=null-co,=x: Invalid parameter ''"
    );
    assert_eq!(
        err(&["--blockdev=driver=null-co,node-name"]),
        "--blockdev=driver=null-co,node-name: Expected '=' after parameter 'node-name'"
    );
    assert_eq!(
        err(&["--blockd", "driver=x,a.1=1"]),
        "--blockd driver=x,a.1=1: Parameter 'a.0' missing"
    );
    assert_eq!(
        err(&["--blockdev", r#"{"driver":"null-co","#])
            .split(": ")
            .nth(1),
        Some("JSON parse error, premature EOI")
    );
    assert_eq!(
        err(&["--monitor", "c,mode=readline"]),
        "--monitor c,mode=readline: Only QMP is supported"
    );
    assert_eq!(
        err(&["--chardev", "socket,id=c,path=/s,bogus=1"]),
        "--chardev socket,id=c,path=/s,bogus=1: Invalid parameter 'bogus'"
    );
    // A repeated key is fine (last wins); the bad option is reported, as
    // qemu-storage-daemon does for this very command line.
    assert_eq!(
        err(&["--object", "iothread,id=a,id=b", "--blockdev", "=x"]),
        "--blockdev =x: Invalid parameter ''"
    );
}

#[test]
fn getopt_errors() {
    assert_eq!(err(&["--bogus"]), "unrecognized option '--bogus'");
    assert_eq!(
        err(&["--blockdev"]),
        "option '--blockdev' requires an argument"
    );
    assert_eq!(err(&["--pid"]), "option '--pidfile' requires an argument");
    assert_eq!(err(&["extra"]), "extra: Unexpected argument");
    assert_eq!(err(&["-"]), "-: Unexpected argument");
    assert_eq!(err(&["-x"]), "invalid option -- 'x'");
    assert_eq!(err(&["-T"]), "option '-T' requires an argument");
    assert_eq!(
        err(&["--daemonize=yes"]),
        "option '--daemonize' doesn't allow an argument"
    );
    assert_eq!(err(&["--", "x"]), "x: Unexpected argument");
    // "--e" is unique (export); "--" followed by nothing is fine.
    assert!(matches!(parse(&["--e", "nbd,id=e"]), Ok(CliCommand::Run(a)) if a.items.len() == 1));
    assert_eq!(parse(&["--"]), Ok(CliCommand::Run(CliArgs::default())));
    // "--d" is daemonize, the only option starting with d.
    assert!(matches!(parse(&["--d"]), Ok(CliCommand::Run(a)) if a.daemonize));
    // No two QSD options share a prefix, so nothing is ambiguous today.
    assert_eq!(err(&["--=x"]), "unrecognized option '--'");
}

#[test]
fn trace_is_ignored_with_warning() {
    let a = run(&[
        "-T",
        "nbd_*",
        "-Tblk_*",
        "--trace=x",
        "--trace",
        "events=/f",
    ]);
    assert!(a.items.is_empty());
    assert_eq!(a.warnings.len(), 4);
    assert!(a.warnings[0].starts_with("-T nbd_*: warning:"));
    assert!(a.warnings[1].starts_with("-Tblk_*: warning:"));
    assert!(a.warnings[2].starts_with("--trace=x: warning:"));
}

#[test]
fn legacy_chardev_flags_warn_with_location() {
    let a = run(&["--chardev", "socket,id=c,path=/s,server,nowait"]);
    assert_eq!(a.warnings.len(), 2);
    assert!(a.warnings[0].starts_with(
        "--chardev socket,id=c,path=/s,server,nowait: warning: short-form boolean option 'server'"
    ));
}

#[test]
fn implied_keys_match_qsd() {
    let a = run(&[
        "--blockdev",
        "null-co,node-name=a",
        "--object",
        "iothread,id=i",
        "--export",
        "nbd,id=e",
    ]);
    assert_eq!(value(&a.items[0]).get("driver"), Some(&json!("null-co")));
    assert_eq!(value(&a.items[1]).get("qom-type"), Some(&json!("iothread")));
    assert_eq!(value(&a.items[2]).get("type"), Some(&json!("nbd")));
    // --nbd-server has no implied key.
    assert_eq!(
        err(&["--nbd-server", "unix"]),
        "--nbd-server unix: Expected '=' after parameter 'unix'"
    );
}

#[test]
fn later_pidfile_wins() {
    let a = run(&["--pidfile", "/a", "--pidfile=/b"]);
    assert_eq!(a.pidfile, Some(PathBuf::from("/b")));
}

#[cfg(unix)]
#[test]
fn non_utf8_argument_is_an_error() {
    use std::os::unix::ffi::OsStringExt;
    let r = parse_args(vec![
        OsString::from("--pidfile"),
        OsString::from_vec(vec![0xff]),
    ]);
    assert!(matches!(r, Err(CliError::NotUtf8(_))));
}
