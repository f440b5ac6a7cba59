//! Image locking with OFD locks, byte for byte as QEMU's `file-posix` does.
//!
//! For each permission bit `i` a node holds, a shared lock on byte `100 + i`;
//! for each bit it does not share, a shared lock on byte `200 + i`. Taking a
//! permission first tests that nobody locks its "unshared" byte, and not
//! sharing one tests that nobody locks its "held" byte. Because the layout is
//! QEMU's, QEMU, qemu-img and ringstor see each other's locks.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::fcntl::{fcntl, FcntlArg};

use super::error::{BlockError, BlockResult};
use super::perm::Perm;

const PERM_BASE: i64 = 100;
const SHARED_BASE: i64 = 200;
const BITS: u8 = 4;

fn flock(kind: i32, start: i64) -> libc::flock {
    // SAFETY: flock is a plain C struct for which all-zero is valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = 1;
    fl
}

fn set(fd: BorrowedFd<'_>, kind: i32, byte: i64) -> std::io::Result<()> {
    let fl = flock(kind, byte);
    fcntl(fd, FcntlArg::F_OFD_SETLK(&fl))
        .map(|_| ())
        .map_err(std::io::Error::from)
}

/// True when some other open file description holds a lock on `byte`.
fn taken(fd: BorrowedFd<'_>, byte: i64) -> std::io::Result<bool> {
    let mut fl = flock(libc::F_WRLCK, byte);
    fcntl(fd, FcntlArg::F_OFD_GETLK(&mut fl)).map_err(std::io::Error::from)?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// Checks that `perm`/`unshared` do not conflict with other processes.
pub(crate) fn check(fd: &impl AsFd, perm: Perm, unshared: Perm) -> BlockResult<()> {
    let fd = fd.as_fd();
    let io = |e| BlockError::io("lock check", 0, e);
    for i in 0..BITS {
        let bit = Perm(1 << i);
        if perm.contains(bit) && taken(fd, SHARED_BASE + i64::from(i)).map_err(io)? {
            return Err(BlockError::Locked { perm: bit.name() });
        }
        if unshared.contains(bit) && taken(fd, PERM_BASE + i64::from(i)).map_err(io)? {
            return Err(BlockError::Locked { perm: bit.name() });
        }
    }
    Ok(())
}

/// Makes the lock bytes say `perm`/`unshared`.
pub(crate) fn apply(fd: &impl AsFd, perm: Perm, unshared: Perm) -> BlockResult<()> {
    let fd = fd.as_fd();
    let raw = fd.as_raw_fd();
    let io = |e| BlockError::io("lock", 0, e);
    for i in 0..BITS {
        let bit = Perm(1 << i);
        let held = if perm.contains(bit) {
            libc::F_RDLCK
        } else {
            libc::F_UNLCK
        };
        set(fd, held, PERM_BASE + i64::from(i)).map_err(io)?;
        let uns = if unshared.contains(bit) {
            libc::F_RDLCK
        } else {
            libc::F_UNLCK
        };
        set(fd, uns, SHARED_BASE + i64::from(i)).map_err(io)?;
    }
    log::debug!("fd {raw}: lock bytes now perm {perm:?} unshared {unshared:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_descriptions_conflict() {
        let f = tempfile::NamedTempFile::new().expect("tmp");
        let a = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(f.path())
            .expect("a");
        let b = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(f.path())
            .expect("b");
        // a writes and shares nothing but reads.
        let unshared = Perm::ALL.minus(Perm::CONSISTENT_READ);
        check(&a, Perm::WRITE, unshared).expect("free");
        apply(&a, Perm::WRITE.union(Perm::CONSISTENT_READ), unshared).expect("apply");
        assert!(matches!(
            check(&b, Perm::WRITE, Perm::NONE),
            Err(BlockError::Locked { .. })
        ));
        check(&b, Perm::CONSISTENT_READ, Perm::NONE).expect("reading is shared");
        apply(&a, Perm::NONE, Perm::NONE).expect("release");
        check(&b, Perm::WRITE, Perm::ALL).expect("free again");
    }
}
