//! Median and spread of repeated measurements, and the ringstor-to-best ratio.

use serde::Serialize;

/// Median and min–max over the repeats of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Smallest repeat.
    pub min: f64,
    /// Largest repeat.
    pub max: f64,
}

/// Summarise repeats; `None` when there are none (or any is NaN).
pub fn summarize(values: &[f64]) -> Option<Summary> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Summary {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

/// Which direction of a metric is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Better {
    /// Throughput: IOPS, bandwidth.
    Higher,
    /// Latency, CPU per I/O.
    Lower,
}

/// The best of the other servers' values for a metric.
pub fn best(others: &[f64], better: Better) -> Option<f64> {
    let it = others.iter().copied().filter(|v| v.is_finite());
    match better {
        Better::Higher => it.max_by(f64::total_cmp),
        Better::Lower => it.min_by(f64::total_cmp),
    }
}

/// `value / best(others)`: above 1 means "more than the best other" for
/// either direction, so a throughput target reads `>= 1.5` and a latency or
/// CPU target reads `<= 1.0`. `None` without others or with a zero best.
pub fn ratio(value: f64, others: &[f64], better: Better) -> Option<f64> {
    let b = best(others, better)?;
    if b == 0.0 || !value.is_finite() {
        return None;
    }
    Some(value / b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_and_even() {
        let s = summarize(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            s,
            Summary {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        let s = summarize(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert_eq!((s.min, s.max), (1.0, 4.0));
    }

    #[test]
    fn empty_or_nan_has_no_summary() {
        assert!(summarize(&[]).is_none());
        assert!(summarize(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn ratio_against_best_other() {
        // Throughput: best is the max.
        assert_eq!(ratio(300.0, &[100.0, 200.0], Better::Higher), Some(1.5));
        // Latency / CPU: best is the min.
        assert_eq!(ratio(10.0, &[20.0, 40.0], Better::Lower), Some(0.5));
        assert_eq!(ratio(1.0, &[], Better::Higher), None);
        assert_eq!(ratio(1.0, &[0.0], Better::Lower), None);
    }
}
