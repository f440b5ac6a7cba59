//! The `qemu-storage-daemon` compatible command line.
//!
//! * [`keyval`]: QEMU's `key=value,...` syntax (and JSON) to a JSON object.
//! * [`coerce`]: typed deserialization of those objects with QEMU's
//!   string-to-type rules and error wording.
//! * [`args`]: the full QSD option set, in command-line order.
//! * [`chardev`]: the legacy QemuOpts syntax `--chardev` still uses.

#![forbid(unsafe_code)]

pub mod args;
pub mod chardev;
pub mod coerce;
mod error;
pub mod keyval;

pub use args::{help_text, parse_args, version_text, CliArgs, CliCommand, CliItem};
pub use chardev::{ChardevOpts, MonitorOpts};
pub use coerce::{deserialize_size, from_keyval, from_option, from_strict};
pub use error::CliError;
pub use keyval::{parse_option, ParsedOption};
