//! Turns a result set's records into cells: per scenario × metric × backend,
//! the distribution of successful values with a bootstrap CI of its median,
//! its ratio to native paired within rounds (centre, round-resampling CI,
//! sign-flip p, Benjamini–Hochberg q over every judged cell, verdict, and
//! the same ratio in each half of the rounds), and the errors of failed
//! runs. Everything the Markdown and the charts show comes from here.

use crate::backend::BackendId;
use std::collections::BTreeMap;

use crate::record::RunRecord;
use crate::results::figures;
use crate::stats::decision::{self, Direction, Rules, Verdict};
use crate::stats::paired::{self, Paired};
use crate::stats::{self, fdr, Better, Interval, Significance, Summary};

/// A headline metric of a scenario family, with how to print it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headline {
    pub family: &'static str,
    /// Metric name as in `results::figures` (`host.*`, `workload.*`, ...).
    pub metric: &'static str,
    pub label: &'static str,
    pub unit: Unit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Value in ns, printed in ms.
    NsAsMs,
    /// Value in KiB, printed in MiB.
    KibAsMib,
    /// Printed as is with this unit text.
    Raw(&'static str),
}

impl Unit {
    pub fn scale(self, v: f64) -> f64 {
        match self {
            Unit::NsAsMs => v / 1e6,
            Unit::KibAsMib => v / 1024.0,
            Unit::Raw(_) => v,
        }
    }
    pub fn text(self) -> &'static str {
        match self {
            Unit::NsAsMs => "ms",
            Unit::KibAsMib => "MiB",
            Unit::Raw(u) => u,
        }
    }
}

const fn h(family: &'static str, metric: &'static str, label: &'static str, unit: Unit) -> Headline {
    Headline { family, metric, label, unit }
}

/// The metrics the report's main table shows, in order. Everything else is
/// in `results.csv`.
pub const HEADLINES: &[Headline] = &[
    h("startup-serial", "host.launch_to_ready_ns", "noop launch→READY", Unit::NsAsMs),
    h("startup-serial", "host.launch_to_exit_ns", "noop launch→exit", Unit::NsAsMs),
    h("startup-parallel", "host.launch_to_ready_ns", "launch→READY per instance", Unit::NsAsMs),
    h("startup-parallel", "extra.batch_last_ready_ns", "all N READY", Unit::NsAsMs),
    h("footprint", "footprint.pss_kib", "idle PSS", Unit::KibAsMib),
    h("footprint", "footprint.rss_kib", "idle RSS", Unit::KibAsMib),
    h("density", "extra.density_cgroup_per_instance_kib", "parent-cgroup memory per instance", Unit::KibAsMib),
    h("density", "extra.density_pss_per_instance_kib", "PSS per instance", Unit::KibAsMib),
    h("density", "extra.density_launch_all_ns", "time to launch N into the parent cgroup", Unit::NsAsMs),
    h("cpu", "workload.sha256_mib_per_s", "SHA-256", Unit::Raw("MiB/s")),
    h("cpu", "workload.sieve_mnum_per_s", "sieve", Unit::Raw("Mnum/s")),
    h("cpu", "workload.matmul_gflops", "matmul", Unit::Raw("GFLOP/s")),
    h("mem-bw", "workload.copy_gb_s", "copy", Unit::Raw("GB/s")),
    h("mem-bw", "workload.triad_gb_s", "triad", Unit::Raw("GB/s")),
    h("mem-touch", "workload.touch_ns_per_page", "first touch", Unit::Raw("ns/page")),
    h("mem-touch", "workload.chase_ns_per_access", "random access", Unit::Raw("ns/access")),
    h("syscall", "workload.ns_per_call", "getppid", Unit::Raw("ns/call")),
    h("net-stream", "workload.gbit_per_s", "TCP stream", Unit::Raw("Gbit/s")),
    h("net-rr", "workload.p50_us", "TCP RR p50", Unit::Raw("µs")),
    h("net-rr", "workload.p99_us", "TCP RR p99", Unit::Raw("µs")),
    h("disk", "workload.seq_write_mb_s", "seq write+fsync", Unit::Raw("MB/s")),
    h("disk", "workload.seq_read_mb_s", "seq read", Unit::Raw("MB/s")),
    h("disk", "workload.rand_write_iops", "4 KiB rand write", Unit::Raw("IOPS")),
    h("disk", "workload.rand_read_iops", "4 KiB rand read", Unit::Raw("IOPS")),
];

