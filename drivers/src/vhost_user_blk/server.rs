//! The listening socket and the protocol thread.
//!
//! [`listen`] is the one place a vhost-user-blk address becomes a
//! listening socket (a unix path now; an fd passed in plugs in here). The
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

/// Where a vhost-user-blk export listens.
#[derive(Debug)]
pub enum VhostUserAddr {
    /// A unix socket path (created; removed when the export goes).
    Unix(PathBuf),
    /// An already listening unix socket passed in.
    Fd(OwnedFd),
}

/// Creates the listening socket for `addr`; returns it and the path to
/// unlink at the end (for a path address).
pub fn listen(addr: VhostUserAddr) -> Result<(UnixListener, Option<PathBuf>), ExportError> {
    match addr {
        VhostUserAddr::Unix(path) => {
            // QEMU replaces a stale socket; never delete anything else.
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
                    let _ = std::fs::remove_file(&path);
                }
            }
            let l = UnixListener::bind(&path).map_err(|e| {
                // The control plane strips Rust's "(os error N)", as QEMU
                // prints strerror() alone.
                ExportError::Failed(format!("Failed to bind socket to {}: {e}", path.display()))
            })?;
            Ok((l, Some(path)))
        }
        VhostUserAddr::Fd(fd) => Ok((UnixListener::from(fd), None)),
    }
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
