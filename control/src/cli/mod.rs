//! The `qemu-storage-daemon` compatible command line.
//!
//! * [`keyval`]: QEMU's `key=value,...` syntax (and JSON) to a JSON object.
//! * [`coerce`]: typed deserialization of those objects with QEMU's
//!   string-to-type rules and error wording.
//! * [`chardev`]: the legacy QemuOpts syntax `--chardev` still uses.

#![forbid(unsafe_code)]

pub mod chardev;
pub mod coerce;
mod error;
pub mod keyval;

pub use chardev::{ChardevOpts, MonitorOpts};
pub use coerce::{deserialize_size, from_keyval, from_option, from_strict};
pub use error::CliError;
pub use keyval::{parse_option, ParsedOption};
