//! Ratios to native paired within a round. A round runs one unit of every
//! backend of a scenario back to back, so a backend's value ÷ native's value
//! of the same round cancels whatever drifted between rounds (load, steal,
//! thermal state). The round is the unit of replication: a batch of N
//! parallel or density instances is first reduced to its median, one
//! observation per round, and the interval resamples whole rounds.
//!
//! The centre is the geometric mean of the per-round ratios (the mean of
//! their logarithms, exponentiated), so ×2 and ×0.5 weigh alike. Its 95% CI
//! is a seeded percentile bootstrap over rounds; its p-value is a sign-flip
//! (permutation) test of the mean log ratio against 0, exact up to
//! [`EXACT_SIGN_FLIP_MAX`] rounds.

use std::collections::BTreeMap;

use super::{median, percentile_interval, Interval, SplitMix64, BOOTSTRAP_RESAMPLES};

/// Up to this many rounds the sign-flip test enumerates every sign vector
/// (2^(n−1) sums, by symmetry); above it draws [`SIGN_FLIP_DRAWS`] of them.
pub const EXACT_SIGN_FLIP_MAX: usize = 16;

/// Random sign vectors of the sign-flip test above [`EXACT_SIGN_FLIP_MAX`] rounds.
pub const SIGN_FLIP_DRAWS: usize = 20_000;

/// One round's observation of one backend: the round's id and the median of
/// the unit's values (one value for a single instance, N for a batch).
pub fn per_round(values: &[(u32, f64)]) -> BTreeMap<u32, f64> {
    let mut by: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    for (round, v) in values {
        by.entry(*round).or_default().push(*v);
    }
    by.into_iter().filter_map(|(r, vs)| median(&vs).map(|m| (r, m))).collect()
}

/// The log ratios `ln(backend ÷ native)` of the rounds both have, in round
/// order. Rounds where either value is not finite and positive are left out:
/// a ratio of a zero or negative figure means nothing.
pub fn log_ratios(backend: &BTreeMap<u32, f64>, native: &BTreeMap<u32, f64>) -> Vec<(u32, f64)> {
    backend
        .iter()
        .filter_map(|(r, b)| native.get(r).map(|n| (*r, *b, *n)))
        .filter(|(_, b, n)| b.is_finite() && n.is_finite() && *b > 0.0 && *n > 0.0)
        .map(|(r, b, n)| (r, (b / n).ln()))
        .collect()
}

/// A paired ratio to native over a set of rounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Paired {
    /// Rounds with a value for both the backend and native.
    pub rounds: usize,
    /// Geometric mean of the per-round ratios.
    pub centre: f64,
    /// Round-resampling bootstrap 95% CI of the centre.
    pub ci: Interval,
    /// Two-sided sign-flip p-value of "the log ratios are symmetric around 0".
    pub p: f64,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The paired ratio of a non-empty list of log ratios, resampled from `seed`.
pub fn paired(logs: &[f64], seed: u64) -> Option<Paired> {
    if logs.is_empty() || logs.iter().any(|l| !l.is_finite()) {
        return None;
    }
    let centre = mean(logs).exp();
    Some(Paired { rounds: logs.len(), centre, ci: round_bootstrap_ci(logs, seed)?, p: sign_flip_p(logs, seed) })
}

/// Percentile-bootstrap 95% CI of the geometric mean: each resample draws
/// `n` whole rounds with replacement.
pub fn round_bootstrap_ci(logs: &[f64], seed: u64) -> Option<Interval> {
    if logs.is_empty() {
        return None;
    }
    // Constant ratios: every resample is the same round, the interval is that point.
    if logs.iter().all(|l| *l == logs[0]) {
        let c = logs[0].exp();
        return Some(Interval { lo: c, hi: c });
    }
    let mut rng = SplitMix64::new(seed);
    let n = logs.len();
    let stats =
        (0..BOOTSTRAP_RESAMPLES).map(|_| ((0..n).map(|_| logs[rng.below(n)]).sum::<f64>() / n as f64).exp()).collect();
    percentile_interval(stats)
}

/// Two-sided sign-flip test of the mean log ratio: under "no difference"
/// each round's log ratio is as likely negative as positive, so the observed
/// |sum| is compared with the |sum| of every sign vector (exact for up to
/// [`EXACT_SIGN_FLIP_MAX`] rounds; else [`SIGN_FLIP_DRAWS`] seeded draws,
/// counting the observed one, so p is never 0).
pub fn sign_flip_p(logs: &[f64], seed: u64) -> f64 {
    let n = logs.len();
    if n == 0 {
        return 1.0;
    }
    let observed = logs.iter().sum::<f64>().abs();
    // Sums equal up to rounding count as equal (ties go against significance).
    let tol = 1e-9 * logs.iter().map(|l| l.abs()).sum::<f64>();
    let at_least = |s: f64| s.abs() >= observed - tol;
    if n <= EXACT_SIGN_FLIP_MAX {
        // s and −s give the same |sum|: fix the first sign, enumerate the rest.
        let half = 1u64 << (n - 1);
        let hits = (0..half)
            .filter(|mask| {
                let s: f64 = logs[0]
                    + logs[1..].iter().enumerate().map(|(i, l)| if mask >> i & 1 == 1 { -l } else { *l }).sum::<f64>();
                at_least(s)
            })
            .count();
        return hits as f64 / half as f64;
    }
    let mut rng = SplitMix64::new(seed ^ 0x5167_f11b);
    let mut hits = 1usize;
    for _ in 0..SIGN_FLIP_DRAWS {
        let mut bits = 0u64;
        let mut s = 0.0;
        for (i, l) in logs.iter().enumerate() {
            if i % 64 == 0 {
                bits = rng.next_u64();
            }
            s += if bits >> (i % 64) & 1 == 1 { -l } else { *l };
        }
        if at_least(s) {
            hits += 1;
        }
    }
    hits as f64 / (SIGN_FLIP_DRAWS + 1) as f64
}

