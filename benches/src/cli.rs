//! Command-line options of `ringstor-bench` (hand-parsed: no dependencies).

use crate::error::{Error, Result};
use crate::jobs::Mode;
use crate::servers::ServerKind;
use std::path::PathBuf;

/// Usage text.
pub const USAGE: &str = "\
ringstor-bench [--short|--full] [--out DIR | --name NAME] [options]

Runs the same fio jobs against ringstor, qemu-storage-daemon, nbdkit and
qemu-nbd over NBD (unix sockets) and writes results.md, results.json and
ratios.svg into DIR (default benches/results/<UTC timestamp>).

  --short               3 x 3 s repeats, 1 GiB image, O_DIRECT subset (default; < 10 min)
  --full                5 x 10 s repeats, 4 GiB image, all jobs in all scenarios
  --out DIR             results directory
  --name NAME           results directory benches/results/NAME
  --tmp DIR             base of the scratch directory (image, sockets, logs;
                        default benches/results/tmp); removed at the end
  --ringstor-bin PATH   ringstor binary (else $RINGSTOR_BIN, else target/release/ringstor)
  --servers LIST        comma list of ringstor,qsd,nbdkit,qemu-nbd (default all)
  --scenarios LIST      comma list of page-cache,direct,null,null-write-bitmap
                        (default all; --short leaves out null-write-bitmap)
  --jobs LIST           comma list of job ids (default all)
  --repeats N  --runtime SECONDS  --ramp SECONDS  --image-mib MIB   override the mode
  --pin-server CPUS     run servers under taskset -c CPUS (default: no pinning)
  --pin-fio CPUS        run fio under taskset -c CPUS (default: no pinning)
  --hog CPUS            run a busy loop pinned to CPUS (taskset) for the whole run
  --transport T         nbd (default), nbd-2t (ringstor's export on 2 iothreads), vhost-user-blk (1 queue, 1 iothread) or
                        vhost-user-blk-2q (2 queues; ringstor on 2 iothreads),
                        driven by ringstor-vu-load (libblkio) instead of fio;
                        or fuse: the image mounted on a file, fio io_uring
                        direct=1, ringstor in its four FUSE configurations
                        (scenarios fuse-{uring,dev}-{1,2}io) against QSD
";

/// Parsed options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Short or full.
    pub mode: Mode,
    /// Results directory.
    pub out: Option<PathBuf>,
    /// Results directory name under benches/results.
    pub name: Option<String>,
    /// Scratch base.
    pub tmp: Option<PathBuf>,
    /// ringstor binary.
    pub ringstor_bin: Option<PathBuf>,
    /// Servers to run.
    pub servers: Vec<ServerKind>,
    /// Scenario filter.
    pub scenarios: Option<Vec<String>>,
    /// Job filter.
    pub jobs: Option<Vec<String>>,
    /// Overrides.
    pub repeats: Option<u32>,
    /// Overrides.
    pub runtime: Option<u32>,
    /// Overrides.
    pub ramp: Option<u32>,
    /// Overrides.
    pub image_mib: Option<u64>,
    /// taskset CPU list for servers.
    pub pin_server: Option<String>,
    /// taskset CPU list for fio.
    pub pin_fio: Option<String>,
    /// `--help` was asked.
    pub help: bool,
    /// `--transport`.
    pub transport: String,
    /// `--hog`: CPUs of a busy loop running beside the servers.
    pub hog: Option<String>,
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T> {
    v.parse()
        .map_err(|_| Error::msg(format!("{flag}: not a number: {v}")))
}

/// Parse arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options> {
    let mut o = Options {
        mode: Mode::Short,
        out: None,
        name: None,
        tmp: None,
        ringstor_bin: None,
        servers: ServerKind::ALL.to_vec(),
        scenarios: None,
        jobs: None,
        repeats: None,
        runtime: None,
        ramp: None,
        image_mib: None,
        pin_server: None,
        pin_fio: None,
        help: false,
        transport: "nbd".into(),
        hog: None,
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| Error::msg(format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--short" => o.mode = Mode::Short,
            "--full" => o.mode = Mode::Full,
            "-h" | "--help" => o.help = true,
            "--out" => o.out = Some(value()?.into()),
            "--name" => o.name = Some(value()?),
            "--tmp" => o.tmp = Some(value()?.into()),
            "--ringstor-bin" => o.ringstor_bin = Some(value()?.into()),
            "--servers" => {
                o.servers = list(&value()?)
                    .iter()
                    .map(|s| {
                        ServerKind::from_id(s)
                            .ok_or_else(|| Error::msg(format!("unknown server {s}")))
                    })
                    .collect::<Result<_>>()?
            }
            "--scenarios" => o.scenarios = Some(list(&value()?)),
            "--jobs" => o.jobs = Some(list(&value()?)),
            "--repeats" => o.repeats = Some(number(&flag, &value()?)?),
            "--runtime" => o.runtime = Some(number(&flag, &value()?)?),
            "--ramp" => o.ramp = Some(number(&flag, &value()?)?),
            "--image-mib" => o.image_mib = Some(number(&flag, &value()?)?),
            "--pin-server" => o.pin_server = Some(value()?),
            "--pin-fio" => o.pin_fio = Some(value()?),
            "--transport" => o.transport = value()?,
            "--hog" => o.hog = Some(value()?),
            other => return Err(Error::msg(format!("unknown option {other}\n\n{USAGE}"))),
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> Result<Options> {
        parse(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_flags() {
        let o = p(&[]).unwrap();
        assert_eq!(o.mode, Mode::Short);
        assert_eq!(o.servers.len(), 4);
        let o = p(&[
            "--full",
            "--servers",
            "qsd,nbdkit",
            "--repeats",
            "2",
            "--out",
            "/x",
        ])
        .unwrap();
        assert_eq!(o.mode, Mode::Full);
        assert_eq!(o.servers, vec![ServerKind::Qsd, ServerKind::Nbdkit]);
        assert_eq!(o.repeats, Some(2));
        assert_eq!(o.out, Some(PathBuf::from("/x")));
    }

    #[test]
    fn errors_are_clear() {
        assert!(p(&["--bogus"])
            .unwrap_err()
            .to_string()
            .contains("unknown option --bogus"));
        assert!(p(&["--out"])
            .unwrap_err()
            .to_string()
            .contains("--out needs a value"));
        assert!(p(&["--servers", "xx"]).is_err());
        assert!(p(&["--repeats", "x"]).is_err());
    }
}
