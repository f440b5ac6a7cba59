//! [`SharedFd`]: an fd kept open for as long as any operation on it is in
//! flight, optionally registered in the iothread's file table.

use std::any::Any;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::rc::Rc;

/// A file descriptor shared by the operations of one iothread.
///
/// Operations clone the handle into their data, so closing the last user's
/// handle while an op is in the kernel cannot recycle the fd number under it.
#[derive(Clone)]
pub struct SharedFd {
    inner: Rc<Inner>,
}

struct Inner {
    raw: RawFd,
    /// Slot in this iothread's registered file table, if registered.
    fixed: Option<u32>,
    owner: Box<dyn Any>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(slot) = self.fixed {
            // Every op on it has completed: they hold clones of the Rc.
            crate::iothread::runtime::try_with_runtime(|rt| {
                rt.ring.borrow_mut().unregister_file(slot)
            });
        }
    }
}

impl SharedFd {
    fn build(raw: RawFd, fixed: Option<u32>, owner: Box<dyn Any>) -> SharedFd {
        SharedFd {
            inner: Rc::new(Inner { raw, fixed, owner }),
        }
    }

    /// Takes ownership of `fd`.
    pub fn new(fd: OwnedFd) -> SharedFd {
        let raw = fd.as_raw_fd();
        Self::build(raw, None, Box::new(fd))
    }

    /// Keeps `owner` (an `Arc<File>`, say) alive as the owner of its fd.
    pub fn from_owner<T: AsRawFd + 'static>(owner: T) -> SharedFd {
        let raw = owner.as_raw_fd();
        Self::build(raw, None, Box::new(owner))
    }

    /// Like [`SharedFd::from_owner`], and registers the fd in the current
    /// iothread's file table so operations skip the per-op fd lookup. Falls
    /// back to the plain fd when the table is full or registration fails.
    ///
    /// # Panics
    ///
    /// Off an iothread (see `crate::iothread`).
    pub fn registered<T: AsRawFd + 'static>(owner: T) -> SharedFd {
        let raw = owner.as_raw_fd();
        let fixed =
            crate::iothread::runtime::with_runtime(|rt| rt.ring.borrow_mut().register_file(raw));
        Self::build(raw, fixed, Box::new(owner))
    }

    /// Gives the fd back when this is the last handle, it is not registered
    /// and it owns an `OwnedFd` (to move a socket to another iothread);
    /// otherwise returns the handle unchanged.
    pub fn try_into_owned(self) -> Result<OwnedFd, SharedFd> {
        match Rc::try_unwrap(self.inner) {
            Ok(mut inner) if inner.fixed.is_none() => {
                let owner = std::mem::replace(&mut inner.owner, Box::new(()));
                match owner.downcast::<OwnedFd>() {
                    Ok(fd) => Ok(*fd),
                    Err(owner) => Err(Self::build(inner.raw, None, owner)),
                }
            }
            Ok(inner) => Err(SharedFd {
                inner: Rc::new(inner),
            }),
            Err(inner) => Err(SharedFd { inner }),
        }
    }

    /// The raw fd, valid while this handle lives.
    pub fn raw(&self) -> RawFd {
        self.inner.raw
    }

    /// The registered slot, if any.
    pub fn fixed_slot(&self) -> Option<u32> {
        self.inner.fixed
    }

    pub(crate) fn sqe_fd(&self) -> io_uring::types::Fd {
        io_uring::types::Fd(self.inner.raw)
    }
}

/// Builds an SQE for `$fd` through its registered slot when it has one
/// (`types::Fixed`), else through the raw fd (`types::Fd`).
macro_rules! with_fd {
    ($fd:expr, |$f:ident| $body:expr) => {
        match $fd.fixed_slot() {
            Some(slot) => {
                let $f = io_uring::types::Fixed(slot);
                $body
            }
            None => {
                let $f = $fd.sqe_fd();
                $body
            }
        }
    };
}
pub(crate) use with_fd;

impl AsFd for SharedFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the owner keeps the fd open for as long as the Rc lives,
        // which outlives this borrow of self.
        unsafe { BorrowedFd::borrow_raw(self.inner.raw) }
    }
}

impl AsRawFd for SharedFd {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.raw
    }
}

impl std::fmt::Debug for SharedFd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SharedFd({}, fixed {:?})",
            self.inner.raw, self.inner.fixed
        )
    }
}