/// The family of a scenario name (`startup-parallel-10` → `startup-parallel`).
pub fn family_of(scenario: &str) -> &str {
    match scenario.rsplit_once('-') {
        Some((f, n)) if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => f,
        _ => scenario,
    }
}

/// A backend's ratio to native, paired within rounds, and what the report
/// decides about it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RatioCell {
    /// Centre (geometric mean of the per-round ratios), round-bootstrap
    /// 95% CI, paired rounds and sign-flip p-value.
    pub paired: Paired,
    /// Benjamini–Hochberg q over every judged cell of the report; `None`
    /// for a cell that is not judged.
    pub q: Option<f64>,
    pub verdict: Verdict,
    /// The same ratio over the first and over the second half of the rounds.
    pub halves: [Option<Paired>; 2],
}

impl RatioCell {
    /// A difference the verdict calls, held in both halves of the rounds.
    pub fn holds_in_both_halves(&self, rules: &Rules) -> bool {
        match self.verdict {
            Verdict::Different(d) => self.halves.iter().all(|h| h.is_some_and(|h| decision::holds(&h, d, rules))),
            _ => false,
        }
    }
}

/// One backend's cell of one (scenario, metric) row.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub summary: Option<Summary>,
    /// Bootstrap 95% CI of the median.
    pub median_ci: Option<Interval>,
    /// The paired ratio's centre (geometric mean of the per-round ratios to
    /// native), when native ran the same rounds.
    pub ratio: Option<f64>,
    /// Its round-resampling 95% CI.
    pub ratio_ci: Option<Interval>,
    /// The verdict as a side of native: `Above`/`Below` only for a cell
    /// judged different, `SameAsNative` for one judged ≈ native, `None`
    /// when not judged.
    pub significance: Option<Significance>,
    /// Everything about the paired ratio, for a non-native cell.
    pub paired: Option<RatioCell>,
    /// Runs in the cell that failed, and the first distinct errors.
    pub failed: usize,
    pub errors: Vec<String>,
}

/// (scenario, metric, backend): the key of a ratio cell.
type Key = (String, String, String);

/// Every record of a result set grouped for reporting.
pub struct Aggregate {
    /// Backends in report order (native first, then as first seen).
    pub backends: Vec<String>,
    /// Scenarios in first-seen order.
    pub scenarios: Vec<String>,
    /// (scenario, backend) → records.
    pub groups: BTreeMap<(String, String), Vec<RunRecord>>,
    /// The rules the ratio cells were judged by.
    pub rules: Rules,
    /// Every headline ratio cell (non-native backend), judged together.
    ratios: BTreeMap<Key, RatioCell>,
    /// What the host was, for the marks a figure carries (none until [`Aggregate::on`]).
    pub platform: super::platform::Platform,
}

fn seed(scenario: &str, metric: &str, backend: &str) -> u64 {
    stats::seed_of(&format!("{scenario}|{metric}|{backend}"))
}

impl Aggregate {
    /// Group and judge with the default rules (5% minimum effect, q = 0.05, 10 rounds).
    pub fn new(records: &[RunRecord]) -> Aggregate {
        Aggregate::with_rules(records, Rules::default())
    }

    pub fn with_rules(records: &[RunRecord], rules: Rules) -> Aggregate {
        let mut backends: Vec<String> = Vec::new();
        let mut scenarios: Vec<String> = Vec::new();
        let mut groups: BTreeMap<(String, String), Vec<RunRecord>> = BTreeMap::new();
        for r in records {
            if !backends.contains(&r.backend) {
                backends.push(r.backend.clone());
            }
            if !scenarios.contains(&r.scenario) {
                scenarios.push(r.scenario.clone());
            }
            groups.entry((r.scenario.clone(), r.backend.clone())).or_default().push(r.clone());
        }
        let order = |b: &String| crate::backend::ALL.iter().position(|n| n == b).unwrap_or(usize::MAX);
        backends.sort_by_key(|b| (b != BackendId::Native.name(), order(b)));
        let mut a =
            Aggregate { backends, scenarios, groups, rules, ratios: BTreeMap::new(), platform: Default::default() };
        a.judge();
        a
    }

