//! The descriptors the daemon was started with, and systemd's names for
//! them.
//!
//! A launcher (a libvirt-style manager, a container runtime, a test) may
//! create a listening socket and hand it over as an open descriptor;
//! systemd socket activation does the same and says so in the environment:
//! `LISTEN_PID` (the process meant), `LISTEN_FDS` (how many, from 3 up) and
//! `LISTEN_FDNAMES` (colon-separated names), as `sd_listen_fds_with_names`
//! reads them. [`init`] records them once, before the daemon opens
//! anything; an `fd` address then claims one by number or by name, exactly
//! once, and the claimer owns (and eventually closes) it.
//!
//! Only descriptors 3 and up count: 0 to 2 are the standard streams, which
//! `--daemonize` points at `/dev/null`.

use std::os::fd::{OwnedFd, RawFd};
use std::sync::Mutex;

use super::fd::{scan_inherited, Unowned};

/// The first descriptor systemd passes.
const FIRST_ACTIVATION_FD: RawFd = 3;

/// systemd's name for a descriptor `LISTEN_FDNAMES` does not name.
const UNNAMED: &str = "unknown";

/// Why an `fd` address does not name a descriptor we may take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    /// Not a number (and no socket-activation name matched).
    #[error("Unable to parse FD number {0}")]
    Parse(String),
    /// A number beyond `int`.
    #[error("Unable to parse FD number {0}: Numerical result out of range")]
    Range(String),
    /// Not an inherited descriptor, or not a socket.
    #[error("File descriptor '{0}' is not a socket")]
    NotSocket(String),
    /// Already taken by another server.
    #[error("File descriptor '{0}' is already in use")]
    InUse(String),
    /// No descriptor of that name.
    #[error("File descriptor named '{0}' has not been found")]
    NotFound(String),
}

#[derive(Debug)]
struct Entry {
    fd: Unowned,
    /// The socket-activation name, for descriptors systemd passed.
    name: Option<String>,
}

#[derive(Debug, Default)]
struct Table {
    entries: Vec<Entry>,
    /// Numbers and names already claimed, for a clear error.
    claimed: Vec<(RawFd, Option<String>)>,
    activation: bool,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);

fn with_table<R>(f: impl FnOnce(&mut Table) -> R) -> R {
    let mut t = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    f(t.get_or_insert_with(Table::default))
}

/// Records the inherited descriptors and takes socket activation from the
/// environment, once, before the process opens descriptors of its own or
/// starts threads (it clears the `LISTEN_*` variables, so that children do
/// not inherit them). `parent` is a pid that may also be `LISTEN_PID`: the
/// `--daemonize` parent re-executes the daemon, so systemd named the
/// parent. Returns the socket-activation names (empty without activation).
pub fn init(parent: Option<u32>) -> Vec<String> {
    let mut pids = vec![std::process::id()];
    pids.extend(parent);
    let names = take_activation_env(&pids);
    let mut entries: Vec<Entry> = scan_inherited()
        .into_iter()
        .map(|fd| Entry { fd, name: None })
        .collect();
    let names = names.unwrap_or_default();
    for (i, name) in names.iter().enumerate() {
        let raw = FIRST_ACTIVATION_FD + i as RawFd;
        match entries.iter_mut().find(|e| e.fd.raw() == raw) {
            Some(e) => e.name = Some(name.clone()),
            None => log::warn!("socket activation: descriptor {raw} ({name}) is not open"),
        }
    }
    with_table(|t| {
        t.entries = entries;
        t.activation = !names.is_empty();
    });
    names
}

/// Reads and clears the socket-activation variables (whoever they were
/// meant for, as `sd_listen_fds(1)` does); the names if they are ours.
fn take_activation_env(pids: &[u32]) -> Option<Vec<String>> {
    let get = |k: &str| std::env::var(k).ok();
    let names = parse_activation(
        get("LISTEN_PID").as_deref(),
        get("LISTEN_FDS").as_deref(),
        get("LISTEN_FDNAMES").as_deref(),
        pids,
    );
    for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(k);
    }
    names
}

/// The descriptors socket activation passes, with their names, if the
/// variables are meant for one of `pids`: `None` otherwise (as
/// `sd_listen_fds` ignores them).
fn parse_activation(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    fdnames: Option<&str>,
    pids: &[u32],
) -> Option<Vec<String>> {
    let pid: u32 = listen_pid?.trim().parse().ok()?;
    if !pids.contains(&pid) {
        return None;
    }
    let n: usize = listen_fds?.trim().parse().ok()?;
    // More than the descriptor table could hold is a broken environment.
    if n == 0 || n > 65536 {
        return None;
    }
    let mut names: Vec<String> = fdnames
        .map(|s| s.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    names.resize(n, UNNAMED.to_string());
    for name in &mut names {
        if name.is_empty() {
            *name = UNNAMED.to_string();
        }
    }
    Some(names)
}

/// Whether socket activation passed descriptors.
pub fn has_activation() -> bool {
    with_table(|t| t.activation)
}

/// The socket-activation names not claimed yet.
pub fn unclaimed_names() -> Vec<String> {
    with_table(|t| t.entries.iter().filter_map(|e| e.name.clone()).collect())
}

/// QEMU's `qemu_strtoi(.., 10, ..)`: leading white space and a sign are
/// allowed, anything after the digits is not.
pub fn parse_fd_number(text: &str) -> Result<i32, ClaimError> {
    let t = text.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ClaimError::Parse(text.to_string()));
    }
    match t.parse::<i64>() {
        Ok(n) => i32::try_from(n).map_err(|_| ClaimError::Range(text.to_string())),
        // Only overflow is left: the syntax was checked above.
        Err(_) => Err(ClaimError::Range(text.to_string())),
    }
}

