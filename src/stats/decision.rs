//! When a ratio to native is called different, and when that call is named
//! in the summary. A judged cell is *different* only when its p-value
//! survives Benjamini–Hochberg over every judged cell of the report **and**
//! its centre is at least a minimum effect away from 1 (Firecracker's A/B
//! rule: significance and size); otherwise it is "≈ native" within its CI.
//! A difference *holds* in a part of the data (a half of the rounds, another
//! run) when that part's CI lies wholly on the same side of 1 and its centre
//! clears the same minimum effect.

use serde::{Deserialize, Serialize};

use super::paired::Paired;
use super::Interval;

/// Below this many paired rounds a cell is not judged: the run is too small
/// (with 9 rounds the exact sign-flip test cannot go below p = 1/256, and
/// each half of the split-half check would have 4).
pub const MIN_ROUNDS: usize = 10;

/// The default minimum effect: 5%.
pub const DEFAULT_MIN_EFFECT: f64 = 0.05;

/// The rules a report judges by (recorded in the report).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Smallest relative effect called a difference (0.05 = 5%): a centre
    /// of at least ×(1 + e) or at most ×1/(1 + e).
    pub min_effect: f64,
    /// False-discovery rate of Benjamini–Hochberg.
    pub fdr_q: f64,
    /// Fewest paired rounds a judged cell needs.
    pub min_rounds: usize,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules { min_effect: DEFAULT_MIN_EFFECT, fdr_q: super::fdr::FDR_Q, min_rounds: MIN_ROUNDS }
    }
}

impl Rules {
    /// Whether a centre is at least the minimum effect away from 1, in
    /// either direction (symmetric in ratio: ×1.05 and ×1/1.05).
    pub fn large_enough(&self, centre: f64) -> bool {
        centre > 0.0 && centre.ln().abs() >= (1.0 + self.min_effect).ln() - 1e-12
    }
}

/// Which side of native a ratio lies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Above,
    Below,
}

impl Direction {
    /// The side of 1 an interval lies wholly on, if any.
    pub fn of_interval(ci: &Interval) -> Option<Direction> {
        if ci.lo > 1.0 {
            Some(Direction::Above)
        } else if ci.hi < 1.0 {
            Some(Direction::Below)
        } else {
            None
        }
    }
}

/// Why a cell was not judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unjudged {
    /// Fewer paired rounds than [`Rules::min_rounds`].
    TooFewRounds,
    /// Not one of the report's judged (headline) cells.
    NotAHeadline,
}

/// The verdict on one ratio cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    NotJudged(Unjudged),
    /// Significant after BH and at least the minimum effect.
    Different(Direction),
    /// ≈ native. `significant_but_small`: BH passed, the effect did not.
    Same {
        significant_but_small: bool,
    },
}

impl Verdict {
    pub fn direction(&self) -> Option<Direction> {
        match self {
            Verdict::Different(d) => Some(*d),
            _ => None,
        }
    }
}

/// The verdict on a paired ratio with BH-adjusted `q` (None: not one of
/// the report's judged cells).
pub fn decide(p: &Paired, q: Option<f64>, rules: &Rules) -> Verdict {
    if p.rounds < rules.min_rounds {
        return Verdict::NotJudged(Unjudged::TooFewRounds);
    }
    let Some(q) = q else { return Verdict::NotJudged(Unjudged::NotAHeadline) };
    let significant = q <= rules.fdr_q;
    let direction = if p.centre > 1.0 { Direction::Above } else { Direction::Below };
    match (significant, rules.large_enough(p.centre)) {
        (true, true) => Verdict::Different(direction),
        (s, _) => Verdict::Same { significant_but_small: s },
    }
}

