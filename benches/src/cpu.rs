//! Server CPU accounting from `/proc/<pid>/stat`.
//!
//! `utime` + `stime` of a process are the totals over all of its threads,
//! including threads that already exited, which is what "CPU the server
//! spent" should mean for multi-threaded servers (nbdkit's worker threads,
//! QSD's iothread, ringstor's cores). Sampled before and after each fio run.

use crate::error::{Context, Error, Result};
use std::process::Command;

/// Clock ticks per second (`getconf CLK_TCK`), 100 when it cannot be asked.
pub fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// `utime + stime` in clock ticks from the text of `/proc/<pid>/stat`.
///
/// The command name (field 2) is in parentheses and may itself contain
/// spaces or parentheses, so fields are counted after the *last* `)`.
pub fn parse_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    // After ")": field 3 (state) is index 0, so utime (14) is 11, stime (15) is 12.
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds (user + system, all threads) the process has used so far.
pub fn process_cpu_seconds(pid: u32, ticks_per_sec: f64) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_stat(&text).ok_or_else(|| Error::msg(format!("cannot parse {path}")))?;
    Ok(ticks as f64 / ticks_per_sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utime_and_stime_after_tricky_comm() {
        let line =
            "1234 (qemu (x) d) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1 2 3";
        assert_eq!(parse_stat(line), Some(325));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_stat("nothing here"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn reads_own_process() {
        let t = clock_ticks_per_sec();
        let s = process_cpu_seconds(std::process::id(), t);
        assert!(s.is_ok_and(|v| v >= 0.0));
    }
}
