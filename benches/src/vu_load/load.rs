//! The I/O loop: one thread per virtqueue, `iodepth` requests in flight
//! each, latency from submission to completion into an HdrHistogram.

use blkio::{Blkio, Blkioq, Completion, ReqFlags};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Access pattern.
#[derive(Debug, Clone, Copy)]
pub enum Pattern {
    /// Random offsets; `read_pct` % reads, the rest writes.
    Random { read_pct: u32 },
    /// Each thread streams through its own part of the device.
    Sequential { read: bool },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub socket: PathBuf,
    pub block_size: usize,
    pub iodepth: usize,
    pub threads: usize,
    pub runtime: Duration,
    pub pattern: Pattern,
}

impl Default for Spec {
    fn default() -> Spec {
        Spec {
            name: "job".into(),
            socket: PathBuf::new(),
            block_size: 4096,
            iodepth: 1,
            threads: 1,
            runtime: Duration::from_secs(3),
            pattern: Pattern::Random { read_pct: 100 },
        }
    }
}

/// All threads' numbers.
pub struct Outcome {
    ios: u64,
    bytes: u64,
    elapsed: Duration,
    lat: Histogram<u64>,
    /// The process's user and system CPU time over the run.
    cpu: (Duration, Duration),
}

/// This process's user and system CPU time so far.
fn cpu_times() -> (Duration, Duration) {
    // SAFETY: getrusage only writes the rusage struct we pass, which is
    // plain data for which all zeroes is a valid value.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return (Duration::ZERO, Duration::ZERO);
        }
        ru
    };
    let d = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (d(ru.ru_utime), d(ru.ru_stime))
}

impl Outcome {
    /// The fio JSON subset the harness parses.
    pub fn fio_json(&self, name: &str) -> Value {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let p = |q: f64| self.lat.value_at_quantile(q);
        let pct = json!({
            "50.000000": p(0.50),
            "99.000000": p(0.99),
            "99.900000": p(0.999),
        });
        // fio's form: CPU as percentages of `job_runtime` (ms), so the
        // harness's client CPU column covers this client too.
        let runtime_ms = self.elapsed.as_secs_f64() * 1000.0;
        let share = |t: Duration| 100.0 * t.as_secs_f64() / secs;
        json!({"jobs": [{
            "jobname": name,
            "error": 0,
            "job_runtime": runtime_ms,
            "usr_cpu": share(self.cpu.0),
            "sys_cpu": share(self.cpu.1),
            "mixed": {
                "total_ios": self.ios,
                "iops": self.ios as f64 / secs,
                "bw_bytes": self.bytes as f64 / secs,
                "clat_ns": {"percentile": pct.clone()},
                "lat_ns": {"percentile": pct},
            }
        }]})
    }
}

