//! The `ringstor` binary: qemu-storage-daemon's command line and
//! lifecycle.
//!
//! Order, as in QSD: parse the whole command line, then create the items
//! in the order given (the first failure prints `ringstor: <option>:
//! <desc>` and exits 1), write the pidfile, tell a `--daemonize` parent
//! that startup is complete, and serve until `quit` or a signal.
//!
//! # Daemonizing without `unsafe`
//!
//! `fork()` is `unsafe` and this crate forbids it, so `--daemonize`
//! re-executes the binary instead: the parent starts a copy of itself
//! with `RINGSTOR_DAEMON_CHILD=1` and the child's stdout on a pipe, and
//! waits. The child calls `setsid()`, starts everything, writes one byte
//! to the pipe once startup is complete, then points its standard streams
//! at /dev/null and changes to `/` like QEMU's `os_setup_post()`. The
//! parent exits 0 on that byte; if the pipe closes without it, the child's
//! error (on the inherited stderr) has been printed and the parent exits
//! with the child's status.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::{Command, ExitCode, Stdio};

use control::cli::{self, CliArgs, CliCommand, CliItem};
use control::commands;
use control::daemon::Daemon;
use control::qapi::{Input, Syntax};
use control::qmp::{Chardev, MonitorAddr};

/// Set in the re-executed child of `--daemonize`.
const DAEMON_CHILD_ENV: &str = "RINGSTOR_DAEMON_CHILD";

/// Prints `ringstor: {msg}` to stderr.
fn report(msg: &str) {
    let _ = writeln!(std::io::stderr(), "ringstor: {msg}");
}

fn main() -> ExitCode {
    // Before any thread exists, so all inherit the mask (see `signals`).
    if let Err(e) = control::signals::block() {
        report(&format!("cannot block signals: {e}"));
        return ExitCode::FAILURE;
    }
    control::logger::init();
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    if argv.len() == 1 && argv[0] == "--demo" {
        return match control::demo::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                report(&e.desc());
                ExitCode::FAILURE
            }
        };
    }
    let args = match cli::parse_args(argv.clone()) {
        Ok(CliCommand::Help) => {
            print!("{}", cli::help_text());
            println!(
                "\nringstor extensions:\n  \
                 --demo                 serve a writable 1 GiB NBD export 'demo' and a QMP\n                         \
                 monitor from a temporary directory until Ctrl-C\n  \
                 --object iothread,id=<id>,cpu=<n>\n                         \
                 pin an iothread to a CPU (default: round robin)\n  \
                 --export ...,iothread.0=<id>,iothread.1=<id>\n                         \
                 spread an export over several iothreads"
            );
            return ExitCode::SUCCESS;
        }
        Ok(CliCommand::Version) => {
            print!("{}", cli::version_text());
            return ExitCode::SUCCESS;
        }
        Ok(CliCommand::Run(args)) => args,
        Err(e) if e.is_getopt() => {
            let argv0 = std::env::args_os()
                .next()
                .unwrap_or_else(|| "ringstor".into());
            let _ = writeln!(std::io::stderr(), "{}: {e}", argv0.to_string_lossy());
            return ExitCode::FAILURE;
        }
        Err(e) => {
            report(&e.to_string());
            return ExitCode::FAILURE;
        }
    };
    for w in &args.warnings {
        report(w);
    }
    if args.daemonize && std::env::var_os(DAEMON_CHILD_ENV).is_none() {
        return daemonize_parent(&argv);
    }
    let child = std::env::var_os(DAEMON_CHILD_ENV).is_some();
    if child {
        // The parent's process-group leader is the parent, so this works.
        if let Err(e) = nix::unistd::setsid() {
            report(&format!("setsid: {e}"));
            return ExitCode::FAILURE;
        }
    }
    // Before the daemon opens anything (and before any thread): which
    // descriptors it inherited, and systemd's names for them.
    let parent = child.then(|| nix::unistd::getppid().as_raw() as u32);
    let activated = drivers::socket::inherited::init(parent);
    if !activated.is_empty() {
        log::info!("socket activation: {}", activated.join(", "));
    }
    match start(args) {
        Ok(mut daemon) => {
            if child {
                detach();
            }
            daemon.run();
            ExitCode::SUCCESS
        }
        Err(msg) => {
            report(&msg);
            ExitCode::FAILURE
        }
    }
}

