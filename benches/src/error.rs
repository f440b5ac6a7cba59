//! Error type of the harness: a human-readable message that gathers context
//! as it travels up ("starting qsd: socket ... did not appear: ..."). The
//! harness is a command-line tool, so a message is all a caller needs.

use std::fmt;

/// An error with its context chain already rendered into one message.
#[derive(Debug)]
pub struct Error(String);

/// Result alias used throughout the harness.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A new error from a message.
    pub fn msg(msg: impl fmt::Display) -> Self {
        Error(msg.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error(format!("JSON: {e}"))
    }
}

/// Adds context to any displayable error.
pub trait Context<T> {
    /// Prefix the error with `what` ("what: cause").
    fn context(self, what: impl fmt::Display) -> Result<T>;
    /// Like [`Context::context`], with the message built lazily.
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error(format!("{what}: {e}")))
    }
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error(format!("{}: {e}", what())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_prefixes_cause() {
        let r: std::result::Result<(), &str> = Err("boom");
        let e = r.context("starting qsd").unwrap_err();
        assert_eq!(e.to_string(), "starting qsd: boom");
    }
}
