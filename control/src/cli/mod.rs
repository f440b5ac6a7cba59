//! The `qemu-storage-daemon` compatible command line.
//!
//! * [`keyval`]: QEMU's `key=value,...` syntax (and JSON) to a JSON object.

#![forbid(unsafe_code)]

mod error;
pub mod keyval;

pub use error::CliError;
pub use keyval::{parse_option, ParsedOption};
