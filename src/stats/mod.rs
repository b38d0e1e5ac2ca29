//! Statistics for the report. Here: the distribution of a sample (n,
//! median, p90, p99, min, max, MAD, mean, coefficient of variation), a
//! seeded bootstrap CI of a median, the seeded generator, and a metric's
//! direction. `paired`: ratios to native paired within a round, their
//! round-resampling CI and sign-flip p-value; `fdr`: Benjamini–Hochberg;
//! `decision`: the rule that calls a ratio different (significance after
//! FDR control and a minimum effect) and the split-half replication check.
//! Pure functions; nothing here touches the system, and the same input and
//! seed give the same answer.

pub mod decision;
pub mod fdr;
pub mod paired;

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
    /// Coefficient of variation: sample standard deviation ÷ mean (0 for n = 1).
    #[serde(default)]
    pub cv: f64,
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
        cv: cv(&v).unwrap_or(0.0),
    })
}

/// Coefficient of variation (sample standard deviation over the mean) of the
/// finite values; `None` for fewer than two values or a zero mean.
pub fn cv(values: &[f64]) -> Option<f64> {
    let v = sorted_finite(values);
    if v.len() < 2 {
        return None;
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    if mean == 0.0 {
        return None;
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
    Some(var.sqrt() / mean.abs())
}

/// A cell whose coefficient of variation is above this is flagged noisy.
pub const NOISY_CV: f64 = 0.10;

/// Bootstrap resamples per interval: enough for stable 2.5/97.5 percentiles
/// at the sample sizes of a run (5 to 50), cheap enough for a whole report.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// A 95% confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }
    /// Whether two intervals share no point.
    pub fn disjoint(&self, other: &Interval) -> bool {
        self.hi < other.lo || other.hi < self.lo
    }
}

/// SplitMix64: a small, well-mixed generator, so the bootstrap is
/// reproducible from a seed without a dependency.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0), by rejection so there is no modulo bias.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return (x % n) as usize;
            }
        }
    }
}

/// A stable 64-bit seed from text (FNV-1a), so each cell of a report draws
/// its own reproducible resamples whatever order the cells are computed in.
pub fn seed_of(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn resampled_median(v: &[f64], rng: &mut SplitMix64, buf: &mut Vec<f64>) -> f64 {
    buf.clear();
    buf.extend((0..v.len()).map(|_| v[rng.below(v.len())]));
    buf.sort_by(|a, b| a.total_cmp(b));
    percentile_sorted(buf, 50.0)
}

pub(crate) fn percentile_interval(mut stats: Vec<f64>) -> Option<Interval> {
    stats.retain(|x| x.is_finite());
    if stats.is_empty() {
        return None;
    }
    stats.sort_by(|a, b| a.total_cmp(b));
    Some(Interval { lo: percentile_sorted(&stats, 2.5), hi: percentile_sorted(&stats, 97.5) })
}

/// Percentile-bootstrap 95% CI of the median of the finite values, drawn
/// from `seed`. `None` for an empty sample; a single value gives a
/// zero-width interval (nothing is known about its spread: see `n`).
pub fn bootstrap_median_ci(values: &[f64], seed: u64) -> Option<Interval> {
    let v = sorted_finite(values);
    if v.is_empty() {
        return None;
    }
    let mut rng = SplitMix64::new(seed);
    let mut buf = Vec::with_capacity(v.len());
    percentile_interval((0..BOOTSTRAP_RESAMPLES).map(|_| resampled_median(&v, &mut rng, &mut buf)).collect())
}

/// How a ratio to native reads once its interval is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Significance {
    /// The 95% CI of the ratio contains 1: indistinguishable from native.
    SameAsNative,
    /// The whole CI is above 1.
    Above,
    /// The whole CI is below 1.
    Below,
}

/// Where a ratio interval lies with respect to 1.
pub fn significance(ci: &Interval) -> Significance {
    if ci.lo > 1.0 {
        Significance::Above
    } else if ci.hi < 1.0 {
        Significance::Below
    } else {
        Significance::SameAsNative
    }
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
    fn cv_is_sample_sd_over_mean() {
        // mean 5, sample sd sqrt(((3)^2+(3)^2)/1)... for [2, 8]: sd = sqrt(18) = 4.243
        let c = cv(&[2.0, 8.0]).unwrap();
        assert!((c - 18f64.sqrt() / 5.0).abs() < 1e-12, "{c}");
        assert_eq!(cv(&[3.0]), None);
        assert_eq!(summarize(&[4.0, 4.0, 4.0]).unwrap().cv, 0.0);
    }

    #[test]
    fn bootstrap_is_reproducible_for_a_seed_and_moves_with_it() {
        // Many distinct values, so the interval's ends depend on the draws.
        let v: Vec<f64> = (0..200u32).map(|i| f64::from((i * i + 7 * i) % 997)).collect();
        let a = bootstrap_median_ci(&v, 42).unwrap();
        assert_eq!(bootstrap_median_ci(&v, 42), Some(a));
        let others: Vec<Interval> = (0..8).filter_map(|s| bootstrap_median_ci(&v, 1000 + s)).collect();
        assert!(others.iter().any(|o| *o != a), "every seed gave the same interval");
    }

    #[test]
    fn bootstrap_median_ci_brackets_the_median_within_the_sample_range() {
        let v: Vec<f64> = (1..=21).map(f64::from).collect();
        let ci = bootstrap_median_ci(&v, 7).unwrap();
        assert!(ci.contains(11.0), "{ci:?}");
        assert!(ci.lo >= 1.0 && ci.hi <= 21.0, "{ci:?}");
        // The median of 21 values does not wander to the extremes.
        assert!(ci.lo > 5.0 && ci.hi < 17.0, "{ci:?}");
    }

    #[test]
    fn bootstrap_of_a_constant_sample_is_a_point() {
        assert_eq!(bootstrap_median_ci(&[3.0; 6], 1), Some(Interval { lo: 3.0, hi: 3.0 }));
        assert_eq!(bootstrap_median_ci(&[], 1), None);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = SplitMix64::new(9);
        let mut seen = [false; 5];
        for _ in 0..200 {
            seen[r.below(5)] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_ne!(seed_of("a"), seed_of("b"));
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