/// The smallest p-value the test can give with `rounds` rounds: 2 of the
/// 2^n sign vectors (all signs as observed, and all flipped) when exact, one
/// draw in `SIGN_FLIP_DRAWS + 1` otherwise.
pub fn smallest_p(rounds: usize) -> f64 {
    if rounds == 0 {
        1.0
    } else if rounds <= EXACT_SIGN_FLIP_MAX {
        1.0 / (1u64 << (rounds - 1)) as f64
    } else {
        1.0 / (SIGN_FLIP_DRAWS + 1) as f64
    }
}

/// The two halves of a list of rounds in round order: the first ⌊n/2⌋ and
/// the rest. Taken apart in time, they replicate each other only when a
/// difference is not an accident of one stretch of the run.
pub fn halves<T>(rounds: &[T]) -> (&[T], &[T]) {
    rounds.split_at(rounds.len() / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs_of(ratios: &[f64]) -> Vec<f64> {
        ratios.iter().map(|r| r.ln()).collect()
    }

    #[test]
    fn constant_ratios_give_a_point_interval_at_the_ratio() {
        let p = paired(&logs_of(&[1.25; 12]), 1).unwrap();
        assert_eq!(p.ci.lo, p.ci.hi);
        assert!((p.centre - 1.25).abs() < 1e-12 && (p.ci.lo - 1.25).abs() < 1e-12, "{p:?}");
        assert_eq!(p.rounds, 12);
    }

    #[test]
    fn a_known_shift_is_recovered_and_its_interval_covers_it() {
        // Ratios 2·e^{±0.05}, alternating: geometric mean exactly 2.
        let ratios: Vec<f64> =
            (0..20).map(|i| 2.0 * if i % 2 == 0 { 0.05f64.exp() } else { (-0.05f64).exp() }).collect();
        let p = paired(&logs_of(&ratios), 7).unwrap();
        assert!((p.centre - 2.0).abs() < 1e-9, "{p:?}");
        assert!(p.ci.contains(2.0) && p.ci.lo > 1.9 && p.ci.hi < 2.1, "{p:?}");
        assert!(p.p <= 2.0 / (SIGN_FLIP_DRAWS + 1) as f64, "{p:?}");
    }

    #[test]
    fn bootstrap_resamples_rounds_reproducibly() {
        let logs = logs_of(&[1.0, 1.1, 0.9, 1.3, 1.05, 0.95, 1.2, 1.0, 1.15, 0.85]);
        let a = round_bootstrap_ci(&logs, 3).unwrap();
        assert_eq!(round_bootstrap_ci(&logs, 3), Some(a));
        assert!(a.lo < a.hi && a.lo >= 0.85 && a.hi <= 1.3, "{a:?}");
    }

    #[test]
    fn sign_flip_is_exact_for_few_rounds() {
        // All 10 rounds above 1: only the observed signs and their mirror reach |sum|.
        assert_eq!(sign_flip_p(&logs_of(&[1.1; 10]), 0), 2.0 / 1024.0);
        assert_eq!(smallest_p(10), 2.0 / 1024.0);
        // 4 rounds: +a +a +a −a, |sum| = 2a. A sign vector reaches it when at
        // most one or at least three of the four terms end up positive:
        // 1 + 4 + 4 + 1 = 10 of 16.
        assert_eq!(sign_flip_p(&[0.1, 0.1, 0.1, -0.1], 0), 10.0 / 16.0);
        // No difference at all: p = 1.
        assert_eq!(sign_flip_p(&[0.0; 6], 0), 1.0);
    }

    #[test]
    fn batches_count_as_one_observation_per_round() {
        // Round 0 is a batch of 5 instances, round 1 a batch of 3: two observations.
        let vals = [(0, 1.0), (0, 2.0), (0, 3.0), (0, 40.0), (0, 50.0), (1, 7.0), (1, 8.0), (1, 9.0)];
        let r = per_round(&vals);
        assert_eq!(r.into_iter().collect::<Vec<_>>(), vec![(0, 3.0), (1, 8.0)]);
    }

    #[test]
    fn only_rounds_both_have_are_paired() {
        let b: BTreeMap<u32, f64> = [(0, 2.0), (1, 4.0), (3, 9.0)].into_iter().collect();
        let n: BTreeMap<u32, f64> = [(0, 1.0), (1, 2.0), (2, 5.0), (3, 0.0)].into_iter().collect();
        let l = log_ratios(&b, &n);
        assert_eq!(l.iter().map(|(r, _)| *r).collect::<Vec<_>>(), vec![0, 1]);
        assert!(l.iter().all(|(_, x)| (x - 2f64.ln()).abs() < 1e-12));
    }

    #[test]
    fn halves_split_in_round_order() {
        let v = [1, 2, 3, 4, 5];
        assert_eq!(halves(&v), (&v[..2], &v[2..]));
    }
}
