//! The single error type of the command-line layer.
//!
//! Messages copy the wording `qemu-storage-daemon` prints (checked against
//! QSD 10.0), because scripts and humans driving ringstor "exactly like QSD"
//! read them.  Each variant renders as one line; the option that failed is
//! prepended by [`CliError::InOption`], so the binary only has to print
//! `ringstor: {error}` and exit 1.

use thiserror::Error;

/// Why a command line, a keyval string or a typed option was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CliError {
    /// A key is not a valid QAPI name / index path (also the empty key).
    #[error("Invalid parameter '{0}'")]
    InvalidParameter(String),
    /// A key fragment exceeds QEMU's 127 character limit.
    #[error("Parameter '{0}' is too long")]
    ParameterTooLong(String),
    /// `key` without `=value` where no implied key applies.
    #[error("Expected '=' after parameter '{0}'")]
    ExpectedEquals(String),
    /// The same key is used both as a leaf and as an object/array, e.g.
    /// `a.b=1,a=2`.  The payload is the key prefix that is both (`a`).
    #[error("Parameters '{0}.*' used inconsistently")]
    UsedInconsistently(String),
    /// An array has a gap, e.g. `a.1=x` without `a.0`.
    #[error("Parameter '{0}' missing")]
    MissingIndex(String),
    /// The same leaf is set twice (ringstor rejects what QEMU lets the last
    /// one win, because silently dropping a setting hides typos).
    #[error("Parameter '{0}' is set more than once")]
    Duplicate(String),
    /// The JSON form did not parse.
    #[error("JSON parse error, {0}")]
    Json(String),
    /// The JSON form was followed by more text.
    #[error("Expecting at most one JSON value")]
    JsonTrailing,
    /// A value has the wrong JSON type (strict mode or non-leaf mismatch).
    #[error("Invalid parameter type for '{name}', expected: {expected}")]
    InvalidType { name: String, expected: String },
    /// A keyval boolean that is none of on/off/yes/no/true/false/y/n.
    #[error("Parameter '{0}' expects 'on' or 'off'")]
    ExpectsBool(String),
    /// A keyval integer that does not parse or is out of range.
    #[error("Parameter '{0}' expects integer")]
    ExpectsInt(String),
    /// A keyval floating point number that does not parse.
    #[error("Parameter '{0}' expects number")]
    ExpectsNumber(String),
    /// A keyval size that does not parse (see `coerce::parse_size`).
    #[error("Parameter '{0}' expects size")]
    ExpectsSize(String),
    /// A member the target type does not know.
    #[error("Parameter '{0}' is unexpected")]
    Unexpected(String),
    /// A mandatory member is absent.
    #[error("Parameter '{0}' is missing")]
    Missing(String),
    /// An enum member got a value outside its set.
    #[error("Parameter '{name}' does not accept value '{value}'")]
    BadValue { name: String, value: String },
    /// A chardev/monitor/id value that is not an identifier.
    #[error("Parameter '{0}' expects an identifier")]
    ExpectsIdentifier(String),
    /// Free-form message (serde `custom`, chardev semantics, ...).
    #[error("{0}")]
    Message(String),
    /// `--foo` that QSD does not know.
    #[error("unrecognized option '{0}'")]
    UnrecognizedOption(String),
    /// An abbreviated long option matching several options.
    #[error("option '{0}' is ambiguous")]
    AmbiguousOption(String),
    /// `-x` that QSD does not know.
    #[error("invalid option -- '{0}'")]
    InvalidShortOption(char),
    /// An option that takes an argument came last.
    #[error("option '{0}' requires an argument")]
    MissingArgument(String),
    /// A flag option given `=value`.
    #[error("option '{0}' doesn't allow an argument")]
    UnexpectedOptionArgument(String),
    /// A positional argument; QSD takes none.
    #[error("{0}: Unexpected argument")]
    UnexpectedArgument(String),
    /// An argument that is not valid UTF-8.
    #[error("argument is not valid UTF-8: {0}")]
    NotUtf8(String),
    /// Wraps an error with the option text as typed, like QSD's
    /// `--blockdev driver=x,foo=1: Parameter 'foo' is unexpected`.
    #[error("{option}: {source}")]
    InOption {
        option: String,
        source: Box<CliError>,
    },
}

impl CliError {
    /// True for getopt's own errors, which QEMU prints behind `argv[0]` as
    /// given rather than behind the program name.
    pub fn is_getopt(&self) -> bool {
        matches!(
            self,
            CliError::UnrecognizedOption(_)
                | CliError::AmbiguousOption(_)
                | CliError::InvalidShortOption(_)
                | CliError::MissingArgument(_)
                | CliError::UnexpectedOptionArgument(_)
        )
    }

    /// Attach the option text (`--blockdev driver=...`) to an error.
    pub fn in_option(self, option: impl Into<String>) -> CliError {
        CliError::InOption {
            option: option.into(),
            source: Box::new(self),
        }
    }

    /// The innermost error, without the option location.
    pub fn root(&self) -> &CliError {
        match self {
            CliError::InOption { source, .. } => source.root(),
            other => other,
        }
    }
}
