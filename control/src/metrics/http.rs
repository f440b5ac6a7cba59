//! A minimal HTTP/1.x server for scrapes, on one thread, that a hostile
//! client cannot tie up.
//!
//! One `poll(2)` loop over the listener and every client, all
//! non-blocking: a client that connects and sends nothing, sends
//! garbage, or sends its request a byte at a time only holds a slot until
//! its deadline ([`HEAD_TIMEOUT`]), and never delays another client,
//! because nothing ever waits on one client. At most [`MAX_CLIENTS`] are
//! held; a new connection beyond that evicts the oldest. A request head
//! over [`MAX_HEAD`] bytes gets `431`, anything that is not
//! `GET`/`HEAD /metrics` gets `400`, `404` or `405`; every response
//! closes the connection (`Connection: close`), and one a client does
//! not read is dropped after [`WRITE_TIMEOUT`].
//!
//! Why not a crate: the HTTP crates here either bring an async runtime
//! (hyper, axum) or a thread per connection with blocking reads
//! (tiny_http), which a slow client can exhaust; a scrape endpoint needs
//! one method on one path.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Longest time to receive a request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest time to send a response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients held at once.
pub const MAX_CLIENTS: usize = 64;
/// Largest request head read.
pub const MAX_HEAD: usize = 8192;

/// A listening socket, TCP or unix.
pub enum Listener {
    /// TCP.
    Tcp(std::net::TcpListener),
    /// A unix socket.
    Unix(std::os::unix::net::UnixListener),
}

enum Stream {
    Tcp(std::net::TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(b),
            Stream::Unix(s) => s.read(b),
        }
    }
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(b),
            Stream::Unix(s) => s.write(b),
        }
    }
}

impl Listener {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }

    fn accept(&self) -> std::io::Result<Stream> {
        let s = match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(true)?;
                Stream::Tcp(s)
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(true)?;
                Stream::Unix(s)
            }
        };
        Ok(s)
    }
}

struct Client {
    stream: Stream,
    head: Vec<u8>,
    /// The response, once the head is in.
    out: Option<Vec<u8>>,
    sent: usize,
    since: Instant,
    deadline: Instant,
}

/// What the loop serves: the body of `GET /metrics`.
pub trait Scraper {
    /// The OpenMetrics text.
    fn scrape(&mut self) -> String;
}

/// `Content-Type` of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn response(status: &str, ctype: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        r.extend_from_slice(body);
    }
    r
}

fn plain(status: &str) -> Vec<u8> {
    let body = format!("{status}\n");
    response(status, "text/plain; charset=utf-8", body.as_bytes(), false)
}

/// The response to a complete request head.
fn answer(head: &[u8], scraper: &mut dyn Scraper) -> Vec<u8> {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return plain("400 Bad Request");
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return plain("400 Bad Request");
    };
    if !version.starts_with("HTTP/1.") {
        return plain("400 Bad Request");
    }
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" && path != "/" {
        return plain("404 Not Found");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return plain("405 Method Not Allowed"),
    };
    let body = scraper.scrape();
    response("200 OK", CONTENT_TYPE, body.as_bytes(), head_only)
}

fn head_complete(b: &[u8]) -> bool {
    b.windows(4).any(|w| w == b"\r\n\r\n") || b.windows(2).any(|w| w == b"\n\n")
}