/// Creates everything the command line asks for, in order.
fn start(args: CliArgs) -> Result<Daemon, String> {
    let mut d = Daemon::new().map_err(|e| e.desc())?;
    control::signals::spawn_waiter(d.internal_sender())
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    let mut chardevs: Vec<(String, Option<Chardev>)> = Vec::new();
    let mut quit = false;
    for (item, at) in args.items.into_iter().zip(args.locations) {
        if quit {
            // The control loop sees the quit flag and shuts down.
            return Ok(d);
        }
        if let CliItem::Chardev(c) = &item {
            if chardevs.iter().any(|(id, _)| *id == c.id) {
                d.shutdown();
                return Err(format!("{at}: Duplicate ID '{}' for chardev", c.id));
            }
        }
        let input = |o: cli::ParsedOption| {
            let syntax = if o.keyval {
                Syntax::Keyval
            } else {
                Syntax::Json
            };
            Input::new(o.value, syntax)
        };
        let r = match item {
            CliItem::Blockdev(o) => commands::blockdev_add(&mut d, input(o)).map(drop),
            CliItem::Object(o) => commands::object_add(&mut d, input(o)).map(drop),
            CliItem::NbdServer(o) => commands::nbd_server_start(&mut d, input(o), false).map(drop),
            CliItem::Export(o) => commands::block_export_add(&mut d, input(o)).map(drop),
            CliItem::Chardev(c) => open_chardev(&mut d, &c, &at).map(|opened| match opened {
                Some(ch) => chardevs.push((c.id, Some(ch))),
                // A quit signal while `wait=on` waited.
                None => quit = true,
            }),
            CliItem::Monitor(m) => match chardevs.iter_mut().find(|(id, _)| *id == m.chardev) {
                None => Err(control::ControlError::failed(format!(
                    "chardev \"{}\" not found",
                    m.chardev
                ))),
                Some((_, slot)) => match slot.take() {
                    None => Err(control::ControlError::failed(format!(
                        "chardev '{}' is already in use",
                        m.chardev
                    ))),
                    Some(ch) => d.add_monitor(MonitorAddr::Open(ch), m.pretty),
                },
            },
        };
        if let Err(e) = r {
            let msg = if at.is_empty() {
                e.desc()
            } else {
                format!("{at}: {}", e.desc())
            };
            d.shutdown();
            return Err(msg);
        }
    }
    if let Some(p) = args.pidfile {
        // Absolute, because a daemon changes to `/` before removing it.
        let p = std::path::absolute(&p).unwrap_or(p);
        if let Err(e) = std::fs::write(&p, format!("{}\n", std::process::id())) {
            d.shutdown();
            return Err(format!("cannot create PID file: {e}"));
        }
        d.remove_at_exit(p);
    }
    Ok(d)
}

/// Opens a `--chardev` where it stands on the command line, as QSD does;
/// with `server=on,wait=on` (QEMU's default) start-up stops here until a
/// monitor client connects. `None`: a quit signal came first.
fn open_chardev(
    d: &mut Daemon,
    c: &cli::ChardevOpts,
    at: &str,
) -> Result<Option<Chardev>, control::ControlError> {
    let mut ch = control::sockets::open_chardev(d, c)?;
    if c.server && c.wait {
        report(&format!(
            "{at}: info: QEMU waiting for connection on: {}",
            ch.describe()
        ));
        let connected = ch
            .wait_for_client(|| d.quit_requested())
            .map_err(|e| control::ControlError::failed(format!("accept: {e}")))?;
        if !connected {
            return Ok(None);
        }
    }
    Ok(Some(ch))
}

/// `--daemonize`, parent side: run a copy of ourselves and wait for it
/// to report that startup is complete.
fn daemonize_parent(argv: &[OsString]) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            report(&format!("cannot find own executable: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let mut child = match Command::new(exe)
        .args(argv)
        .env(DAEMON_CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            report(&format!("cannot start daemon: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let mut ready = [0u8; 1];
    let got = child
        .stdout
        .take()
        .map(|mut s| matches!(s.read(&mut ready), Ok(1)))
        .unwrap_or(false);
    if got {
        return ExitCode::SUCCESS;
    }
    match child.wait() {
        Ok(status) => {
            let code = status.code().unwrap_or(1).clamp(1, 255);
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Err(_) => ExitCode::FAILURE,
    }
}

/// `--daemonize`, child side once startup is complete: tell the parent,
/// then leave the terminal and the working directory.
fn detach() {
    let mut out = std::io::stdout();
    let _ = out.write_all(b"R");
    let _ = out.flush();
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        Ok(null) => {
            let _ = nix::unistd::dup2_stdin(&null);
            let _ = nix::unistd::dup2_stdout(&null);
            let _ = nix::unistd::dup2_stderr(&null);
        }
        Err(e) => log::warn!("cannot open /dev/null: {e}"),
    }
    let _ = std::env::set_current_dir("/");
}
