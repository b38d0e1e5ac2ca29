//! The hyperfine-style summary of `cvbench run --runs N`: mean ± σ,
//! min … max per backend, and how many times faster or slower than the
//! `--baseline`. Pure functions over the measured times.

use std::fmt::Write as _;

/// Mean and sample standard deviation of one backend's times.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    pub label: String,
    /// Seconds, one per successful run.
    pub times: Vec<f64>,
    pub mean: f64,
    /// Sample standard deviation (n − 1); 0 for a single run.
    pub sd: f64,
    pub min: f64,
    pub max: f64,
    /// Runs that failed (not in `times`).
    pub failed: usize,
}

impl Timing {
    /// `None` when no run succeeded.
    pub fn new(label: &str, times: Vec<f64>, failed: usize) -> Option<Timing> {
        if times.is_empty() {
            return None;
        }
        let n = times.len() as f64;
        let mean = times.iter().sum::<f64>() / n;
        let sd = if times.len() > 1 {
            (times.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        let min = times.iter().copied().fold(f64::INFINITY, f64::min);
        let max = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Timing { label: label.to_string(), times, mean, sd, min, max, failed })
    }
}

/// `a / b` with its standard deviation by first-order error propagation
/// (as hyperfine computes it).
pub fn ratio(a: &Timing, b: &Timing) -> (f64, f64) {
    let r = a.mean / b.mean;
    let sd = r * ((a.sd / a.mean).powi(2) + (b.sd / b.mean).powi(2)).sqrt();
    (r, sd)
}

/// A time with a unit that suits it.
pub fn human(secs: f64) -> String {
    if secs < 1e-3 {
        format!("{:.1} µs", secs * 1e6)
    } else if secs < 1.0 {
        format!("{:.3} ms", secs * 1e3)
    } else {
        format!("{secs:.3} s")
    }
}

/// One benchmark's block.
pub fn block(index: usize, what: &str, t: &Timing, ready: Option<&Timing>) -> String {
    let mut s = format!("Benchmark {index}: {}\n", t.label);
    let _ = writeln!(s, "  Time (mean ± σ):    {:>11} ± {:>11}    [launch → exit; {what}]", human(t.mean), human(t.sd));
    if let Some(r) = ready {
        let _ = writeln!(s, "  Ready (mean ± σ):   {:>11} ± {:>11}    [launch → READY]", human(r.mean), human(r.sd));
    }
    let runs = if t.failed > 0 {
        format!("{} runs, {} FAILED (not counted)", t.times.len(), t.failed)
    } else {
        format!("{} runs", t.times.len())
    };
    let _ = writeln!(s, "  Range (min … max):  {:>11} … {:>11}    {runs}", human(t.min), human(t.max));
    s
}

/// The closing summary: the fastest first, every other as a multiple of it,
/// as hyperfine does; with a baseline, every other against the baseline.
pub fn comparison(baseline: &Timing, others: &[&Timing]) -> String {
    let mut s = String::from("Summary\n");
    for o in others {
        let (r, sd) = ratio(o, baseline);
        let (word, r, sd) = if r >= 1.0 { ("slower", r, sd) } else { ("faster", 1.0 / r, sd / (r * r)) };
        let _ = writeln!(s, "  {} ran {r:.2} ± {sd:.2} times {word} than {}", o.label, baseline.label);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(label: &str, v: &[f64]) -> Timing {
        Timing::new(label, v.to_vec(), 0).unwrap()
    }

    #[test]
    fn mean_and_sample_sd() {
        let x = t("x", &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(x.mean, 2.5);
        assert!((x.sd - 1.290_994).abs() < 1e-6, "{}", x.sd);
        assert_eq!((x.min, x.max), (1.0, 4.0));
    }

    #[test]
    fn a_single_run_has_no_spread() {
        assert_eq!(t("x", &[0.5]).sd, 0.0);
    }

    #[test]
    fn no_successful_run_gives_no_timing() {
        assert_eq!(Timing::new("x", vec![], 3), None);
    }

    #[test]
    fn ratio_propagates_relative_errors() {
        let a = Timing { sd: 0.2, ..t("a", &[2.0]) };
        let b = Timing { sd: 0.1, ..t("b", &[1.0]) };
        let (r, sd) = ratio(&a, &b);
        assert_eq!(r, 2.0);
        assert!((sd - 2.0 * (0.01f64 + 0.01).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn comparison_says_slower_or_faster_against_the_baseline() {
        let base = t("native", &[1.0]);
        let slow = t("container", &[3.0]);
        let fast = t("other", &[0.5]);
        let s = comparison(&base, &[&slow, &fast]);
        assert!(s.contains("container ran 3.00 ± 0.00 times slower than native"), "{s}");
        assert!(s.contains("other ran 2.00 ± 0.00 times faster than native"), "{s}");
    }

    #[test]
    fn block_reports_failed_runs() {
        let x = Timing::new("c · noop", vec![0.010, 0.012], 1).unwrap();
        let s = block(1, "2 runs", &x, None);
        assert!(s.contains("1 FAILED"), "{s}");
        assert!(s.contains("10.000 ms"), "{s}");
    }
}