    /// Pair every headline cell with native, then adjust the p-values of
    /// the cells with enough rounds together (BH) and decide each.
    fn judge(&mut self) {
        let mut cells: Vec<(Key, Paired, [Option<Paired>; 2])> = Vec::new();
        for (sc, hl) in self.headline_rows() {
            for b in self.backends.iter().filter(|b| *b != BackendId::Native.name()) {
                if let Some((p, halves)) = self.pair(&sc, b, hl.metric) {
                    cells.push(((sc.clone(), hl.metric.to_string(), b.clone()), p, halves));
                }
            }
        }
        let judged: Vec<usize> = (0..cells.len()).filter(|i| cells[*i].1.rounds >= self.rules.min_rounds).collect();
        let q = fdr::bh_adjust(&judged.iter().map(|i| cells[*i].1.p).collect::<Vec<_>>());
        let mut qs: Vec<Option<f64>> = vec![None; cells.len()];
        for (i, q) in judged.into_iter().zip(q) {
            qs[i] = Some(q);
        }
        for ((key, p, halves), q) in cells.into_iter().zip(qs) {
            let verdict = decision::decide(&p, q, &self.rules);
            self.ratios.insert(key, RatioCell { paired: p, q, verdict, halves });
        }
    }

    /// Successful values of `metric` with the round (`iteration`) they came from.
    pub fn round_values(&self, scenario: &str, backend: &str, metric: &str) -> Vec<(u32, f64)> {
        self.records(scenario, backend)
            .iter()
            .filter(|r| r.error.is_none())
            .flat_map(|r| figures(r).into_iter().map(move |f| (r.iteration, f)))
            .filter(|(_, (m, _))| m == metric)
            .map(|(i, (_, v))| (i, v))
            .collect()
    }

    /// The paired ratio of a cell over all its rounds and over each half.
    fn pair(&self, scenario: &str, backend: &str, metric: &str) -> Option<(Paired, [Option<Paired>; 2])> {
        let b = paired::per_round(&self.round_values(scenario, backend, metric));
        let n = paired::per_round(&self.round_values(scenario, BackendId::Native.name(), metric));
        let logs: Vec<f64> = paired::log_ratios(&b, &n).into_iter().map(|(_, l)| l).collect();
        let s = seed(scenario, metric, backend);
        let whole = paired::paired(&logs, s)?;
        let (h1, h2) = paired::halves(&logs);
        Some((whole, [paired::paired(h1, s ^ 1), paired::paired(h2, s ^ 2)]))
    }

    /// The ratio cell of a (scenario, metric, backend): judged when it is a
    /// headline cell, else computed here and left unjudged.
    pub fn ratio_cell(&self, scenario: &str, backend: &str, metric: &str) -> Option<RatioCell> {
        if backend == BackendId::Native.name() {
            return None;
        }
        if let Some(c) = self.ratios.get(&(scenario.to_string(), metric.to_string(), backend.to_string())) {
            return Some(*c);
        }
        let (p, halves) = self.pair(scenario, backend, metric)?;
        Some(RatioCell { paired: p, q: None, verdict: decision::decide(&p, None, &self.rules), halves })
    }

    /// Every headline ratio cell: (scenario, metric, backend) → cell.
    pub fn ratio_cells(&self) -> impl Iterator<Item = (&Key, &RatioCell)> {
        self.ratios.iter()
    }

    /// Headline ratio cells with enough rounds to be judged.
    pub fn judged_cells(&self) -> usize {
        self.ratios.values().filter(|c| c.q.is_some()).count()
    }

    /// No headline ratio cell has enough rounds: the run is too small to judge.
    pub fn too_small_to_judge(&self) -> bool {
        self.judged_cells() == 0
    }

