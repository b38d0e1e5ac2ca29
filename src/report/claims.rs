//! "What the lecture says, checked": the course's claims about isolation beside this run's
//! cells, each with a verdict computed from the cells' ratios and CIs (holds; holds within
//! ×a–b; does not hold here, and why; or not measured in this run). Every comparison goes
//! through [`compare`], the one place a ratio and its CI are taken from the cells.

use std::fmt::Write as _;

use super::aggregate::{cost_factor, Aggregate};
use crate::backend::{BackendId, Kind};
use crate::figures::num;
use crate::stats::{self, decision, paired, Interval};

/// Our container without the memory cgroup controller, and with the host's network
/// namespace (backends of their own; named here until the report meets them in a run).
pub const NO_MEMCG: &str = BackendId::ContainerNomemcg.name();
pub const HOST_NET: &str = BackendId::ContainerHostnet.name();

/// A cost below this is no difference worth a claim, whatever its CI (the report's default).
pub const MIN_EFFECT: f64 = decision::DEFAULT_MIN_EFFECT;
/// "A few percent": the most a cost may be and still be called that.
pub const FEW_PERCENT: f64 = 0.10;

/// One comparison: a backend's figure against a baseline's, as a cost factor (> 1 = worse)
/// with its CI turned the same way.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub what: String,
    pub cost: f64,
    pub ci: Interval,
    /// Whether the cell had enough rounds to be judged.
    pub judged: bool,
    /// The backend compared (its platform marks apply to the comparison).
    pub backend: String,
}

impl Comparison {
    fn contains_one(&self) -> bool {
        self.ci.lo <= 1.0 && self.ci.hi >= 1.0
    }

    fn text(&self) -> String {
        format!("{} ×{} (×{}–{})", self.what, num(self.cost), num(self.ci.lo), num(self.ci.hi))
    }
}

/// The cell of `backend` against `baseline` for one metric, paired per round like every
/// ratio of the report. Against native this is the table's ratio cell
/// (`Aggregate::ratio_cell`); against another backend, the same pairing and round bootstrap.
pub fn compare(a: &Aggregate, scenario: &str, metric: &str, backend: &str, baseline: &str) -> Option<Comparison> {
    let p = if baseline == BackendId::Native.name() {
        a.ratio_cell(scenario, backend, metric)?.paired
    } else {
        let b = paired::per_round(&a.round_values(scenario, backend, metric));
        let n = paired::per_round(&a.round_values(scenario, baseline, metric));
        let logs: Vec<f64> = paired::log_ratios(&b, &n).into_iter().map(|(_, l)| l).collect();
        paired::paired(&logs, stats::seed_of(&format!("{scenario}|{metric}|{backend}|vs|{baseline}")))?
    };
    let (ratio, ci, judged) = (p.centre, p.ci, p.rounds >= a.rules.min_rounds);
    let turned = stats::better(metric) == stats::Better::Higher;
    let ci = if turned { Interval { lo: 1.0 / ci.hi, hi: 1.0 / ci.lo } } else { ci };
    let what = format!("{scenario} {} {backend}{} vs {baseline}", short_metric(metric), a.platform.suffix(backend));
    Some(Comparison { what, cost: cost_factor(metric, ratio), ci, judged, backend: backend.to_string() })
}

fn short_metric(metric: &str) -> &str {
    metric.rsplit('.').next().unwrap_or(metric)
}

/// What the run says about a claim.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Every judged comparison's CI contains 1.
    Holds {
        lo: f64,
        hi: f64,
    },
    /// Some differ, but every cost lies within the claim's tolerance.
    HoldsWithin {
        lo: f64,
        hi: f64,
    },
    DoesNotHold(String),
    NotMeasured(String),
}

impl Verdict {
    pub fn text(&self) -> String {
        match self {
            Verdict::Holds { lo, hi } => format!(
                "**holds** as far as this run can tell: no CI excludes ×1, but together they span ×{}–{}",
                num(*lo),
                num(*hi)
            ),
            Verdict::HoldsWithin { lo, hi } => format!("**holds within ×{}–{}**", num(*lo), num(*hi)),
            Verdict::DoesNotHold(why) => format!("**does not hold here**: {why}"),
            Verdict::NotMeasured(why) => format!("not measured in this run ({why})"),
        }
    }
}

