//! A minimal `log` backend: one line per record on stderr, level from
//! `RINGSTOR_LOG` (`error`..`trace`, default `warn`).

use std::io::Write;

struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        // fuser only mounts for the FUSE export, which unmounts by itself:
        // fuser's own unmount at drop then fails, and says so at warn.
        if m.target().starts_with("fuser") {
            return m.level() <= log::Level::Error && m.level() <= log::max_level();
        }
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            // A closed stderr must not take the daemon down.
            let _ = writeln!(std::io::stderr(), "ringstor: {}: {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Installs the logger (once; later calls are harmless).
pub fn init() {
    let level = std::env::var("RINGSTOR_LOG")
        .ok()
        .and_then(|v| v.parse::<log::LevelFilter>().ok())
        .unwrap_or(log::LevelFilter::Warn);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