    /// Whether a cell judged different here replicates: in both halves of
    /// its rounds and, when `previous` is given, in that run too.
    pub fn replicates(&self, scenario: &str, backend: &str, metric: &str, previous: Option<&Aggregate>) -> Replication {
        let Some(c) = self.ratio_cell(scenario, backend, metric) else { return Replication::NotDifferent };
        let Verdict::Different(d) = c.verdict else { return Replication::NotDifferent };
        if !c.holds_in_both_halves(&self.rules) {
            return Replication::NotInBothHalves;
        }
        match previous.map(|p| p.ratio_cell(scenario, backend, metric)) {
            None => Replication::Holds,
            Some(None) => Replication::NotInPrevious,
            Some(Some(pc)) if decision::holds(&pc.paired, d, &self.rules) => Replication::Holds,
            Some(Some(_)) => Replication::NotInPrevious,
        }
    }

    /// The same cells, marked for the platform they were measured on.
    pub fn on(self, platform: super::platform::Platform) -> Aggregate {
        Aggregate { platform, ..self }
    }

    pub fn records(&self, scenario: &str, backend: &str) -> &[RunRecord] {
        self.groups.get(&(scenario.to_string(), backend.to_string())).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Values of `metric` over the successful records of a group.
    pub fn values(&self, scenario: &str, backend: &str, metric: &str) -> Vec<f64> {
        self.records(scenario, backend)
            .iter()
            .filter(|r| r.error.is_none())
            .flat_map(figures)
            .filter(|(m, _)| m == metric)
            .map(|(_, v)| v)
            .collect()
    }

    /// The cell for one backend of a (scenario, metric) row.
    pub fn cell(&self, scenario: &str, backend: &str, metric: &str) -> Cell {
        let recs = self.records(scenario, backend);
        let values = self.values(scenario, backend, metric);
        let summary = stats::summarize(&values);
        // Each cell draws its own resamples from a seed named after it, so
        // the report is the same whatever order it is computed in.
        let median_ci = stats::bootstrap_median_ci(&values, seed(scenario, metric, backend));
        let paired = self.ratio_cell(scenario, backend, metric);
        let significance = paired.and_then(|p| match p.verdict {
            Verdict::Different(Direction::Above) => Some(Significance::Above),
            Verdict::Different(Direction::Below) => Some(Significance::Below),
            Verdict::Same { .. } => Some(Significance::SameAsNative),
            Verdict::NotJudged(_) => None,
        });
        let (ratio, ratio_ci) = (paired.map(|p| p.paired.centre), paired.map(|p| p.paired.ci));
        let mut errors: Vec<String> = Vec::new();
        let mut failed = 0;
        // Cells that never started here are "not run" (their reasons are listed apart), not failures.
        for r in recs.iter().filter(|r| !r.never_ran()) {
            if let Some(e) = &r.error {
                failed += 1;
                if errors.len() < 3 && !errors.contains(e) {
                    errors.push(e.clone());
                }
            }
        }
        Cell { summary, median_ci, ratio, ratio_ci, significance, paired, failed, errors }
    }

    /// Whether a cell's coefficient of variation is above [`stats::NOISY_CV`].
    pub fn noisy(cell: &Cell) -> bool {
        cell.summary.is_some_and(|s| s.n >= 2 && s.cv > stats::NOISY_CV)
    }

    /// The headline rows present in this set: (scenario, headline).
    pub fn headline_rows(&self) -> Vec<(String, Headline)> {
        let mut v = Vec::new();
        for sc in &self.scenarios {
            for hl in HEADLINES.iter().filter(|h| h.family == family_of(sc)) {
                v.push((sc.clone(), *hl));
            }
        }
        v
    }
}

/// Whether a difference the report calls replicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replication {
    /// The cell is not judged different (nothing to replicate).
    NotDifferent,
    /// It holds in both halves of the rounds (and in the previous run, when given).
    Holds,
    NotInBothHalves,
    /// Both halves agree, the previous run does not show it (or lacks the cell).
    NotInPrevious,
}

