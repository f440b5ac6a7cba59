//! Command-line behaviour: bad input, JSON syntax, `,,` escaping, pidfile,
//! daemonize.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ringstor_tests::daemon::{expand, EarlyExit, QSD_BIN};
use ringstor_tests::*;
use serde_json::json;
use std::fs;
use std::path::Path;
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// Run `bin` with `args` in a scratch dir holding a 1 MiB `img.raw`; it must
/// exit before creating its monitor socket.
fn must_fail(bin: &Path, args: &[&str]) -> EarlyExit {
    let dir = scratch();
    make_sparse(&dir.path().join("img.raw"), MIB);
    match Daemon::try_start_bin(bin, dir, args) {
        Ok(_) => panic!("{} {args:?} started but should have failed", bin.display()),
        Err(e) => e,
    }
}

/// `PROG: OPTION ARG: MESSAGE` with PROG the binary's file name; returns MESSAGE
/// after checking the process exited 1 with exactly one stderr line.
fn one_error_line(bin: &Path, e: &EarlyExit, option_and_arg: &str) -> String {
    assert_eq!(
        e.status.code(),
        Some(1),
        "exit status; stderr: {}",
        e.stderr
    );
    let lines: Vec<&str> = e.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one stderr line, got: {:?}",
        e.stderr
    );
    let prog = bin
        .file_name()
        .expect("binary has a file name")
        .to_string_lossy();
    let prefix = format!("{prog}: {option_and_arg}: ");
    lines[0]
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("line {:?} does not start with {prefix:?}", lines[0]))
        .to_string()
}

/// Bad command lines, their `--option arg` (with `{dir}`) and QSD's message.
fn bad_cases() -> Vec<(Vec<&'static str>, &'static str, &'static str)> {
    vec![
        (
            vec![
                "--blockdev",
                "driver=file,node-name=x,filename={dir}/missing.img",
            ],
            "--blockdev driver=file,node-name=x,filename={dir}/missing.img",
            "Could not open '{dir}/missing.img': No such file or directory",
        ),
        (
            vec![
                "--blockdev",
                "driver=file,node-name=x,filename={dir}/img.raw,cache.direct=maybe",
            ],
            "--blockdev driver=file,node-name=x,filename={dir}/img.raw,cache.direct=maybe",
            "Parameter 'cache.direct' expects 'on' or 'off'",
        ),
        (
            vec![
                "--blockdev",
                "driver=file,node-name=x,filename={dir}/img.raw",
                "--blockdev",
                "driver=file,node-name=x,filename={dir}/img.raw",
            ],
            "--blockdev driver=file,node-name=x,filename={dir}/img.raw",
            "Duplicate nodes with node-name='x'",
        ),
        (
            vec!["--blockdev", "driver=nosuch,node-name=x"],
            "--blockdev driver=nosuch,node-name=x",
            "Parameter 'driver' does not accept value 'nosuch'",
        ),
        (
            vec!["--export", "type=nbd,id=e0,node-name=nope,name=x"],
            "--export type=nbd,id=e0,node-name=nope,name=x",
            "Cannot find device='' nor node-name='nope'",
        ),
    ]
}

#[test]
fn bad_command_lines_exit_1_with_one_line() {
    let bin = binary();
    for (args, opt, msg) in bad_cases() {
        let dir = scratch();
        make_sparse(&dir.path().join("img.raw"), MIB);
        let d = dir.path().to_path_buf();
        let e = match Daemon::try_start_bin(&bin, dir, &args) {
            Ok(_) => panic!("{args:?} started but should have failed"),
            Err(e) => e,
        };
        let got = one_error_line(&bin, &e, &expand(&d, &[opt])[0]);
        assert_eq!(got, expand(&d, &[msg])[0], "message for {args:?}");
    }
}

#[test]
fn unknown_option_and_missing_argument() {
    let bin = binary();
    // getopt messages use argv[0] as given (QEMU's own errors use the basename).
    let prog = bin.display().to_string();
    let e = must_fail(&bin, &["--frobnicate"]);
    assert_eq!(e.status.code(), Some(1));
    assert_eq!(
        e.stderr.trim_end(),
        format!("{prog}: unrecognized option '--frobnicate'")
    );
    // Last on the line, so nothing (like the monitor options) follows it.
    let r = run(&prog, &["--blockdev"], Duration::from_secs(10));
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(
        r.stderr.trim_end(),
        format!("{prog}: option '--blockdev' requires an argument")
    );
}