/// Whether `part` (a half of the rounds, or another run) shows the same
/// difference: its CI wholly on the `direction` side of 1 and its centre at
/// least the minimum effect away from 1.
pub fn holds(part: &Paired, direction: Direction, rules: &Rules) -> bool {
    Direction::of_interval(&part.ci) == Some(direction) && rules.large_enough(part.centre)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(centre: f64, lo: f64, hi: f64, rounds: usize) -> Paired {
        Paired { rounds, centre, ci: Interval { lo, hi }, p: 0.001 }
    }

    #[test]
    fn significant_and_large_is_different() {
        let r = Rules::default();
        assert_eq!(decide(&pr(1.30, 1.2, 1.4, 12), Some(0.01), &r), Verdict::Different(Direction::Above));
        assert_eq!(decide(&pr(0.70, 0.6, 0.8, 12), Some(0.01), &r), Verdict::Different(Direction::Below));
    }

    #[test]
    fn significant_but_below_the_minimum_effect_is_native() {
        let r = Rules::default();
        // ×1.03: significant, but 3% < 5%.
        assert_eq!(decide(&pr(1.03, 1.02, 1.04, 12), Some(0.001), &r), Verdict::Same { significant_but_small: true });
        // ×0.96 is 4.2% in ratio terms (1/0.96 = 1.042): still too small.
        assert_eq!(decide(&pr(0.96, 0.95, 0.97, 12), Some(0.001), &r), Verdict::Same { significant_but_small: true });
        // With a 2% minimum the same cell is different.
        let r2 = Rules { min_effect: 0.02, ..r };
        assert_eq!(decide(&pr(1.03, 1.02, 1.04, 12), Some(0.001), &r2), Verdict::Different(Direction::Above));
    }

    #[test]
    fn the_minimum_effect_is_symmetric_in_ratio() {
        let r = Rules::default();
        assert!(r.large_enough(1.05) && r.large_enough(1.0 / 1.05));
        assert!(!r.large_enough(1.049) && !r.large_enough(0.953));
    }

    #[test]
    fn large_but_not_significant_after_bh_is_native() {
        assert_eq!(
            decide(&pr(1.5, 0.9, 2.4, 12), Some(0.2), &Rules::default()),
            Verdict::Same { significant_but_small: false }
        );
    }

    #[test]
    fn too_few_rounds_is_not_judged_whatever_the_p() {
        assert_eq!(
            decide(&pr(3.0, 2.9, 3.1, 9), Some(0.0001), &Rules::default()),
            Verdict::NotJudged(Unjudged::TooFewRounds)
        );
        assert_eq!(decide(&pr(3.0, 2.9, 3.1, 40), None, &Rules::default()), Verdict::NotJudged(Unjudged::NotAHeadline));
    }

    #[test]
    fn a_difference_holds_only_on_the_same_side_and_large_enough() {
        let r = Rules::default();
        assert!(holds(&pr(1.3, 1.1, 1.5, 6), Direction::Above, &r));
        assert!(!holds(&pr(1.3, 0.98, 1.5, 6), Direction::Above, &r), "CI touches 1");
        assert!(!holds(&pr(0.7, 0.6, 0.8, 6), Direction::Above, &r), "other side");
        assert!(!holds(&pr(1.02, 1.01, 1.03, 6), Direction::Above, &r), "too small");
    }

    /// Standard normal draws (Box–Muller) from the report's seeded generator.
    fn normals(rng: &mut crate::stats::SplitMix64, n: usize) -> Vec<f64> {
        let u = |r: &mut crate::stats::SplitMix64| ((r.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        (0..n).map(|_| (-2.0 * u(rng).ln()).sqrt() * (std::f64::consts::TAU * u(rng)).cos()).collect()
    }

    /// Judge `cells` simulated cells of `rounds` rounds, log ratios ~ N(shift, sd):
    /// (uncorrected p < 0.05, called different after BH and the minimum effect).
    fn simulate(cells: usize, rounds: usize, shift: f64, sd: f64) -> (usize, usize) {
        let mut rng = crate::stats::SplitMix64::new(2026);
        let paired: Vec<Paired> = (0..cells)
            .map(|k| {
                let logs: Vec<f64> = normals(&mut rng, rounds).iter().map(|z| shift + sd * z).collect();
                crate::stats::paired::paired(&logs, k as u64).unwrap()
            })
            .collect();
        let q = crate::stats::fdr::bh_adjust(&paired.iter().map(|p| p.p).collect::<Vec<_>>());
        let raw = paired.iter().filter(|p| p.p < 0.05).count();
        let called = paired
            .iter()
            .zip(&q)
            .filter(|(p, q)| matches!(decide(p, Some(**q), &Rules::default()), Verdict::Different(_)))
            .count();
        (raw, called)
    }

    #[test]
    fn with_no_difference_almost_nothing_is_called_different() {
        // 300 cells of 12 rounds, per-round ratios lognormal with 15% spread around ×1:
        // about 5% pass p < 0.05 uncorrected (the test is calibrated), none survives BH + 5%.
        let (raw, called) = simulate(300, 12, 0.0, 0.15);
        assert!((6..=27).contains(&raw), "{raw} of 300 with p < 0.05");
        assert!(called <= 1, "{called} of 300 null cells called different");
    }

    #[test]
    fn a_real_twenty_percent_shift_is_found_in_most_cells() {
        // The same noise around ×1.2: the rule is not blind.
        let (_, called) = simulate(100, 12, 1.2f64.ln(), 0.15);
        assert!(called >= 80, "{called} of 100 cells at ×1.2 called different");
    }
}
