//! Listening sockets from QAPI socket addresses, for every server the
//! daemon runs: the NBD server (`--nbd-server`, `nbd-server-start`), QMP
//! monitors (`--chardev socket`), the `metrics` object and exports that
//! listen (vhost-user-blk's `addr`). Each calls [`listen`] with its parsed [`SocketAddress`], so a
//! unix path, a TCP address and an `fd` work the same for all of them.
//!
//! # Which descriptor an `fd` address names
//!
//! As in QEMU (`socket_get_fd`), that depends on where the command came
//! from:
//! - a QMP monitor: the descriptor stored under that name on that monitor
//!   with `getfd`; then, as a ringstor extension, a systemd
//!   socket-activation name;
//! - the command line: an inherited descriptor number; then, as a ringstor
//!   extension, a socket-activation name (`addr.str=nbd`).
//!
//! An inherited descriptor that fails the checks (not a listening stream
//! socket) stays open and unclaimed; one stored with `getfd` is consumed
//! either way, as in QEMU.

use std::os::fd::OwnedFd;

use drivers::socket::{self, check_listener, inherited, ClaimError, ListenAddr, Listener};

use crate::cli::ChardevOpts;
use crate::daemon::Daemon;
use crate::error::Result;
use crate::qapi::SocketAddress;
use crate::qmp::Chardev;

/// Opens the listening socket `addr` names. See the module docs.
pub fn listen(d: &Daemon, addr: &SocketAddress) -> Result<Listener> {
    let addr = match addr {
        SocketAddress::Unix { path } => ListenAddr::Unix(path.into()),
        SocketAddress::Inet { host, port } => ListenAddr::Tcp {
            host: host.clone(),
            port: port.clone(),
        },
        SocketAddress::Fd { name } => {
            let (fd, inherited) = claim(d, name)?;
            if let Err(e) = check_listener(&fd, name) {
                if inherited {
                    inherited::give_back(fd);
                }
                return Err(e.into());
            }
            ListenAddr::Fd {
                fd,
                name: name.clone(),
            }
        }
    };
    Ok(socket::listen(addr)?)
}

/// The descriptor an `fd` address names, and whether it was inherited.
fn claim(d: &Daemon, name: &str) -> Result<(OwnedFd, bool)> {
    if let Some(monitor) = d.request_monitor() {
        if let Some(fd) = monitor.take(name) {
            return Ok((fd, false));
        }
        return match inherited::claim_name(name) {
            Some(r) => Ok((r?, true)),
            None => Err(ClaimError::NotFound(name.to_string()).into()),
        };
    }
    match inherited::claim_number(name) {
        Ok(fd) => Ok((fd, true)),
        Err(ClaimError::Parse(text)) => match inherited::claim_name(name) {
            Some(r) => Ok((r?, true)),
            None if inherited::has_activation() => {
                Err(ClaimError::NotFound(name.to_string()).into())
            }
            // QSD's words, without socket activation to look at.
            None => Err(ClaimError::Parse(text).into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Opens a `--chardev socket,server=on` (QEMU does it when it parses the
/// option; `wait=on` is then the caller's, see [`Chardev::wait_for_client`]).
pub fn open_chardev(d: &Daemon, c: &ChardevOpts) -> Result<Chardev> {
    let addr = match (&c.fd, &c.path, &c.host) {
        (Some(fd), _, _) => SocketAddress::Fd { name: fd.clone() },
        (None, Some(p), _) => SocketAddress::Unix { path: p.clone() },
        (None, None, host) => SocketAddress::Inet {
            host: host.clone().unwrap_or_else(|| "0.0.0.0".into()),
            port: c.port.clone().unwrap_or_default(),
        },
    };
    Ok(Chardev::new(listen(d, &addr)?))
}