#[test]
fn bad_command_lines_match_qsd() {
    if skip_unless_comparing("command-line errors compared with QSD") {
        return;
    }
    let qsd = Path::new(QSD_BIN);
    for (args, opt, _) in bad_cases() {
        let ours = must_fail(&binary(), &args);
        let theirs = must_fail(qsd, &args);
        assert_eq!(
            ours.status.code(),
            theirs.status.code(),
            "status for {args:?}"
        );
        // Same shape: one line, `PROG: OPTION ARG: ...`; the dirs differ.
        let o = ours.stderr.lines().count();
        assert_eq!(o, theirs.stderr.lines().count(), "line count for {args:?}");
        let opt_name = opt.split(' ').next().expect("option name");
        assert!(
            ours.stderr.contains(&format!(": {opt_name} ")),
            "{}",
            ours.stderr
        );
    }
}

#[test]
fn json_blockdev_syntax() {
    let dir = scratch();
    make_sparse(&dir.path().join("img.raw"), 2 * MIB);
    let spec = json!({
        "driver": "file", "node-name": "j0", "filename": dir.path().join("img.raw"),
        "read-only": true
    })
    .to_string();
    let d = Daemon::start(dir, &["--blockdev", &spec]);
    let nodes = d.qmp().ok("query-named-block-nodes", json!({}));
    let j0 = nodes
        .as_array()
        .expect("array")
        .iter()
        .find(|n| n["node-name"] == "j0")
        .unwrap_or_else(|| panic!("j0 missing: {nodes}"))
        .clone();
    assert_eq!(j0["ro"], true);
    assert_eq!(j0["image"]["virtual-size"], json!(2 * MIB));

    let e = must_fail(&binary(), &["--blockdev", "{\"driver\":\"file\""]);
    let msg = one_error_line(&binary(), &e, "--blockdev {\"driver\":\"file\"");
    assert_eq!(msg, "JSON parse error, premature EOI");
}

#[test]
fn double_comma_escapes_a_comma_in_filename() {
    let dir = scratch();
    let img = dir.path().join("a,b.img");
    make_sparse(&img, MIB);
    let d = Daemon::start(
        dir,
        &[
            "--blockdev",
            "driver=file,node-name=c0,filename={dir}/a,,b.img",
        ],
    );
    let nodes = d.qmp().ok("query-named-block-nodes", json!({}));
    let c0 = nodes
        .as_array()
        .expect("array")
        .iter()
        .find(|n| n["node-name"] == "c0")
        .unwrap_or_else(|| panic!("c0 missing: {nodes}"))
        .clone();
    assert_eq!(c0["file"], json!(img.to_string_lossy()));
}

#[test]
fn pidfile_holds_pid() {
    let dir = scratch();
    let d = Daemon::start(dir, &["--pidfile", "{dir}/daemon.pid"]);
    // The monitor socket, which `start` waits for, comes before the pidfile
    // (as in QSD, which writes it after all options).
    eventually("the pidfile is written", || d.path("daemon.pid").exists());
    let text = fs::read_to_string(d.path("daemon.pid")).expect("pidfile exists");
    let pid: u32 = text.trim().parse().expect("pidfile holds a number");
    assert_eq!(pid, d.pid());
}

/// Kills a daemonized pid when the test ends.
struct KillPid(i32);
impl Drop for KillPid {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

#[test]
fn daemonize_parent_exits_after_monitor_is_up() {
    let dir = scratch();
    make_filled(&dir.path().join("img.raw"), MIB, 7);
    let args = expand(
        dir.path(),
        &[
            "--blockdev",
            "driver=file,node-name=disk0,filename={dir}/img.raw",
            "--nbd-server",
            "addr.type=unix,addr.path={dir}/nbd.sock",
            "--export",
            "type=nbd,id=e0,node-name=disk0,name=disk0",
            "--chardev",
            "socket,id=mon,path={dir}/qmp.sock,server=on,wait=off",
            "--monitor",
            "chardev=mon",
            "--pidfile",
            "{dir}/daemon.pid",
            "--daemonize",
        ],
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let bin = binary();
    let parent = run(&bin.to_string_lossy(), &refs, Duration::from_secs(15));
    let sock = dir.path().join("qmp.sock");
    let sock_up = sock.exists();
    let pid_text = fs::read_to_string(dir.path().join("daemon.pid")).unwrap_or_default();
    let _guard = pid_text.trim().parse::<i32>().ok().map(KillPid);
    assert_eq!(
        parent.status.code(),
        Some(0),
        "parent exit; stderr: {}",
        parent.stderr
    );
    assert!(sock_up, "monitor socket must exist when the parent exits");
    let pid: i32 = pid_text
        .trim()
        .parse()
        .expect("pidfile holds the daemon pid");
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "daemon {pid} alive"
    );
    let mut q = Qmp::connect(&sock);
    q.ok("query-version", json!({}));
    let info = run(
        "nbdinfo",
        &["--size", &nbd_uri("disk0", &dir.path().join("nbd.sock"))],
        TOOL_TIMEOUT,
    )
    .success("nbdinfo --size on daemonized server");
    assert_eq!(info.stdout.trim(), MIB.to_string());
}
