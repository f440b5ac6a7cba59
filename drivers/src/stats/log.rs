//! Rate-limited logging for lines a peer can cause (connections, protocol
//! errors): at most [`BURST`] lines per [`WINDOW`], then one line saying
//! how many were left out. Lock-free, so any iothread may log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Lines let through per window.
pub const BURST: u64 = 20;
/// Length of a window.
pub const WINDOW: Duration = Duration::from_secs(10);

fn epoch() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

/// A log limiter. See the module docs.
#[derive(Debug, Default)]
pub struct RateLimit {
    /// Start of the current window, in ms since [`epoch`].
    window_ms: AtomicU64,
    /// Lines in the current window.
    lines: AtomicU64,
    /// Lines left out since the last summary.
    dropped: AtomicU64,
}

impl RateLimit {
    /// A limiter whose first window starts now.
    pub const fn new() -> RateLimit {
        RateLimit {
            window_ms: AtomicU64::new(0),
            lines: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// True if a line may be logged now; logs the summary of a previous
    /// window's dropped lines first.
    fn allow(&self) -> bool {
        let now = epoch().elapsed().as_millis() as u64;
        let start = self.window_ms.load(Ordering::Relaxed);
        if now.saturating_sub(start) >= WINDOW.as_millis() as u64
            && self
                .window_ms
                .compare_exchange(start, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.lines.store(0, Ordering::Relaxed);
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                log::warn!("{dropped} similar log lines suppressed in the last {WINDOW:?}");
            }
        }
        if self.lines.fetch_add(1, Ordering::Relaxed) < BURST {
            true
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Logs at info level, if the limit allows.
    pub fn info(&self, args: std::fmt::Arguments<'_>) {
        if log::log_enabled!(log::Level::Info) && self.allow() {
            log::info!("{args}");
        }
    }

    /// Logs at warning level, if the limit allows.
    pub fn warn(&self, args: std::fmt::Arguments<'_>) {
        if log::log_enabled!(log::Level::Warn) && self.allow() {
            log::warn!("{args}");
        }
    }
}

/// The peer of a connected socket, for logs and statistics:
/// `127.0.0.1:40312`, `[::1]:40312`, or `unix:pid=77` (from the peer's
/// credentials; a unix peer has no address).
pub fn peer_name(fd: std::os::fd::BorrowedFd<'_>) -> Option<String> {
    use nix::sys::socket::{getpeername, getsockopt, sockopt, SockaddrLike, SockaddrStorage};
    let addr: SockaddrStorage = getpeername(std::os::fd::AsRawFd::as_raw_fd(&fd)).ok()?;
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(format!("{}:{}", v4.ip(), v4.port()));
    }
    if let Some(v6) = addr.as_sockaddr_in6() {
        return Some(format!("[{}]:{}", v6.ip(), v6.port()));
    }
    if addr.family() == Some(nix::sys::socket::AddressFamily::Unix) {
        return match getsockopt(&fd, sockopt::PeerCredentials) {
            Ok(c) => Some(format!("unix:pid={}", c.pid())),
            Err(_) => Some("unix".to_string()),
        };
    }
    None
}