/// Takes the inherited descriptor `text` names by number (`fd=3`,
/// `addr.str=3`).
pub fn claim_number(text: &str) -> Result<OwnedFd, ClaimError> {
    let n = parse_fd_number(text)?;
    with_table(|t| {
        let Some(i) = t.entries.iter().position(|e| e.fd.raw() == n) else {
            if t.claimed.iter().any(|(raw, _)| *raw == n) {
                return Err(ClaimError::InUse(text.to_string()));
            }
            return Err(ClaimError::NotSocket(text.to_string()));
        };
        t.take(i, text)
    })
}

/// Takes the socket-activation descriptor named `name`; `None` if no
/// descriptor was ever passed under that name.
pub fn claim_name(name: &str) -> Option<Result<OwnedFd, ClaimError>> {
    with_table(|t| {
        let Some(i) = t
            .entries
            .iter()
            .position(|e| e.name.as_deref() == Some(name))
        else {
            return t
                .claimed
                .iter()
                .any(|(_, n)| n.as_deref() == Some(name))
                .then(|| Err(ClaimError::InUse(name.to_string())));
        };
        Some(t.take(i, name))
    })
}

/// Returns a claimed descriptor that turned out unsuitable, open, so that
/// the same claim fails the same way again rather than finding it closed.
pub fn give_back(fd: OwnedFd) {
    let fd = Unowned::give_back(fd);
    with_table(|t| {
        let name = t
            .claimed
            .iter()
            .position(|(raw, _)| *raw == fd.raw())
            .and_then(|i| t.claimed.remove(i).1);
        t.entries.push(Entry { fd, name });
    });
}

impl Table {
    fn take(&mut self, i: usize, shown: &str) -> Result<OwnedFd, ClaimError> {
        if !self.entries[i].fd.is_socket() {
            return Err(ClaimError::NotSocket(shown.to_string()));
        }
        let e = self.entries.remove(i);
        let raw = e.fd.raw();
        match e.fd.adopt() {
            Ok(fd) => {
                self.claimed.push((raw, e.name));
                Ok(fd)
            }
            // Closed and reused behind our back: no longer ours to take.
            Err(_) => Err(ClaimError::NotSocket(shown.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_needs_our_pid() {
        let n = parse_activation(Some("42"), Some("2"), Some("nbd:qmp"), &[42]);
        assert_eq!(n, Some(vec!["nbd".to_string(), "qmp".to_string()]));
        assert_eq!(
            parse_activation(Some("41"), Some("2"), None, &[42, 7]),
            None
        );
        assert_eq!(
            parse_activation(Some("7"), Some("1"), None, &[42, 7]),
            Some(vec![UNNAMED.to_string()])
        );
        assert_eq!(parse_activation(None, Some("1"), None, &[42]), None);
        assert_eq!(parse_activation(Some("42"), Some("x"), None, &[42]), None);
        assert_eq!(parse_activation(Some("42"), Some("0"), None, &[42]), None);
    }

    #[test]
    fn activation_variables_are_cleared() {
        // No other test in this crate reads these variables.
        std::env::set_var("LISTEN_PID", "4242");
        std::env::set_var("LISTEN_FDS", "2");
        std::env::set_var("LISTEN_FDNAMES", "nbd:qmp");
        assert_eq!(
            take_activation_env(&[4242]),
            Some(vec!["nbd".to_string(), "qmp".to_string()])
        );
        for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            assert!(std::env::var_os(k).is_none(), "{k} left set");
        }
        // Meant for another process: ignored, and cleared all the same.
        std::env::set_var("LISTEN_PID", "1");
        std::env::set_var("LISTEN_FDS", "1");
        assert_eq!(take_activation_env(&[4242]), None);
        assert!(std::env::var_os("LISTEN_FDS").is_none());
    }

    #[test]
    fn activation_names_fill_in() {
        let n = parse_activation(Some("1"), Some("3"), Some("a::"), &[1]);
        assert_eq!(
            n,
            Some(vec!["a".to_string(), UNNAMED.into(), UNNAMED.into()])
        );
        // Extra names are ignored.
        let n = parse_activation(Some("1"), Some("1"), Some("a:b"), &[1]);
        assert_eq!(n, Some(vec!["a".to_string()]));
    }

    #[test]
    fn fd_numbers_parse_like_qemu_strtoi() {
        assert_eq!(parse_fd_number("3"), Ok(3));
        assert_eq!(parse_fd_number(" 3"), Ok(3));
        assert_eq!(parse_fd_number("-1"), Ok(-1));
        assert_eq!(parse_fd_number("+4"), Ok(4));
        for bad in ["", "abc", "3x", "3 ", "-", " "] {
            assert_eq!(
                parse_fd_number(bad),
                Err(ClaimError::Parse(bad.to_string())),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_fd_number("2147483648").map_err(|e| e.to_string()),
            Err("Unable to parse FD number 2147483648: Numerical result out of range".into())
        );
    }
}