fn span(cs: &[&Comparison]) -> (f64, f64) {
    (cs.iter().map(|c| c.ci.lo).fold(f64::INFINITY, f64::min), cs.iter().map(|c| c.ci.hi).fold(0.0, f64::max))
}

/// A claim of "no cost" (or of a cost at most `tolerance`): holds when every judged CI
/// contains 1, holds within the CIs' span when every cost stays within `1 + tolerance`,
/// otherwise names the largest cost.
pub fn judge_equal(cs: &[Comparison], tolerance: f64, missing: &str) -> Verdict {
    let judged: Vec<&Comparison> = cs.iter().filter(|c| c.judged).collect();
    if judged.is_empty() {
        return Verdict::NotMeasured(if cs.is_empty() {
            missing.to_string()
        } else {
            format!("{} cells, none with {} rounds", cs.len(), decision::MIN_ROUNDS)
        });
    }
    let (lo, hi) = span(&judged);
    if judged.iter().all(|c| c.contains_one()) {
        return Verdict::Holds { lo, hi };
    }
    let worst = judged.iter().filter(|c| !c.contains_one()).max_by(|a, b| a.cost.total_cmp(&b.cost));
    match worst {
        Some(w) if w.cost > 1.0 + tolerance => Verdict::DoesNotHold(format!(
            "{} of {} cells differ; the largest cost is {}",
            judged.iter().filter(|c| !c.contains_one()).count(),
            judged.len(),
            w.text()
        )),
        _ => Verdict::HoldsWithin { lo, hi },
    }
}

/// A claim of a cost ("VMs pay for ..."): holds when every judged comparison costs more than
/// the minimum effect with a CI above 1; names the ones that do not.
pub fn judge_costs(cs: &[Comparison], missing: &str) -> Verdict {
    let judged: Vec<&Comparison> = cs.iter().filter(|c| c.judged).collect();
    if judged.is_empty() {
        return Verdict::NotMeasured(if cs.is_empty() {
            missing.to_string()
        } else {
            format!("{} cells, none with {} rounds", cs.len(), decision::MIN_ROUNDS)
        });
    }
    let (lo, hi) = span(&judged);
    let free: Vec<&&Comparison> = judged.iter().filter(|c| !(c.ci.lo > 1.0 && c.cost >= 1.0 + MIN_EFFECT)).collect();
    if free.is_empty() {
        Verdict::HoldsWithin { lo, hi }
    } else {
        Verdict::DoesNotHold(format!(
            "no cost of at least {:.0}% shown by {}",
            MIN_EFFECT * 100.0,
            free.iter().map(|c| c.text()).collect::<Vec<_>>().join("; ")
        ))
    }
}

/// One row of the section.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    pub lecture: &'static str,
    pub compared: String,
    pub evidence: Vec<Comparison>,
    pub verdict: Verdict,
}

const CPU: &[&str] = &["workload.sha256_mib_per_s", "workload.sieve_mnum_per_s", "workload.matmul_gflops"];
const MEM: &[(&str, &str)] = &[
    ("mem-bw", "workload.copy_gb_s"),
    ("mem-bw", "workload.triad_gb_s"),
    ("mem-touch", "workload.touch_ns_per_page"),
    ("mem-touch", "workload.chase_ns_per_access"),
];
const NET: &[(&str, &str)] =
    &[("net-stream", "workload.gbit_per_s"), ("net-rr", "workload.p50_us"), ("net-rr", "workload.p99_us")];

fn ran(a: &Aggregate, b: &str) -> bool {
    a.groups.iter().any(|((_, gb), rs)| gb == b && rs.iter().any(|r| r.error.is_none()))
}

fn of_kind(a: &Aggregate, kinds: &[Kind]) -> Vec<String> {
    a.backends
        .iter()
        .filter(|b| b.parse::<BackendId>().is_ok_and(|id| kinds.contains(&id.kind())) && ran(a, b))
        .cloned()
        .collect()
}

