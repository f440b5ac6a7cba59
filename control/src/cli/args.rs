//! The `qemu-storage-daemon` command line, parsed the way QSD does it.
//!
//! Like QSD (`getopt_long` plus two passes over the options) parsing
//! happens in two steps: the first walks the arguments in order, so `-h` or
//! `-V` wins over anything later and an unknown option fails at once; the
//! second parses the option values, keeping their order because QSD creates
//! objects, block nodes, exports and monitors in command-line order.
//!
//! Long options take `--opt value` or `--opt=value` and may be abbreviated
//! to any unique prefix (getopt behaviour).  Errors about a value carry the
//! option as typed, e.g. `--blockdev driver=x,foo=1: Parameter 'foo' is
//! unexpected`.

use std::ffi::OsString;
use std::path::PathBuf;

use super::chardev::{parse_chardev, parse_monitor, ChardevOpts, MonitorOpts};
use super::error::CliError;
use super::keyval::{parse_option, ParsedOption};

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum CliCommand {
    /// `-h`/`--help`: print [`help_text`] and exit 0.
    Help,
    /// `-V`/`--version`: print [`version_text`] and exit 0.
    Version,
    /// Start the daemon.
    Run(CliArgs),
}

/// Everything needed to start the daemon.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CliArgs {
    /// Objects, nodes, servers, exports and monitors in command-line order.
    pub items: Vec<CliItem>,
    /// The option as typed (`--blockdev driver=...`) of each item, for
    /// error messages: `locations[i]` belongs to `items[i]`.
    pub locations: Vec<String>,
    pub pidfile: Option<PathBuf>,
    pub daemonize: bool,
    /// Lines to print to stderr as `ringstor: {line}` before starting
    /// (ignored `-T`, deprecated chardev flags), as QSD prints them.
    pub warnings: Vec<String>,
}

/// One ordered item of the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum CliItem {
    /// `--blockdev`, implied key `driver`.
    Blockdev(ParsedOption),
    /// `--object`, implied key `qom-type`.
    Object(ParsedOption),
    /// `--nbd-server`, no implied key.
    NbdServer(ParsedOption),
    /// `--export`, implied key `type`.
    Export(ParsedOption),
    Chardev(ChardevOpts),
    Monitor(MonitorOpts),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Help,
    Version,
    Trace,
    Blockdev,
    Chardev,
    Daemonize,
    Export,
    Monitor,
    NbdServer,
    Object,
    Pidfile,
}

/// QSD's long options: name, whether it takes an argument, meaning.
const LONG_OPTS: &[(&str, bool, Opt)] = &[
    ("blockdev", true, Opt::Blockdev),
    ("chardev", true, Opt::Chardev),
    ("daemonize", false, Opt::Daemonize),
    ("export", true, Opt::Export),
    ("help", false, Opt::Help),
    ("monitor", true, Opt::Monitor),
    ("nbd-server", true, Opt::NbdServer),
    ("object", true, Opt::Object),
    ("pidfile", true, Opt::Pidfile),
    ("trace", true, Opt::Trace),
    ("version", false, Opt::Version),
];

/// An option found by the first pass: what it is, how it was typed (for
/// error messages) and its argument.
struct RawOpt {
    opt: Opt,
    location: String,
    value: String,
}

/// Parse the command line without `argv[0]`.
pub fn parse_args<I: IntoIterator<Item = OsString>>(args: I) -> Result<CliCommand, CliError> {
    let mut args = args.into_iter();
    let mut raw = Vec::new();

    // First pass: recognise options in order.
    while let Some(arg) = args.next() {
        let arg = utf8(arg)?;
        let mut next_value = |name: &str| -> Result<String, CliError> {
            match args.next() {
                Some(v) => utf8(v),
                None => Err(CliError::MissingArgument(name.to_string())),
            }
        };

        if arg == "--" {
            // QSD silently ignores what follows; an error is kinder.
            return match args.next() {
                Some(extra) => Err(CliError::UnexpectedArgument(
                    extra.to_string_lossy().into_owned(),
                )),
                None => Ok(CliCommand::Run(finish(raw)?)),
            };
        } else if let Some(body) = arg.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let (full, takes_arg, opt) = lookup_long(name)?;
            let (location, value) = match (takes_arg, inline) {
                (true, Some(v)) => (arg.clone(), v),
                (true, None) => {
                    let v = next_value(&format!("--{full}"))?;
                    (format!("{arg} {v}"), v)
                }
                (false, Some(_)) => {
                    return Err(CliError::UnexpectedOptionArgument(format!("--{full}")))
                }
                (false, None) => (arg.clone(), String::new()),
            };
            match opt {
                Opt::Help => return Ok(CliCommand::Help),
                Opt::Version => return Ok(CliCommand::Version),
                _ => raw.push(RawOpt {
                    opt,
                    location,
                    value,
                }),
            }
        } else if let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) {
            // QSD's short options either end parsing (-h, -V) or take the
            // rest of the word or the next argument (-T), so only the first
            // letter of a bundle like `-hV` matters.
            let mut chars = cluster.chars();
            match chars.next() {
                Some('h') => return Ok(CliCommand::Help),
                Some('V') => return Ok(CliCommand::Version),
                Some('T') => {
                    let attached = chars.as_str();
                    let (location, value) = if attached.is_empty() {
                        let v = next_value("-T")?;
                        (format!("-T {v}"), v)
                    } else {
                        (format!("-T{attached}"), attached.to_string())
                    };
                    raw.push(RawOpt {
                        opt: Opt::Trace,
                        location,
                        value,
                    });
                }
                Some(other) => return Err(CliError::InvalidShortOption(other)),
                None => return Err(CliError::UnexpectedArgument(arg)),
            }
        } else {
            return Err(CliError::UnexpectedArgument(arg));
        }
    }
    Ok(CliCommand::Run(finish(raw)?))
}

