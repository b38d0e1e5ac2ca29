//! Turns a result set's records into cells: per scenario × metric × backend,
//! the distribution of successful values with a bootstrap CI of its median,
//! its ratio to native with a bootstrap CI of the ratio (and whether that
//! excludes 1), and the errors of failed runs. Everything the Markdown and the charts show comes
//! from here.

use crate::backend::BackendId;
use std::collections::BTreeMap;

use crate::record::RunRecord;
use crate::results::figures;
use crate::stats::{self, Better, Interval, Significance, Summary};

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

/// One backend's cell of one (scenario, metric) row.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub summary: Option<Summary>,
    /// Bootstrap 95% CI of the median.
    pub median_ci: Option<Interval>,
    /// Median ÷ native's median, when native has this row.
    pub ratio: Option<f64>,
    /// Bootstrap 95% CI of the ratio.
    pub ratio_ci: Option<Interval>,
    /// Where the ratio's CI lies with respect to 1.
    pub significance: Option<Significance>,
    /// Runs in the cell that failed, and the first distinct errors.
    pub failed: usize,
    pub errors: Vec<String>,
}

/// Every record of a result set grouped for reporting.
pub struct Aggregate {
    /// Backends in report order (native first, then as first seen).
    pub backends: Vec<String>,
    /// Scenarios in first-seen order.
    pub scenarios: Vec<String>,
    /// (scenario, backend) → records.
    pub groups: BTreeMap<(String, String), Vec<RunRecord>>,
    /// What the host was, for the marks a figure carries (none until [`Aggregate::on`]).
    pub platform: super::platform::Platform,
}

impl Aggregate {
    pub fn new(records: &[RunRecord]) -> Aggregate {
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
        Aggregate { backends, scenarios, groups, platform: Default::default() }
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
        let native_values = self.values(scenario, BackendId::Native.name(), metric);
        let summary = stats::summarize(&values);
        let native = stats::median(&native_values);
        // Each cell draws its own resamples from a seed named after it, so
        // the report is the same whatever order it is computed in.
        let seed = stats::seed_of(&format!("{scenario}|{metric}|{backend}"));
        let median_ci = stats::bootstrap_median_ci(&values, seed);
        // A ratio of a negative or zero figure means nothing, so none is given.
        let positive = values.iter().chain(&native_values).all(|v| *v > 0.0);
        let (ratio, ratio_ci) = match (summary, native) {
            (Some(s), Some(n)) if backend != BackendId::Native.name() && positive => {
                (stats::ratio(s.median, n), stats::bootstrap_ratio_ci(&values, &native_values, seed ^ 0x5eed))
            }
            _ => (None, None),
        };
        let judged = values.len() >= stats::MIN_N_SIGNIFICANCE && native_values.len() >= stats::MIN_N_SIGNIFICANCE;
        let significance = ratio_ci.as_ref().filter(|_| judged).map(stats::significance);
        let mut errors: Vec<String> = Vec::new();
        let mut failed = 0;
        for r in recs {
            if let Some(e) = &r.error {
                failed += 1;
                if errors.len() < 3 && !errors.contains(e) {
                    errors.push(e.clone());
                }
            }
        }
        Cell { summary, median_ci, ratio, ratio_ci, significance, failed, errors }
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
            ..Default::default()
        }
    }

    #[test]
    fn family_strips_a_numeric_suffix_only() {
        assert_eq!(family_of("startup-parallel-10"), "startup-parallel");
        assert_eq!(family_of("mem-bw"), "mem-bw");
        assert_eq!(family_of("startup-serial"), "startup-serial");
    }

    #[test]
    fn cell_ratio_is_median_over_native_median() {
        let a = Aggregate::new(&[
            rec("crun", 8, None),
            rec("native", 2, None),
            rec("native", 4, None),
            rec("crun", 10, None),
            rec("crun", 99, Some("boom")),
        ]);
        assert_eq!(a.backends, vec!["native", "crun"]);
        let c = a.cell("startup-serial", "crun", "host.launch_to_ready_ns");
        assert_eq!(c.summary.unwrap().median, 9.0);
        assert_eq!(c.ratio, Some(3.0));
        assert_eq!((c.failed, c.errors.clone()), (1, vec!["boom".to_string()]));
        // 8 and 10 against 2 and 4: every resampled ratio lies in [2, 5].
        let ci = c.ratio_ci.unwrap();
        assert!(ci.lo >= 2.0 && ci.hi <= 5.0, "{ci:?}");
        // Two values a side are too few to judge.
        assert_eq!(c.significance, None);
    }

    #[test]
    fn clear_difference_with_enough_runs_is_significant() {
        let mut recs: Vec<RunRecord> = (0..5).map(|i| rec("native", 10 + i, None)).collect();
        recs.extend((0..5).map(|i| rec("crun", 30 + i, None)));
        let c = Aggregate::new(&recs).cell("startup-serial", "crun", "host.launch_to_ready_ns");
        assert_eq!(c.significance, Some(Significance::Above));
    }

    #[test]
    fn native_cell_has_no_ratio_and_overlap_is_not_significant() {
        let a = Aggregate::new(&[
            rec("native", 10, None),
            rec("native", 12, None),
            rec("native", 11, None),
            rec("native", 10, None),
            rec("native", 12, None),
            rec("crun", 11, None),
            rec("crun", 10, None),
            rec("crun", 12, None),
            rec("crun", 11, None),
            rec("crun", 12, None),
        ]);
        let n = a.cell("startup-serial", "native", "host.launch_to_ready_ns");
        assert_eq!((n.ratio, n.ratio_ci), (None, None));
        let c = a.cell("startup-serial", "crun", "host.launch_to_ready_ns");
        assert_eq!(c.significance, Some(Significance::SameAsNative));
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
