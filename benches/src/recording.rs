//! What recording statistics costs: ringstor's rows over the same binary
//! run with recording off (`ringstor-nostats`, `RINGSTOR_STATS=off`), on
//! every job both ran, and the project's bound on it: with recording on,
//! page-cache 4k randread qd32 keeps at least 97 % of the IOPS.

use crate::results::{groups, Row};
use crate::servers::ServerKind;
use serde::Serialize;

/// The job the bound is judged on.
const TARGET: (&str, &str) = ("page-cache", "randread-4k-qd32");
/// Throughput with recording over throughput without, at least.
const THRESHOLD: f64 = 0.97;

/// Recording on over recording off on one job.
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    /// Scenario id.
    pub scenario: String,
    /// Job id.
    pub job: String,
    /// Throughput ratio (on / off; 1.0 is free).
    pub throughput: f64,
    /// Server CPU per I/O ratio (on / off).
    pub cpu_per_io: f64,
}

/// The costs of every job with both rows measured.
pub fn costs(rows: &[Row]) -> Vec<Cost> {
    let mut out = Vec::new();
    for (scenario, job, group) in groups(rows) {
        let find = |k: ServerKind| group.iter().find(|r| r.server == k).copied();
        let (Some(on), Some(off)) = (
            find(ServerKind::Ringstor),
            find(ServerKind::RingstorNoStats),
        ) else {
            continue;
        };
        let (Some(t_on), Some(t_off), Some(s_on), Some(s_off)) =
            (on.throughput(), off.throughput(), on.summary, off.summary)
        else {
            continue;
        };
        if t_off <= 0.0 || s_off.cpu_s_per_mio.median <= 0.0 {
            continue;
        }
        out.push(Cost {
            scenario: scenario.to_string(),
            job: job.to_string(),
            throughput: t_on / t_off,
            cpu_per_io: s_on.cpu_s_per_mio.median / s_off.cpu_s_per_mio.median,
        });
    }
    out
}

/// One line per job, then the PASS/FAIL/SKIP line of the bound.
pub fn lines(costs: &[Cost]) -> Vec<String> {
    let mut out: Vec<String> = costs
        .iter()
        .map(|c| {
            format!(
                "recording cost {}/{}: throughput on/off {:.3}x, CPU per I/O on/off {:.3}x",
                c.scenario, c.job, c.throughput, c.cpu_per_io
            )
        })
        .collect();
    let verdict = match costs
        .iter()
        .find(|c| (c.scenario.as_str(), c.job.as_str()) == TARGET)
    {
        None => "SKIP".to_string(),
        Some(c) if c.throughput >= THRESHOLD => format!("PASS ({:.3}x)", c.throughput),
        Some(c) => format!("FAIL ({:.3}x)", c.throughput),
    };
    out.push(format!(
        "{verdict}: statistics recording keeps >= {THRESHOLD:.2}x of the IOPS ({}/{}, ringstor vs ringstor-nostats)",
        TARGET.0, TARGET.1
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::row;

    #[test]
    fn ratio_of_on_over_off() {
        let rows = vec![
            row(
                "page-cache",
                "randread-4k-qd32",
                ServerKind::Ringstor,
                98.0,
                10.0,
                1.0,
            ),
            row(
                "page-cache",
                "randread-4k-qd32",
                ServerKind::RingstorNoStats,
                100.0,
                10.0,
                1.0,
            ),
            row(
                "page-cache",
                "randread-4k-qd1",
                ServerKind::Ringstor,
                1.0,
                10.0,
                1.0,
            ),
        ];
        let c = costs(&rows);
        assert_eq!(c.len(), 1);
        assert!((c[0].throughput - 0.98).abs() < 1e-9);
        let l = lines(&c);
        assert!(l.last().is_some_and(|l| l.starts_with("PASS")), "{l:?}");
        assert!(lines(&[]).last().is_some_and(|l| l.starts_with("SKIP")));
    }
}
