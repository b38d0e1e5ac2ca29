//! Distribution statistics for the report: n, median, p90, p99, min, max,
//! MAD and mean of a sample, and the ratio of a backend's figure to native's.
//! Pure functions; nothing here touches the system.

use serde::{Deserialize, Serialize};

/// A sample described by its order statistics.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
    /// Median absolute deviation from the median (unscaled).
    pub mad: f64,
    pub mean: f64,
}

/// Percentile `p` (0..=100) of an ascending, non-empty slice, by linear
/// interpolation between the two closest ranks (the "R-7" definition).
pub fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    debug_assert!(!sorted.is_empty());
    if sorted.len() == 1 {
        return sorted[0];
    }
    let p = p.clamp(0.0, 100.0) / 100.0;
    let rank = p * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

fn sorted_finite(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// Median of the finite values; `None` when there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    let v = sorted_finite(values);
    (!v.is_empty()).then(|| percentile_sorted(&v, 50.0))
}

/// Median absolute deviation of the finite values.
pub fn mad(values: &[f64]) -> Option<f64> {
    let m = median(values)?;
    let dev: Vec<f64> = values.iter().filter(|x| x.is_finite()).map(|x| (x - m).abs()).collect();
    median(&dev)
}

/// Summarise the finite values; `None` for an empty (or all non-finite) sample.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let v = sorted_finite(values);
    if v.is_empty() {
        return None;
    }
    let median = percentile_sorted(&v, 50.0);
    Some(Summary {
        n: v.len(),
        median,
        p90: percentile_sorted(&v, 90.0),
        p99: percentile_sorted(&v, 99.0),
        min: v[0],
        max: v[v.len() - 1],
        mad: mad(&v).unwrap_or(0.0),
        mean: v.iter().sum::<f64>() / v.len() as f64,
    })
}

/// Which way is better for a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
    /// A count or size that is not a cost (e.g. `iters`, `bytes`).
    Neither,
}

/// Direction of a metric, from the naming conventions of the workload's and
/// the harness's metric names.
pub fn better(metric: &str) -> Better {
    let m = metric.rsplit('.').next().unwrap_or(metric);
    const HIGHER: &[&str] = &["_per_s", "gb_s", "mb_s", "gflops", "iops", "tps"];
    const LOWER: &[&str] = &["_ns", "_us", "_ms", "_kib", "ns_per_call", "ns_per_page"];
    if HIGHER.iter().any(|s| m.ends_with(s)) {
        Better::Higher
    } else if LOWER.iter().any(|s| m.ends_with(s)) || m.contains("_ns_per_") {
        Better::Lower
    } else {
        Better::Neither
    }
}

/// `value / native`; `None` when native is zero or either is not finite.
pub fn ratio(value: f64, native: f64) -> Option<f64> {
    (value.is_finite() && native.is_finite() && native != 0.0).then(|| value / native)
}

/// Relative change from `a` to `b` in percent (`(b - a) / a * 100`).
pub fn change_pct(a: f64, b: f64) -> Option<f64> {
    ratio(b - a, a).map(|r| r * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarize_of_empty_sample_is_none() {
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[f64::NAN]), None);
    }

    #[test]
    fn summarize_single_value_is_degenerate() {
        let s = summarize(&[7.0]).unwrap();
        assert_eq!((s.n, s.median, s.p99, s.min, s.max, s.mad), (1, 7.0, 7.0, 7.0, 7.0, 0.0));
    }

    #[test]
    fn median_of_even_sample_interpolates() {
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn percentiles_follow_linear_interpolation() {
        let v: Vec<f64> = (1..=11).map(f64::from).collect();
        let s = summarize(&v).unwrap();
        assert_eq!(s.median, 6.0);
        assert!((s.p90 - 10.0).abs() < 1e-12);
        assert!((s.p99 - 10.9).abs() < 1e-12);
        assert_eq!((s.min, s.max, s.mean), (1.0, 11.0, 6.0));
    }

    #[test]
    fn mad_ignores_a_single_outlier() {
        // deviations from 3: 2,1,0,1,997 -> median 1
        assert_eq!(mad(&[1.0, 2.0, 3.0, 4.0, 1000.0]), Some(1.0));
    }

    #[test]
    fn non_finite_values_are_dropped() {
        let s = summarize(&[1.0, f64::INFINITY, 3.0]).unwrap();
        assert_eq!((s.n, s.median), (2, 2.0));
    }

    #[test]
    fn ratio_guards_against_zero_baseline() {
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(3.0, 0.0), None);
        assert_eq!(change_pct(200.0, 150.0), Some(-25.0));
    }

    #[test]
    fn metric_direction_comes_from_its_suffix() {
        assert_eq!(better("workload.copy_gb_s"), Better::Higher);
        assert_eq!(better("sha256_mib_per_s"), Better::Higher);
        assert_eq!(better("host.launch_to_ready_ns"), Better::Lower);
        assert_eq!(better("touch_ns_per_page"), Better::Lower);
        assert_eq!(better("p99_us"), Better::Lower);
        assert_eq!(better("footprint.pss_kib"), Better::Lower);
        assert_eq!(better("iters"), Better::Neither);
    }
}
