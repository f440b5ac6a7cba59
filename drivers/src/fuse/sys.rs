//! The FUSE driver's few system calls that need `unsafe`: cloning a
//! `/dev/fuse` connection per iothread, and the unmount guard process.
//!
//! # The unmount guard
//!
//! No mount may outlive the daemon, `kill -9` included, yet a killed
//! process runs no code. So, like fusermount3's `auto_unmount`, a small
//! process is left behind per mount: forked (twice, so init reaps it) and
//! put in its own session before the mount is made, it holds nothing but
//! the read end of a pipe whose write end only the daemon has. When the
//! daemon removes the export it writes one byte and the guard exits; when
//! the daemon dies the pipe reads end-of-file and the guard lazily unmounts
//! the path, then exits. The guard does nothing but `read`, `umount2` and
//! `_exit` (async-signal-safe, no allocation), as a child forked from a
//! multi-threaded process must.

use std::ffi::CString;
use std::io;

use engine::op::CmdBufs;
use std::os::fd::{AsRawFd, OwnedFd};

/// `FUSE_DEV_IOC_CLONE`: `_IOR(229, 0, uint32_t)`.
const FUSE_DEV_IOC_CLONE: libc::c_ulong = 0x8004_e500;

/// The byte that tells a guard the daemon unmounted by itself.
const DISARM: u8 = b'x';

/// A new `/dev/fuse` descriptor attached to the same connection as `fd`
/// (its own request queue for replies, so each iothread reads and answers
/// on its own descriptor), non-blocking so that a read racing another
/// reader for the same request fails with `EAGAIN` instead of sleeping in
/// the iothread's ring.
pub(crate) fn clone_fuse_fd(fd: &impl AsRawFd) -> io::Result<OwnedFd> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let mut src: u32 = fd.as_raw_fd() as u32;
    // SAFETY: FUSE_DEV_IOC_CLONE reads one u32 (the source fd) through the
    // pointer, which points to a live local; both fds are open.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), FUSE_DEV_IOC_CLONE, &mut src as *mut u32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let owned = OwnedFd::from(dev);
    let flags = nix::fcntl::fcntl(&owned, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&owned, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(owned)
}

/// The daemon's end of one mount's guard: dropping it disarms the guard.
#[derive(Debug)]
pub(crate) struct UnmountGuard {
    pipe: OwnedFd,
}

impl Drop for UnmountGuard {
    fn drop(&mut self) {
        // If the guard is already gone there is nobody to tell.
        let _ = nix::unistd::write(&self.pipe, &[DISARM]);
    }
}

/// Starts the guard for `path` (absolute). See the module docs.
pub(crate) fn spawn_unmount_guard(path: &std::path::Path) -> io::Result<UnmountGuard> {
    use std::os::unix::ffi::OsStrExt;
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let keep = r.as_raw_fd();
    // SAFETY: the child only makes async-signal-safe system calls (fork,
    // setsid, close_range, read, umount2, _exit) on memory that exists
    // before the fork (cpath, a stack byte); it never returns into Rust
    // code of the parent and never allocates.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; this never returns.
        unsafe { guard_child(keep, cpath.as_ptr()) }
    }
    drop(r);
    // The intermediate child exits at once; reap it so no zombie remains.
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    Ok(UnmountGuard { pipe: w })
}

/// The forked side of [`spawn_unmount_guard`].
///
/// # Safety
///
/// Only to be called in a freshly forked child; `path` must point to a
/// NUL-terminated string that the fork copied.
unsafe fn guard_child(keep: libc::c_int, path: *const libc::c_char) -> ! {
    // SAFETY: plain system calls on integers and the copied path; see the
    // module docs for why nothing else may run here.
    unsafe {
        if libc::fork() != 0 {
            libc::_exit(0);
        }
        libc::setsid();
        // Everything but the pipe goes, above all any /dev/fuse and ring
        // fds, which would keep the connection alive.
        if keep > 0 {
            libc::syscall(libc::SYS_close_range, 0u32, (keep - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
        let mut b: u8 = 0;
        loop {
            let n = libc::read(keep, (&mut b as *mut u8).cast(), 1);
            if n == 1 && b == DISARM {
                libc::_exit(0);
            }
            if n == 0 {
                break;
            }
            if n < 0 && *libc::__errno_location() != libc::EINTR {
                break;
            }
        }
        libc::umount2(path, libc::MNT_DETACH);
        libc::_exit(0)
    }
}

/// Submits one FUSE ring command for a ring entry.
///
/// The FUSE kernel driver registers an entry's buffers once and fills them
/// on every fetch, so this is only sound the way `ring.rs` uses it: each
/// entry owns exactly one [`CmdBufs`] for its whole life, passes it to
/// every command of that entry (register, then each commit-and-fetch of a
/// request fetched into it), and drops it only after a completion that
/// ends the entry (the connection torn down); an entry dropped with a
/// command in flight parks the buffers in the op until the kernel is done.
pub(crate) async fn ring_cmd(
    fd: &engine::op::SharedFd,
    cmd_op: u32,
    cmd: [u8; 80],
    bufs: CmdBufs,
) -> (io::Result<u32>, CmdBufs) {
    // SAFETY: see above; ring.rs keeps one CmdBufs per entry for its life.
    unsafe { engine::op::uring_cmd80(fd, cmd_op, cmd, bufs) }.await
}