fn all(a: &Aggregate, cells: &[(&str, &str)], backends: &[String], baseline: &str) -> Vec<Comparison> {
    backends.iter().flat_map(|b| cells.iter().filter_map(move |(sc, m)| compare(a, sc, m, b, baseline))).collect()
}

/// Every claim, checked against `a`.
pub fn check(a: &Aggregate) -> Vec<Claim> {
    let native = BackendId::Native.name();
    let container = BackendId::Container.name().to_string();
    let containers = of_kind(a, &[Kind::Container]);
    let cpu: Vec<(&str, &str)> = CPU.iter().map(|m| ("cpu", *m)).collect();
    let mut v = Vec::new();

    let ev = all(a, &cpu, &containers, native);
    v.push(Claim {
        lecture: "Containers run on the host kernel as ordinary processes, so their CPU performance equals native.",
        compared: format!("cpu (SHA-256, sieve, matmul) of {} vs native", list(&containers)),
        verdict: judge_equal(&ev, MIN_EFFECT, "no cpu cells for a container and native"),
        evidence: ev,
    });

    let ev = all(a, MEM, std::slice::from_ref(&container), NO_MEMCG);
    v.push(Claim {
        lecture: "Memory performance loses \"a few percent\" to (optional) cgroup memory accounting.",
        compared: format!("mem-bw and mem-touch of container (memory controller on) vs {NO_MEMCG} (off)"),
        verdict: judge_equal(&ev, FEW_PERCENT, &format!("no {NO_MEMCG} cells: the backend did not run")),
        evidence: ev,
    });

    let ev = all(a, NET, std::slice::from_ref(&container), native);
    v.push(Claim {
        lecture: "Network overhead of a container is small.",
        compared: "net-stream and net-rr of container (veth into its own namespace) vs native".into(),
        verdict: judge_equal(&ev, FEW_PERCENT, "no net cells for container and native"),
        evidence: ev,
    });

    let mut ev = all(a, NET, &[HOST_NET.to_string()], native);
    ev.extend(all(a, NET, std::slice::from_ref(&container), HOST_NET));
    let hostnet_only: Vec<Comparison> =
        ev.iter().filter(|c| c.what.contains(&format!("{HOST_NET} vs"))).cloned().collect();
    v.push(Claim {
        lecture: "... and can be made zero (share the host's network namespace).",
        compared: format!(
            "net of {HOST_NET} vs native (the verdict); container vs {HOST_NET} shows what the veth costs"
        ),
        verdict: judge_equal(&hostnet_only, MIN_EFFECT, &format!("no {HOST_NET} cells: the backend did not run")),
        evidence: ev,
    });

    let vms = of_kind(a, &[Kind::BareVm, Kind::Vm]);
    let exits = [
        ("syscall", "workload.ns_per_call"),
        ("mem-touch", "workload.touch_ns_per_page"),
        ("net-rr", "workload.p50_us"),
    ];
    let ev = all(a, &exits, &vms, native);
    v.push(Claim {
        lecture: "VMs pay for their indirections (a guest OS, the hypervisor).",
        compared: format!(
            "system calls, first touch of memory and TCP round trips of {} vs native{}",
            list(&vms),
            bare_note(&vms)
        ),
        verdict: judge_costs(&ev, "no VM backend ran a work scenario"),
        evidence: ev,
    });

    let ev = all(a, &[("footprint", "footprint.pss_kib")], &vms, native);
    v.push(Claim {
        lecture: "VMs have a large memory footprint.",
        compared: format!("idle PSS of {} vs native{}", list(&vms), bare_note(&vms)),
        verdict: judge_costs(&ev, "no footprint cells for a VM backend"),
        evidence: ev,
    });

    let ev = all(a, &[("startup-serial", "host.launch_to_ready_ns")], &vms, native);
    v.push(Claim {
        lecture: "VMs start slowly.",
        compared: format!("noop launch→READY of {} vs native{}", list(&vms), bare_note(&vms)),
        verdict: judge_costs(&ev, "no startup cells for a VM backend"),
        evidence: ev,
    });
    v
}

