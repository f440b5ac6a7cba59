//! The listening socket and the protocol thread.
//!
//! The listening socket comes from the daemon's shared listener code
//! (unix paths and `fd` addresses alike, see [`VhostUserAddr`]). The
//! protocol thread then accepts one frontend at a time, as QEMU's
//! vhost-user server does (others wait in the backlog), and feeds its
//! messages to vhost's `BackendReqHandler`. It only blocks in `poll(2)` on
//! the socket and the export's stop eventfd, so removal is never stuck
//! behind a silent frontend. A frontend that disconnects, cleanly or not,
//! has its queues stopped and its state dropped, and the export goes back
//! to listening.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use vhost::vhost_user::{BackendReqHandler, Error as VuError};

use super::backend::Backend;
use super::export::ExportShared;
use super::status::{intercept, Intercepted};
use crate::export::ExportError;

/// Where a vhost-user-blk export listens: a unix socket already listening
/// (made by the shared `crate::socket::listen` from any address type the
/// daemon knows), and the socket file to remove when the export goes.
#[derive(Debug)]
pub struct VhostUserAddr {
    /// The listening socket.
    pub fd: OwnedFd,
    /// The path it created, if any (unlinked with the export, as QEMU does).
    pub created_path: Option<PathBuf>,
}

impl VhostUserAddr {
    /// Takes a listening socket from the shared listener code; only unix
    /// sockets carry vhost-user (QEMU: "Passed fds must be UNIX domain
    /// sockets").
    pub fn from_listener(l: crate::socket::Listener) -> Result<VhostUserAddr, ExportError> {
        if l.family() != crate::socket::Family::Unix {
            return Err(ExportError::Failed(
                "Only socket address types 'unix' and 'fd' are supported".into(),
            ));
        }
        let (fd, created_path) = l.into_parts();
        Ok(VhostUserAddr { fd, created_path })
    }
}

/// The listening socket and the path to unlink at the end.
pub fn listen(addr: VhostUserAddr) -> Result<(UnixListener, Option<PathBuf>), ExportError> {
    Ok((UnixListener::from(addr.fd), addr.created_path))
}

/// What woke the protocol thread.
enum Ready {
    Socket,
    Stop,
}

fn wait(fd: &impl AsFd, shared: &ExportShared) -> Ready {
    loop {
        let mut fds = [
            PollFd::new(fd.as_fd(), PollFlags::POLLIN),
            PollFd::new(shared.stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::error!("vhost-user-blk: poll: {e}");
                return Ready::Stop;
            }
        }
        if shared.removing() || fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return Ready::Stop;
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            return Ready::Socket;
        }
    }
}

/// The protocol thread: accept, serve, repeat until removed.
pub fn serve(listener: UnixListener, path: Option<PathBuf>, shared: Arc<ExportShared>) {
    let id = shared.common.id.clone();
    while let Ready::Socket = wait(&listener, &shared) {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                log::warn!("vhost-user-blk {id}: accept: {e}");
                if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                continue;
            }
        };
        if !shared.connect(&stream) {
            break;
        }
        log::info!("vhost-user-blk {id}: frontend connected");
        serve_connection(stream, &shared);
        shared.disconnect();
        log::info!("vhost-user-blk {id}: frontend gone; listening again");
    }
    drop(listener);
    if let Some(p) = path {
        let _ = std::fs::remove_file(p);
    }
    shared.finished();
}

fn serve_connection(stream: UnixStream, shared: &Arc<ExportShared>) {
    let id = &shared.common.id;
    let backend = Arc::new(Mutex::new(Backend::new(shared.clone())));
    let Ok(mut own) = stream.try_clone() else {
        return;
    };
    let mut handler = BackendReqHandler::from_stream(stream, backend.clone());
    loop {
        if let Ready::Stop = wait(&own, shared) {
            break;
        }
        let mine = {
            let mut b = backend.lock().unwrap_or_else(|p| p.into_inner());
            intercept(&mut own, &mut b)
        };
        match mine {
            Ok(Intercepted::Handled) => continue,
            Ok(Intercepted::No) => {}
            Err(e) => {
                log::warn!("vhost-user-blk {id}: {e}; dropping the frontend");
                break;
            }
        }
        match handler.handle_request() {
            Ok(()) => {}
            Err(VuError::Disconnected) | Err(VuError::PartialMessage) => break,
            Err(e) => {
                log::warn!("vhost-user-blk {id}: {e}; dropping the frontend");
                break;
            }
        }
    }
    let _ = own.shutdown(std::net::Shutdown::Both);
    backend.lock().unwrap_or_else(|p| p.into_inner()).reset();
}