fn err(what: &str, e: blkio::Error) -> String {
    format!("{what}: {e}")
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Connects, runs every thread for the runtime, and merges their numbers.
pub fn run(spec: &Spec) -> Result<Outcome, String> {
    let mut b = Blkio::new("virtio-blk-vhost-user").map_err(|e| err("blkio", e))?;
    b.set_str("path", &spec.socket.to_string_lossy())
        .map_err(|e| err("path", e))?;
    b.connect().map_err(|e| err("connect", e))?;
    b.set_i32("num-queues", spec.threads as i32)
        .map_err(|e| err("num-queues", e))?;
    let started = b.start().map_err(|e| err("start", e))?;
    let capacity = b.get_u64("capacity").map_err(|e| err("capacity", e))?;
    let align = b
        .get_u64("mem-region-alignment")
        .map_err(|e| err("alignment", e))? as usize;
    let per_thread = spec.block_size * spec.iodepth;
    let len = (per_thread * spec.threads).div_ceil(align) * align;
    let region = b.alloc_mem_region(len).map_err(|e| err("alloc", e))?;
    b.map_mem_region(&region).map_err(|e| err("map", e))?;
    let blocks = capacity / spec.block_size as u64;
    if blocks == 0 {
        return Err("device smaller than one block".into());
    }
    let t0 = Instant::now();
    let cpu0 = cpu_times();
    let handles: Vec<_> = started
        .queues
        .into_iter()
        .enumerate()
        .map(|(i, q)| {
            let s = spec.clone();
            let buf = region.addr + i * per_thread;
            std::thread::spawn(move || worker(q, &s, i, buf, blocks))
        })
        .collect();
    let mut lat =
        Histogram::<u64>::new_with_bounds(100, 10_000_000_000, 3).map_err(|e| e.to_string())?;
    let (mut ios, mut bytes) = (0, 0);
    for h in handles {
        let (n, by, l) = h.join().map_err(|_| "worker panicked".to_string())??;
        ios += n;
        bytes += by;
        lat.add(&l).map_err(|e| e.to_string())?;
    }
    let elapsed = t0.elapsed();
    let cpu1 = cpu_times();
    drop(b);
    if ios == 0 {
        return Err("no I/O completed".into());
    }
    Ok(Outcome {
        ios,
        bytes,
        elapsed,
        lat,
        cpu: (cpu1.0.saturating_sub(cpu0.0), cpu1.1.saturating_sub(cpu0.1)),
    })
}

type WorkerResult = Result<(u64, u64, Histogram<u64>), String>;

fn worker(mut q: Blkioq, s: &Spec, index: usize, buf: usize, blocks: u64) -> WorkerResult {
    let bs = s.block_size;
    let mut lat =
        Histogram::<u64>::new_with_bounds(100, 10_000_000_000, 3).map_err(|e| e.to_string())?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0x1234_5678_9abc));
    // Sequential threads each stream through their own stripe.
    let stripe = (blocks / s.threads as u64).max(1);
    let mut cursor = index as u64 * stripe;
    let mut started = vec![Instant::now(); s.iodepth];
    let mut submit = |q: &mut Blkioq, slot: usize, started: &mut [Instant]| {
        let (block, read) = match s.pattern {
            Pattern::Random { read_pct } => (
                rng.next() % blocks,
                (rng.next() % 100) < u64::from(read_pct),
            ),
            Pattern::Sequential { read } => {
                let b = cursor;
                cursor += 1;
                if cursor >= (index as u64 + 1) * stripe || cursor >= blocks {
                    cursor = index as u64 * stripe;
                }
                (b, read)
            }
        };
        let ptr = buf + slot * bs;
        started[slot] = Instant::now();
        let off = block * bs as u64;
        if read {
            q.read(off, ptr as *mut u8, bs, slot, ReqFlags::empty());
        } else {
            q.write(off, ptr as *const u8, bs, slot, ReqFlags::empty());
        }
    };
    let end = Instant::now() + s.runtime;
    for slot in 0..s.iodepth {
        submit(&mut q, slot, &mut started);
    }
    let mut in_flight = s.iodepth;
    let mut comps: Vec<MaybeUninit<Completion>> =
        (0..s.iodepth).map(|_| MaybeUninit::uninit()).collect();
    let (mut ios, mut bytes) = (0u64, 0u64);
    while in_flight > 0 {
        let mut t = Duration::from_secs(30);
        let n = q
            .do_io(&mut comps, 1, Some(&mut t), None)
            .map_err(|e| err("do_io", e))?;
        if n == 0 {
            return Err("no completion within 30 s".into());
        }
        let now = Instant::now();
        for c in comps.iter().take(n) {
            // SAFETY: do_io initialised the first n entries.
            let c = unsafe { c.assume_init_read() };
            if c.ret != 0 {
                return Err(format!("request failed: {}", c.ret));
            }
            let slot = c.user_data;
            let ns = now.duration_since(started[slot]).as_nanos() as u64;
            lat.saturating_record(ns.max(100));
            ios += 1;
            bytes += bs as u64;
            if now < end {
                submit(&mut q, slot, &mut started);
            } else {
                in_flight -= 1;
            }
        }
    }
    Ok((ios, bytes, lat))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_reported_as_fio_does() {
        let o = Outcome {
            ios: 1000,
            bytes: 4_096_000,
            elapsed: Duration::from_secs(2),
            lat: Histogram::new_with_bounds(100, 10_000_000_000, 3).expect("histogram"),
            cpu: (Duration::from_secs(1), Duration::from_millis(500)),
        };
        let j = &o.fio_json("t")["jobs"][0];
        assert_eq!(j["job_runtime"], 2000.0);
        assert_eq!(j["usr_cpu"], 50.0);
        assert_eq!(j["sys_cpu"], 25.0);
        // The harness's reading (fio.rs, job_cpu_s): percent of the runtime.
        let pct = j["usr_cpu"].as_f64().expect("usr") + j["sys_cpu"].as_f64().expect("sys");
        let cpu_s = pct / 100.0 * j["job_runtime"].as_f64().expect("runtime") / 1000.0;
        assert!((cpu_s - 1.5).abs() < 1e-9, "{cpu_s}");
        assert!(cpu_times().0 > Duration::ZERO || cpu_times().1 > Duration::ZERO);
    }
}