/// Second pass: parse the option values in order.
fn finish(raw: Vec<RawOpt>) -> Result<CliArgs, CliError> {
    let mut out = CliArgs::default();
    for RawOpt {
        opt,
        location,
        value,
    } in raw
    {
        let keyval = |implied: Option<&str>| {
            parse_option(&value, implied).map_err(|e| e.in_option(location.as_str()))
        };
        let item = match opt {
            Opt::Blockdev => CliItem::Blockdev(keyval(Some("driver"))?),
            Opt::Object => CliItem::Object(keyval(Some("qom-type"))?),
            Opt::NbdServer => CliItem::NbdServer(keyval(None)?),
            Opt::Export => CliItem::Export(keyval(Some("type"))?),
            Opt::Chardev => {
                let (chardev, warnings) =
                    parse_chardev(&value).map_err(|e| e.in_option(location.as_str()))?;
                out.warnings
                    .extend(warnings.into_iter().map(|w| format!("{location}: {w}")));
                CliItem::Chardev(chardev)
            }
            Opt::Monitor => {
                CliItem::Monitor(parse_monitor(&value).map_err(|e| e.in_option(location.as_str()))?)
            }
            Opt::Pidfile => {
                // Like QSD, a later --pidfile replaces an earlier one.
                out.pidfile = Some(PathBuf::from(value));
                continue;
            }
            Opt::Daemonize => {
                out.daemonize = true;
                continue;
            }
            Opt::Trace => {
                // Accepted so QSD command lines keep working; ringstor has
                // no QEMU trace events to enable.
                out.warnings.push(format!(
                    "{location}: warning: tracing is not supported, option ignored"
                ));
                continue;
            }
            // Returned from the first pass already.
            Opt::Help | Opt::Version => continue,
        };
        out.items.push(item);
        out.locations.push(location);
    }
    Ok(out)
}

/// Find a long option by exact name or unique prefix, like getopt_long.
fn lookup_long(name: &str) -> Result<(&'static str, bool, Opt), CliError> {
    if let Some(&(full, takes_arg, opt)) = LONG_OPTS.iter().find(|(n, _, _)| *n == name) {
        return Ok((full, takes_arg, opt));
    }
    let mut matches = LONG_OPTS
        .iter()
        .filter(|(n, _, _)| !name.is_empty() && n.starts_with(name));
    match (matches.next(), matches.next()) {
        (Some(&(full, takes_arg, opt)), None) => Ok((full, takes_arg, opt)),
        (Some(_), Some(_)) => Err(CliError::AmbiguousOption(format!("--{name}"))),
        _ => Err(CliError::UnrecognizedOption(format!("--{name}"))),
    }
}

fn utf8(arg: OsString) -> Result<String, CliError> {
    arg.into_string()
        .map_err(|a| CliError::NotUtf8(a.to_string_lossy().into_owned()))
}

/// `ringstor --version` output.
pub fn version_text() -> String {
    format!(
        "ringstor version {}\nA qemu-storage-daemon compatible block export daemon\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// `ringstor --help` output, shaped like QSD's so its users feel at home.
pub fn help_text() -> String {
    "\
Usage: ringstor [options]
ringstor block export daemon (qemu-storage-daemon compatible)

  -h, --help             display this help and exit
  -T, --trace <options>  accepted for compatibility and ignored
  -V, --version          output version information and exit

  --blockdev [driver=]<driver>[,node-name=<N>][,discard=ignore|unmap]
             [,cache.direct=on|off][,cache.no-flush=on|off]
             [,read-only=on|off][,auto-read-only=on|off]
             [,force-share=on|off][,detect-zeroes=on|off|unmap]
             [,driver specific parameters...]
                         configure a block backend

  --chardev socket,id=<id>,path=<path>[,server=on|off][,wait=on|off]
  --chardev socket,id=<id>,host=<host>,port=<port>[,server=on|off]
            [,wait=on|off]
                         configure a character device backend
                         (only the socket backend is supported)

  --daemonize            daemonize the process, and have the parent exit
                         once startup is complete

  --export [type=]nbd,id=<id>,node-name=<node-name>[,name=<export-name>]
           [,writable=on|off][,bitmap=<name>]
                         export the specified block node over NBD
                         (requires --nbd-server)

  --monitor [chardev=]name[,mode=control][,pretty=on|off]
                         configure a QMP monitor

  --nbd-server addr.type=inet,addr.host=<host>,addr.port=<port>
               [,tls-creds=<id>][,tls-authz=<id>][,max-connections=<n>]
  --nbd-server addr.type=unix,addr.path=<path>
               [,tls-creds=<id>][,tls-authz=<id>][,max-connections=<n>]
                         start an NBD server for exporting block nodes

  --object <type>[,<property>=<value>...]
                         create a new object of type <type>, setting
                         properties in the order they are specified. Note
                         that the 'id' property must be set.

  --pidfile <path>       write process ID to a file after startup

Every option taking a value also accepts it as a JSON object, e.g.
  --blockdev '{\"driver\":\"file\",\"node-name\":\"f\",\"filename\":\"disk.img\"}'
"
    .to_string()
}

#[cfg(test)]
mod tests;