/// The data column: each comparison when there are few, else their range and the largest.
pub fn evidence_text(ev: &[Comparison]) -> String {
    if ev.is_empty() {
        return "—".into();
    }
    if ev.len() <= 4 {
        return ev.iter().map(Comparison::text).collect::<Vec<_>>().join("; ");
    }
    let lo = ev.iter().map(|c| c.cost).fold(f64::INFINITY, f64::min);
    let hi = ev.iter().map(|c| c.cost).fold(0.0, f64::max);
    let refs: Vec<&Comparison> = ev.iter().collect();
    let (clo, chi) = span(&refs);
    let worst = ev.iter().max_by(|a, b| a.cost.total_cmp(&b.cost)).map(Comparison::text).unwrap_or_default();
    format!(
        "{} cells: cost factors ×{}–{} (CIs ×{}–{}); the largest: {worst}",
        ev.len(),
        num(lo),
        num(hi),
        num(clo),
        num(chi)
    )
}

fn list(bs: &[String]) -> String {
    if bs.is_empty() {
        "(none ran)".into()
    } else {
        bs.join(", ")
    }
}

fn bare_note(vms: &[String]) -> &'static str {
    let bare = vms.iter().any(|b| b == BackendId::MicrovmBare.name());
    let linux = vms.iter().any(|b| b.parse::<BackendId>().is_ok_and(|id| id.kind() == Kind::Vm));
    match (bare, linux) {
        (true, true) => " (microvm-bare is the bare VM, no guest kernel: it shows the hypervisor's share alone)",
        (true, false) => {
            " (microvm-bare is the bare VM, no guest kernel: it shows the hypervisor's share alone; no Linux-guest \
             VM ran here, so the guest OS's share is not measured)"
        }
        _ => "",
    }
}

