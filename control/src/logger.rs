//! A minimal `log` backend: one line per record on stderr, level from
//! `RINGSTOR_LOG` (`error`..`trace`, default `warn`).

use std::io::Write;

struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
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