/// A ratio as a cost factor: >1 always means worse than native.
pub fn cost_factor(metric: &str, ratio: f64) -> f64 {
    match stats::better(metric) {
        Better::Higher if ratio > 0.0 => 1.0 / ratio,
        _ => ratio,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::HostTimings;

    fn rec(backend: &str, ready_ns: u64, error: Option<&str>) -> RunRecord {
        RunRecord {
            backend: backend.into(),
            scenario: "startup-serial".into(),
            workload: "noop".into(),
            host: HostTimings { launch_to_ready_ns: Some(ready_ns), ..Default::default() },
            error: error.map(String::from),
            started_unix_ms: 1_700_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn family_strips_a_numeric_suffix_only() {
        assert_eq!(family_of("startup-parallel-10"), "startup-parallel");
        assert_eq!(family_of("mem-bw"), "mem-bw");
        assert_eq!(family_of("startup-serial"), "startup-serial");
    }

    fn at(backend: &str, scenario: &str, round: u32, ready_ns: u64) -> RunRecord {
        RunRecord { scenario: scenario.into(), iteration: round, ..rec(backend, ready_ns, None) }
    }

    /// `rounds` rounds of startup-serial: native at `native(i)`, crun at `crun(i)`.
    fn serial(rounds: u32, native: impl Fn(u32) -> u64, crun: impl Fn(u32) -> u64) -> Vec<RunRecord> {
        (0..rounds)
            .flat_map(|i| [at("native", "startup-serial", i, native(i)), at("crun", "startup-serial", i, crun(i))])
            .collect()
    }

    const READY: &str = "host.launch_to_ready_ns";

    #[test]
    fn cell_ratio_is_paired_within_rounds() {
        // Rounds drift by ×10 each, the backend is ×2 native in every round:
        // paired, the ratio is exactly 2 with a point CI (unpaired medians would span ×0.2–20).
        let mut recs = serial(3, |i| 10u64.pow(i + 1), |i| 2 * 10u64.pow(i + 1));
        recs.push(rec("crun", 99, Some("boom")));
        let a = Aggregate::new(&recs);
        assert_eq!(a.backends, vec!["native", "crun"]);
        let c = a.cell("startup-serial", "crun", READY);
        assert!((c.ratio.unwrap() - 2.0).abs() < 1e-12, "{c:?}");
        let ci = c.ratio_ci.unwrap();
        assert!((ci.lo - 2.0).abs() < 1e-12 && (ci.hi - 2.0).abs() < 1e-12, "{ci:?}");
        assert_eq!((c.failed, c.errors.clone()), (1, vec!["boom".to_string()]));
        // Three rounds are too few to judge.
        assert_eq!(c.significance, None);
        assert_eq!(c.paired.unwrap().verdict, Verdict::NotJudged(decision::Unjudged::TooFewRounds));
        assert!(a.too_small_to_judge());
        // A cell that never started here (a placeholder: an error, no start time) is not a failure.
        let mut never = rec("crun", 0, Some("does not apply"));
        never.scenario = "cpu".into();
        never.started_unix_ms = 0;
        let c = Aggregate::new(&[never]).cell("cpu", "crun", READY);
        assert_eq!((c.failed, c.summary), (0, None));
    }

    #[test]
    fn clear_difference_over_ten_rounds_is_judged_different() {
        let a = Aggregate::new(&serial(10, |i| 10 + u64::from(i), |i| 30 + 3 * u64::from(i) + u64::from(i % 3)));
        let c = a.cell("startup-serial", "crun", READY);
        let p = c.paired.unwrap();
        assert_eq!(p.verdict, Verdict::Different(Direction::Above));
        assert_eq!(c.significance, Some(Significance::Above));
        // One judged cell: q = p = 2/2^10.
        assert_eq!((a.judged_cells(), p.q), (1, Some(2.0 / 1024.0)));
        assert_eq!(a.replicates("startup-serial", "crun", READY, None), Replication::Holds);
    }

    #[test]
    fn nine_rounds_are_not_judged() {
        let a = Aggregate::new(&serial(9, |_| 10, |i| 30 + u64::from(i)));
        let c = a.cell("startup-serial", "crun", READY);
        assert_eq!(c.significance, None);
        assert!(a.too_small_to_judge());
    }

    #[test]
    fn native_cell_has_no_ratio_and_noise_around_native_is_not_different() {
        // Ratios 1.1, 1/1.1, 1.1, ...: centre 1, nothing to call.
        let a = Aggregate::new(&serial(12, |_| 1000, |i| if i % 2 == 0 { 1100 } else { 909 }));
        let n = a.cell("startup-serial", "native", READY);
        assert_eq!((n.ratio, n.ratio_ci, n.paired), (None, None, None));
        let c = a.cell("startup-serial", "crun", READY);
        assert_eq!(c.significance, Some(Significance::SameAsNative));
        assert!(c.ratio_ci.unwrap().contains(1.0));
    }

    #[test]
    fn a_parallel_batch_is_one_observation_per_round() {
        // 10 rounds of a 5-instance batch: 10 paired observations, not 50.
        let recs: Vec<RunRecord> = (0..10)
            .flat_map(|i| {
                (0..5u64).flat_map(move |k| {
                    [at("native", "startup-parallel-5", i, 100 + k), at("crun", "startup-parallel-5", i, 300 + k)]
                })
            })
            .collect();
        let a = Aggregate::new(&recs);
        let c = a.cell("startup-parallel-5", "crun", READY);
        assert_eq!(c.summary.unwrap().n, 50);
        let p = c.paired.unwrap();
        assert_eq!(p.paired.rounds, 10);
        // Each round's batch median: 302 / 102.
        assert!((p.paired.centre - 302.0 / 102.0).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn a_difference_in_one_half_only_does_not_replicate() {
        // 20 rounds: ×2 in the first ten, ≈ native (×1.01, ×0.99) in the last ten.
        let a = Aggregate::new(&serial(
            20,
            |_| 10_000,
            |i| match (i < 10, i % 2) {
                (true, _) => 20_000,
                (false, 0) => 10_100,
                (false, _) => 9_900,
            },
        ));
        let p = a.ratio_cell("startup-serial", "crun", READY).unwrap();
        assert_eq!(p.verdict, Verdict::Different(Direction::Above), "{p:?}");
        assert!(!p.holds_in_both_halves(&a.rules));
        assert_eq!(a.replicates("startup-serial", "crun", READY, None), Replication::NotInBothHalves);
    }

    #[test]
    fn a_difference_must_hold_in_the_previous_run_when_given() {
        let now = Aggregate::new(&serial(12, |_| 100, |i| 200 + u64::from(i % 2)));
        let same = Aggregate::new(&serial(12, |_| 100, |i| 190 + u64::from(i % 3)));
        let gone = Aggregate::new(&serial(12, |_| 100, |i| if i % 2 == 0 { 110 } else { 91 }));
        let r = |prev| now.replicates("startup-serial", "crun", READY, prev);
        assert_eq!(r(None), Replication::Holds);
        assert_eq!(r(Some(&same)), Replication::Holds);
        assert_eq!(r(Some(&gone)), Replication::NotInPrevious);
    }

    #[test]
    fn the_minimum_effect_comes_from_the_rules() {
        // ×1.03 in every round: significant, 3% — below 5%, above 2%.
        let recs = serial(12, |_| 1000, |i| 1030 + u64::from(i % 2));
        let c5 = Aggregate::new(&recs).ratio_cell("startup-serial", "crun", READY).unwrap();
        assert_eq!(c5.verdict, Verdict::Same { significant_but_small: true });
        let rules = Rules { min_effect: 0.02, ..Rules::default() };
        let c2 = Aggregate::with_rules(&recs, rules).ratio_cell("startup-serial", "crun", READY).unwrap();
        assert_eq!(c2.verdict, Verdict::Different(Direction::Above));
    }

    #[test]
    fn host_wide_memavailable_is_not_a_headline() {
        // It drifts by more than an instance costs and went negative; it stays in results.csv only.
        assert!(HEADLINES.iter().all(|h| !h.metric.contains("memavail")));
    }

    #[test]
    fn cost_factor_inverts_throughput_ratios() {
        assert_eq!(cost_factor("workload.copy_gb_s", 0.5), 2.0);
        assert_eq!(cost_factor("workload.p50_us", 2.0), 2.0);
    }
}