/// The markdown section.
pub fn section(a: &Aggregate) -> String {
    let mut s = String::from("## What the lecture says, checked\n\n");
    s.push_str(&format!(
        "Each claim beside this run's cells: cost factors (> 1 = worse than the baseline; throughput turned as \
         baseline ÷ backend) with their 95% CIs, taken from the same cells as the tables. A difference counts \
         only when its CI excludes 1 and it is at least {:.0}% (\"a few percent\": at most {:.0}%).\n\n",
        MIN_EFFECT * 100.0,
        FEW_PERCENT * 100.0
    ));
    s.push_str("| the lecture says | this run compares | data | verdict |\n|---|---|---|---|\n");
    for c in check(a) {
        let mut verdict = c.verdict.text();
        let marks = a.platform.used(c.evidence.iter().map(|e| e.backend.as_str()));
        if !marks.is_empty() && !matches!(c.verdict, Verdict::NotMeasured(_)) {
            let sym: String = marks.iter().map(|m| m.symbol()).collect();
            verdict.push_str(&format!(" ({sym}: the size of these costs is this host's platform's)"));
        }
        let _ = writeln!(s, "| {} | {} | {} | {verdict} |", c.lecture, c.compared, evidence_text(&c.evidence));
    }
    let key = a.platform.key(a.backends.iter().map(String::as_str));
    if !key.is_empty() {
        let _ = writeln!(s, "\n{key}");
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RunRecord;

    fn c(cost: f64, lo: f64, hi: f64) -> Comparison {
        Comparison { what: "x".into(), cost, ci: Interval { lo, hi }, judged: true, backend: "b".into() }
    }

    #[test]
    fn equal_claim_holds_when_every_ci_contains_one() {
        assert_eq!(
            judge_equal(&[c(1.02, 0.9, 1.1), c(0.98, 0.95, 1.01)], 0.05, "m"),
            Verdict::Holds { lo: 0.9, hi: 1.1 }
        );
    }

    #[test]
    fn equal_claim_holds_within_a_small_significant_cost() {
        assert_eq!(judge_equal(&[c(1.04, 1.02, 1.06)], 0.05, "m"), Verdict::HoldsWithin { lo: 1.02, hi: 1.06 });
    }

    #[test]
    fn equal_claim_fails_on_a_large_cost_and_names_it() {
        let v = judge_equal(&[c(1.0, 0.9, 1.1), c(1.5, 1.3, 1.7)], 0.05, "m");
        assert!(matches!(&v, Verdict::DoesNotHold(w) if w.contains("×1.50") && w.contains("1 of 2")), "{v:?}");
    }

    #[test]
    fn absent_or_unjudged_cells_are_not_measured() {
        assert_eq!(judge_equal(&[], 0.05, "no nomemcg"), Verdict::NotMeasured("no nomemcg".into()));
        let mut u = c(2.0, 1.5, 2.5);
        u.judged = false;
        assert!(matches!(judge_costs(&[u], "m"), Verdict::NotMeasured(w) if w.contains("none with")));
    }

    #[test]
    fn cost_claim_holds_only_when_every_cost_is_clear() {
        assert_eq!(
            judge_costs(&[c(8.0, 6.0, 9.0), c(150.0, 120.0, 200.0)], "m"),
            Verdict::HoldsWithin { lo: 6.0, hi: 200.0 }
        );
        let v = judge_costs(&[c(8.0, 6.0, 9.0), c(1.0, 0.8, 1.2)], "m");
        assert!(matches!(v, Verdict::DoesNotHold(_)), "{v:?}");
        // Significant but below the minimum effect is no cost.
        assert!(matches!(judge_costs(&[c(1.02, 1.01, 1.03)], "m"), Verdict::DoesNotHold(_)));
    }

    fn rec(backend: &str, scenario: &str, metric: &str, v: f64, round: u32) -> RunRecord {
        RunRecord {
            backend: backend.into(),
            scenario: scenario.into(),
            iteration: round,
            metrics: [(metric.to_string(), v)].into_iter().collect(),
            ..Default::default()
        }
    }

    #[test]
    fn run_fixture_gives_known_verdicts() {
        let mut rs = Vec::new();
        // Twelve rounds; the container's CPU figure within ±0.1% of native's, alternately.
        for i in 0..12u32 {
            let j = f64::from(i) * 0.01;
            let e = if i % 2 == 0 { 1.001 } else { 0.999 };
            rs.push(rec("native", "cpu", "sha256_mib_per_s", 100.0 + j, i));
            rs.push(rec("container", "cpu", "sha256_mib_per_s", (100.0 + j) * e, i));
            rs.push(rec("native", "syscall", "ns_per_call", 100.0 + j, i));
            rs.push(rec("microvm-bare", "syscall", "ns_per_call", 15000.0 + j, i));
        }
        let a = Aggregate::new(&rs);
        let claims = check(&a);
        assert!(matches!(claims[0].verdict, Verdict::Holds { .. }), "{:?}", claims[0]);
        assert!(matches!(claims[1].verdict, Verdict::NotMeasured(_)), "{:?}", claims[1]);
        let vm = &claims[4];
        assert!(matches!(vm.verdict, Verdict::HoldsWithin { .. }), "{vm:?}");
        assert!(vm.compared.contains("no guest kernel"), "{}", vm.compared);
        assert!(vm.compared.contains("guest OS's share is not measured"), "{}", vm.compared);
        assert!((vm.evidence[0].cost - 150.0).abs() < 0.1);
    }

    #[test]
    fn throughput_against_another_backend_is_turned_into_a_cost() {
        let mut rs = Vec::new();
        for i in 0..12u32 {
            rs.push(rec("container", "mem-bw", "copy_gb_s", 9.0 + f64::from(i) * 0.01, i));
            rs.push(rec(NO_MEMCG, "mem-bw", "copy_gb_s", 10.0 + f64::from(i) * 0.01, i));
        }
        let a = Aggregate::new(&rs);
        let cmp = compare(&a, "mem-bw", "workload.copy_gb_s", "container", NO_MEMCG).unwrap();
        // Paired per round: every round's cost lies between 10.11/9.11 and 10/9.
        assert!(cmp.cost > 10.11 / 9.11 && cmp.cost < 10.0 / 9.0, "{cmp:?}");
        assert!(cmp.ci.lo > 1.0 && cmp.judged);
        // A loss of about 11% is more than "a few percent".
        assert!(matches!(check(&a)[1].verdict, Verdict::DoesNotHold(_)));
    }
}
