//! Description of the machine a run happened on (kernel, CPU, cores,
//! memory) and the versions of the tools, recorded with the results.

use serde::Serialize;

/// Hardware and kernel of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// First `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// CPUs available to the harness.
    pub cores: usize,
    /// `MemTotal` in GiB.
    pub memory_gib: f64,
    /// `fio --version`.
    pub fio: String,
}

impl Machine {
    /// Probe the running machine; unknown fields say "unknown".
    pub fn probe(fio_version: String) -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
        Machine {
            kernel: or_unknown(kernel),
            cpu_model: or_unknown(cpu_model(&read("/proc/cpuinfo")).unwrap_or_default()),
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            memory_gib: mem_total_kib(&read("/proc/meminfo")).unwrap_or(0) as f64
                / (1024.0 * 1024.0),
            fio: fio_version,
        }
    }
}

fn or_unknown(s: String) -> String {
    if s.is_empty() {
        "unknown".to_string()
    } else {
        s
    }
}

/// The first `model name : ...` of cpuinfo text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// `MemTotal` in KiB from meminfo text.
pub fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_text() {
        let ci = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: x\n";
        assert_eq!(cpu_model(ci).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(
            mem_total_kib("MemTotal:       25165824 kB\n"),
            Some(25165824)
        );
    }
}
