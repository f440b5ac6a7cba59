//! Starting a daemon the way launchers do: with listening sockets as
//! inherited descriptors, optionally announced by systemd's socket
//! activation variables; and passing descriptors over a unix socket.

use crate::daemon::{Daemon, EarlyExit};
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Descriptors to hand to a child: `(ours, number in the child)`.
pub type Handed<'a> = &'a [(&'a dyn AsFd, RawFd)];

/// Makes `cmd`'s child inherit each descriptor under its number. The
/// copies are made here, close-on-exec and above every target, so that
/// targets cannot clobber each other's sources in the child.
pub fn inherit(cmd: &mut Command, fds: Handed<'_>) {
    let copies: Vec<(OwnedFd, RawFd)> = fds
        .iter()
        .map(|(fd, target)| {
            let copy = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(100))
                .expect("dup descriptor to hand over");
            // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that only
            // we know of.
            let copy = unsafe { std::os::fd::FromRawFd::from_raw_fd(copy) };
            (copy, *target)
        })
        .collect();
    // SAFETY: between fork and exec the closure only calls dup2(2), which
    // is async-signal-safe, and allocates nothing. The copies live in the
    // closure, so they are closed here when the command is dropped.
    unsafe {
        cmd.pre_exec(move || {
            for (from, to) in &copies {
                // dup2 clears close-on-exec on the new number.
                if libc::dup2(from.as_raw_fd(), *to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Spawns `bin args` inheriting `fds`; `activation` sets
/// `LISTEN_FDS`/`LISTEN_FDNAMES` and runs the daemon through
/// `sh -c 'LISTEN_PID=$$ exec ...'`, so that `LISTEN_PID` is the pid the
/// daemon runs as. Started means `wait_for` exists (a `--pidfile`).
pub fn spawn_inheriting(
    bin: &Path,
    dir: tempfile::TempDir,
    args: Vec<String>,
    fds: Handed<'_>,
    activation: Option<&[&str]>,
    wait_for: PathBuf,
) -> Result<Daemon, EarlyExit> {
    let (prog, args) = match activation {
        None => (bin.to_path_buf(), args),
        Some(_) => {
            let mut a = vec![
                "-c".to_string(),
                "LISTEN_PID=$$ exec \"$0\" \"$@\"".to_string(),
                bin.display().to_string(),
            ];
            a.extend(args);
            (PathBuf::from("/bin/sh"), a)
        }
    };
    Daemon::spawn_with(&prog, dir, args, wait_for, |cmd| {
        if let Some(names) = activation {
            cmd.env("LISTEN_FDS", names.len().to_string())
                .env("LISTEN_FDNAMES", names.join(":"));
        }
        inherit(cmd, fds);
    })
}

/// A listening unix socket at `path`.
pub fn unix_listener(path: &Path) -> UnixListener {
    UnixListener::bind(path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()))
}

/// The inode of the socket behind `fd`.
pub fn socket_inode(fd: &impl AsRawFd) -> u64 {
    std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .expect("stat own descriptor")
        .ino()
}

/// Whether process `pid` holds a descriptor of socket inode `ino`.
pub fn holds_socket(pid: u32, ino: u64) -> bool {
    let want = format!("socket:[{ino}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
        })
        .unwrap_or(false)
}

/// Sends `data` with `fds` attached (`SCM_RIGHTS`) on a unix stream.
pub fn send_with_fds(sock: &UnixStream, data: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    let cmsg = [ControlMessage::ScmRights(fds)];
    let n = sendmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &[IoSlice::new(data)],
        &cmsg,
        MsgFlags::empty(),
        None,
    )?;
    std::io::Write::write_all(&mut &*sock, &data[n..])
}
