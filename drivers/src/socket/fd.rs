//! The only place that turns a descriptor number into an [`OwnedFd`].
//!
//! # Safety
//!
//! `OwnedFd::from_raw_fd` is sound only for a number that is open and that
//! nothing else in the process owns or will close. This file makes that a
//! type: an [`Unowned`] names such a number, and [`Unowned::adopt`]
//! consumes it. Unowned values come from exactly two sources:
//!
//! - [`scan_inherited`]: the descriptors (3 and up) the process inherited
//!   through `exec`. It takes only descriptors without close-on-exec: one
//!   that survived `exec` cannot have it, and everything this process
//!   opens itself has it (Rust's standard library, and `nix` as the daemon
//!   calls it, open close-on-exec); it is also called before the daemon
//!   opens anything. It runs once per process (a second call returns
//!   nothing), so each number gets at most one `Unowned`, and an `Unowned`
//!   is neither `Clone` nor `Copy`.
//! - [`recv_with_fds`]: descriptors the kernel has just installed for us by
//!   `SCM_RIGHTS`; they are adopted before the function returns.
//!
//! An adopted descriptor that turns out unsuitable can go back to being an
//! `Unowned` ([`Unowned::give_back`]): the `OwnedFd` proves ownership, and
//! `into_raw_fd` leaves it open and owned by nobody.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};

/// Most descriptors one `sendmsg` can carry (the kernel's `SCM_MAX_FD`), so
/// the control buffer below can never be truncated: a truncated one would
/// leave descriptors installed that `nix` refuses to hand out.
const SCM_MAX_FD: usize = 253;

/// An open descriptor number nobody owns. See the module docs.
#[derive(Debug)]
pub(crate) struct Unowned {
    raw: RawFd,
    /// Device and inode when scanned, so a number closed and reused behind
    /// our back is not mistaken for the original (`None`: just received).
    id: Option<(u64, u64)>,
    socket: bool,
}

impl Unowned {
    /// The descriptor number.
    pub(crate) fn raw(&self) -> RawFd {
        self.raw
    }

    /// Whether it was a socket when scanned.
    pub(crate) fn is_socket(&self) -> bool {
        self.socket
    }

    /// Takes ownership; `Err(self)` if the number no longer names the
    /// object it named when scanned.
    pub(crate) fn adopt(self) -> Result<OwnedFd, Unowned> {
        if let Some(scanned) = self.id {
            match identify(self.raw) {
                Some((id, _)) if id == scanned => {}
                _ => return Err(self),
            }
        }
        // SAFETY: see the module docs: an `Unowned` exists only for an open
        // number nothing else owns, at most once per number, and adopting
        // consumes it; `identify` just confirmed the number still names
        // the object that was scanned.
        Ok(unsafe { OwnedFd::from_raw_fd(self.raw) })
    }

    /// Releases an adopted descriptor without closing it.
    pub(crate) fn give_back(fd: OwnedFd) -> Unowned {
        let found = identify(fd.as_raw_fd());
        Unowned {
            raw: fd.into_raw_fd(),
            id: found.map(|(id, _)| id),
            socket: found.is_some_and(|(_, s)| s),
        }
    }
}

/// Device, inode and socket-ness of what `raw` names, through
/// `/proc/self/fd` (a path, so no borrowed descriptor is needed).
fn identify(raw: RawFd) -> Option<((u64, u64), bool)> {
    let meta = std::fs::metadata(format!("/proc/self/fd/{raw}")).ok()?;
    Some(((meta.dev(), meta.ino()), meta.file_type().is_socket()))
}

/// Whether `raw` is close-on-exec, from `/proc/self/fdinfo` (a path, so no
/// borrowed descriptor is needed); `None` if it is not open.
fn close_on_exec(raw: RawFd) -> Option<bool> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{raw}")).ok()?;
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| i64::from_str_radix(f.trim(), 8).ok())?;
    Some(flags & i64::from(libc::O_CLOEXEC) != 0)
}

static SCANNED: AtomicBool = AtomicBool::new(false);

/// The descriptors from 3 up that are open now, once per process. Call it
/// before the process opens any descriptor of its own.
pub(crate) fn scan_inherited() -> Vec<Unowned> {
    if SCANNED.swap(true, Ordering::AcqRel) {
        return Vec::new();
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        log::warn!("cannot list /proc/self/fd: inherited descriptors are not available");
        return Vec::new();
    };
    let numbers: Vec<RawFd> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&n| n >= 3)
        .collect();
    // The directory's own descriptor was among them; it is closed now, so
    // `identify` no longer finds it.
    let mut out: Vec<Unowned> = numbers
        .into_iter()
        .filter(|&raw| !close_on_exec(raw).unwrap_or(true))
        .filter_map(|raw| {
            let (id, socket) = identify(raw)?;
            Some(Unowned {
                raw,
                id: Some(id),
                socket,
            })
        })
        .collect();
    out.sort_by_key(|u| u.raw);
    out
}

/// One `recvmsg` on a unix stream socket: the bytes, and the descriptors
/// that came with them (`SCM_RIGHTS`, close-on-exec), each now owned.
pub fn recv_with_fds(sock: &impl AsRawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut cmsg = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    match msg.cmsgs() {
        Ok(cmsgs) => {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(raws) = c {
                    // The kernel installed these for this recvmsg: open,
                    // and nothing else knows the numbers (module docs).
                    for raw in raws {
                        let fresh = Unowned {
                            raw,
                            id: None,
                            socket: false,
                        };
                        // Unchecked adoption cannot fail.
                        if let Ok(fd) = fresh.adopt() {
                            fds.push(fd);
                        }
                    }
                }
            }
        }
        // Cannot happen with room for SCM_MAX_FD descriptors.
        Err(e) => log::error!("recvmsg: control data truncated: {e}"),
    }
    Ok((msg.bytes, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_descriptors_without_close_on_exec_count_as_inherited() {
        let f = tempfile::tempfile().expect("file");
        assert_eq!(
            close_on_exec(f.as_raw_fd()),
            Some(true),
            "std opens close-on-exec"
        );
        // dup(2) does not copy close-on-exec, as a descriptor kept across
        // exec would not have it.
        let d = nix::unistd::dup(&f).expect("dup");
        assert_eq!(close_on_exec(d.as_raw_fd()), Some(false));
        drop(d);
        assert_eq!(close_on_exec(1 << 20), None);
    }

    #[test]
    fn passed_descriptors_arrive_owned_and_close_on_exec() {
        use nix::sys::socket::{sendmsg, ControlMessage};
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let f = tempfile::tempfile().expect("file");
        let fds = [f.as_raw_fd(), f.as_raw_fd()];
        sendmsg::<UnixAddr>(
            a.as_raw_fd(),
            &[std::io::IoSlice::new(b"x")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .expect("sendmsg");
        let mut buf = [0u8; 4];
        let (n, got) = recv_with_fds(&b, &mut buf).expect("recv");
        assert_eq!((n, got.len()), (1, 2));
        for fd in &got {
            assert_ne!(fd.as_raw_fd(), f.as_raw_fd());
            assert_eq!(close_on_exec(fd.as_raw_fd()), Some(true));
        }
    }
}
