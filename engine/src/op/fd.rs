//! [`SharedFd`]: an fd kept open for as long as any operation on it is in flight.

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
    _owner: Box<dyn Any>,
}

impl SharedFd {
    /// Takes ownership of `fd`.
    pub fn new(fd: OwnedFd) -> SharedFd {
        let raw = fd.as_raw_fd();
        SharedFd {
            inner: Rc::new(Inner {
                raw,
                _owner: Box::new(fd),
            }),
        }
    }

    /// Keeps `owner` (an `Arc<File>`, say) alive as the owner of its fd.
    pub fn from_owner<T: AsRawFd + 'static>(owner: T) -> SharedFd {
        let raw = owner.as_raw_fd();
        SharedFd {
            inner: Rc::new(Inner {
                raw,
                _owner: Box::new(owner),
            }),
        }
    }

    /// Gives the fd back when this is the last handle and it owns an
    /// `OwnedFd` (to move a socket to another iothread); otherwise returns
    /// the handle unchanged.
    pub fn try_into_owned(self) -> Result<OwnedFd, SharedFd> {
        match Rc::try_unwrap(self.inner) {
            Ok(inner) => match inner._owner.downcast::<OwnedFd>() {
                Ok(fd) => Ok(*fd),
                Err(owner) => Err(SharedFd {
                    inner: Rc::new(Inner {
                        raw: inner.raw,
                        _owner: owner,
                    }),
                }),
            },
            Err(inner) => Err(SharedFd { inner }),
        }
    }

    /// The raw fd, valid while this handle lives.
    pub fn raw(&self) -> RawFd {
        self.inner.raw
    }

    pub(crate) fn sqe_fd(&self) -> io_uring::types::Fd {
        io_uring::types::Fd(self.inner.raw)
    }
}

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
        write!(f, "SharedFd({})", self.inner.raw)
    }
}
