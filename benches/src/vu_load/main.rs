//! `ringstor-vu-load`: a load generator for vhost-user-blk exports, built
//! on libblkio's Rust core (`blkio` crate, driver `virtio-blk-vhost-user`),
//! because Debian's fio has no libblkio engine.
//!
//! It takes the fio options the harness passes (`--rw --bs --iodepth
//! --numjobs --runtime --rwmixread`, `--output` optional as in fio, the rest
//! ignored) plus
//! `--vu-socket=PATH` and `--vu-queues=N`, and writes the subset of fio's
//! JSON the harness reads (one "mixed" group: IOPS, bandwidth, I/O count,
//! total-latency percentiles from an HdrHistogram), so every row of a
//! vhost-user-blk run goes through the same parsing, statistics and report
//! as fio's. Each thread owns one virtqueue and keeps `iodepth` requests
//! in flight on it.

mod load;

use load::{Pattern, Spec};
use std::path::PathBuf;
use std::time::Duration;

fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mul) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (&s[..], 1),
    };
    num.parse::<usize>().ok().map(|n| n * mul)
}

fn run() -> Result<(), String> {
    let mut spec = Spec::default();
    let mut output: Option<PathBuf> = None;
    let mut queues = 1usize;
    let mut rwmixread = 50u32;
    let mut rw = String::from("randread");
    for a in std::env::args().skip(1) {
        let Some(rest) = a.strip_prefix("--") else {
            return Err(format!("unexpected argument {a}"));
        };
        let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
        let bad = || format!("bad value for --{k}: {v}");
        match k {
            "rw" => rw = v.to_string(),
            "bs" => spec.block_size = parse_size(v).ok_or_else(bad)?,
            "iodepth" => spec.iodepth = v.parse().map_err(|_| bad())?,
            "numjobs" => spec.threads = v.parse().map_err(|_| bad())?,
            "runtime" => spec.runtime = Duration::from_secs(v.parse().map_err(|_| bad())?),
            "rwmixread" => rwmixread = v.parse().map_err(|_| bad())?,
            "output" => output = Some(PathBuf::from(v)),
            "vu-socket" => spec.socket = PathBuf::from(v),
            "vu-queues" => queues = v.parse().map_err(|_| bad())?,
            "name" => spec.name = v.to_string(),
            // fio options with no meaning here (reporting, random map).
            _ => {}
        }
    }
    spec.pattern = match rw.as_str() {
        "randread" => Pattern::Random { read_pct: 100 },
        "randwrite" => Pattern::Random { read_pct: 0 },
        "randrw" => Pattern::Random {
            read_pct: rwmixread,
        },
        "read" => Pattern::Sequential { read: true },
        "write" => Pattern::Sequential { read: false },
        other => return Err(format!("unsupported --rw={other}")),
    };
    spec.threads = spec.threads.max(queues).max(1);
    let result = load::run(&spec)?;
    let json = result.fio_json(&spec.name).to_string();
    // Like fio: to `--output` when given, else to stdout (the harness reads
    // stdout, so a client may run as another user).
    match output {
        Some(out) => {
            std::fs::write(&out, json).map_err(|e| format!("writing {}: {e}", out.display()))
        }
        None => {
            println!("{json}");
            Ok(())
        }
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("ringstor-vu-load: {e}");
        std::process::exit(1);
    }
}