/// Serves `listener` until a byte arrives on `wake` (or it closes).
pub fn serve(listener: Listener, wake: UnixStream, scraper: &mut dyn Scraper) {
    let mut clients: Vec<Client> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let now = Instant::now();
        let next = clients.iter().map(|c| c.deadline).min();
        let wait = next.map_or(Duration::from_secs(1), |d| {
            d.saturating_duration_since(now).min(Duration::from_secs(1))
        });
        let (wake_ev, listen_ev, client_ev) = {
            let mut fds = Vec::with_capacity(clients.len() + 2);
            fds.push(PollFd::new(wake.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(listener.fd(), PollFlags::POLLIN));
            for c in &clients {
                let want = if c.out.is_some() {
                    PollFlags::POLLOUT
                } else {
                    PollFlags::POLLIN
                };
                fds.push(PollFd::new(c.stream.fd(), want));
            }
            let ms = u16::try_from(wait.as_millis().max(1)).unwrap_or(1000);
            if let Err(e) = poll(&mut fds, PollTimeout::from(ms)) {
                if e != nix::errno::Errno::EINTR {
                    log::error!("metrics: poll failed: {e}; stopping");
                    return;
                }
            }
            let ev = |f: &PollFd| f.revents().unwrap_or(PollFlags::empty());
            (
                ev(&fds[0]),
                ev(&fds[1]),
                fds[2..].iter().map(ev).collect::<Vec<_>>(),
            )
        };
        if !wake_ev.is_empty() {
            return;
        }
        for (c, ev) in clients.iter_mut().zip(client_ev) {
            if ev.is_empty() {
                continue;
            }
            step(c, ev, &mut buf, scraper);
        }
        let now = Instant::now();
        clients.retain(|c| c.deadline > now && c.out.as_ref().is_none_or(|o| c.sent < o.len()));
        if listen_ev.contains(PollFlags::POLLIN) {
            accept_all(&listener, &mut clients, now);
        }
    }
}

fn accept_all(listener: &Listener, clients: &mut Vec<Client>, now: Instant) {
    loop {
        match listener.accept() {
            Ok(stream) => {
                if clients.len() >= MAX_CLIENTS {
                    // Evict the oldest: a flood cannot lock out new scrapers.
                    if let Some(i) = (0..clients.len()).min_by_key(|&i| clients[i].since) {
                        clients.swap_remove(i);
                    }
                }
                clients.push(Client {
                    stream,
                    head: Vec::new(),
                    out: None,
                    sent: 0,
                    since: now,
                    deadline: now + HEAD_TIMEOUT,
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                log::debug!("metrics: accept: {e}");
                return;
            }
        }
    }
}

/// Reads or writes what one client is ready for; sets its deadline to
/// now when it is done or broken.
fn step(c: &mut Client, ev: PollFlags, buf: &mut [u8], scraper: &mut dyn Scraper) {
    let done = Instant::now();
    if let Some(out) = &c.out {
        match c.stream.write(&out[c.sent..]) {
            Ok(n) => c.sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => c.deadline = done,
        }
        return;
    }
    if ev.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL) {
        c.deadline = done;
        return;
    }
    match c.stream.read(buf) {
        Ok(0) => c.deadline = done,
        Ok(n) => {
            c.head.extend_from_slice(&buf[..n]);
            let reply = if c.head.len() > MAX_HEAD {
                Some(plain("431 Request Header Fields Too Large"))
            } else if head_complete(&c.head) {
                Some(answer(&c.head, scraper))
            } else {
                None
            };
            if let Some(r) = reply {
                c.out = Some(r);
                c.deadline = Instant::now() + WRITE_TIMEOUT;
                // Most responses fit the socket buffer: try at once.
                step(c, PollFlags::POLLOUT, buf, scraper);
            }
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
        Err(_) => c.deadline = done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Scraper for Fixed {
        fn scrape(&mut self) -> String {
            "# EOF\n".into()
        }
    }

    fn ask(head: &str) -> String {
        String::from_utf8(answer(head.as_bytes(), &mut Fixed)).unwrap_or_default()
    }

    #[test]
    fn answers_by_method_and_path() {
        let ok = ask("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains(CONTENT_TYPE) && ok.ends_with("# EOF\n"), "{ok}");
        let head = ask("HEAD /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert!(head.contains("Content-Length: 6\r\n") && head.ends_with("\r\n\r\n"));
        assert!(ask("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(ask("GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(ask("\u{1}\u{2}garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
        assert!(ask("GET /metrics SPDY/3\r\n\r\n").starts_with("HTTP/1.1 400"));
    }
}
