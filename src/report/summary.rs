//! The report's executive summary, computed from the cells: what isolation
//! costs here per kind (containers, VMs), in three to six sentences. It
//! names only differences the report judges (BH over every judged cell and
//! the minimum effect) that also hold in both halves of the rounds, and in
//! the previous run when one is given; a run with too few rounds says it is
//! too small to judge and names none.

use super::aggregate::{cost_factor, family_of, Aggregate, Cell, Replication};
use super::backends::{self, Kind};
use crate::backend::BackendId;
use crate::figures::num;
use crate::stats::decision::Verdict;

/// Families whose headline metrics are throughput or latency of work done
/// inside the instance (not its start or its memory).
const WORK: &[&str] = &["cpu", "mem-bw", "mem-touch", "syscall", "net-stream", "net-rr", "disk"];

fn ran(a: &Aggregate, b: &str) -> bool {
    a.groups.iter().any(|((_, gb), recs)| gb == b && recs.iter().any(|r| r.error.is_none()))
}

fn members(a: &Aggregate, kind: Kind) -> Vec<&str> {
    a.backends.iter().map(String::as_str).filter(|b| backends::kind(b) == kind && ran(a, b)).collect()
}

fn range(vals: &[f64]) -> Option<(f64, f64)> {
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    lo.is_finite().then_some((lo, hi))
}

fn span(lo: f64, hi: f64, unit: &str) -> String {
    if num(lo) == num(hi) {
        format!("{} {unit}", num(lo))
    } else {
        format!("{}–{} {unit}", num(lo), num(hi))
    }
}

/// How a set of ratio cells came out: named differences (judged different
/// and replicated) with their cost factors, and the counts of the rest.
#[derive(Default)]
struct Tally {
    /// (cost factor, "label on backend", raw ratio) of every named difference.
    named: Vec<(f64, String, f64)>,
    /// Judged different over the whole run but not replicated.
    unreplicated: usize,
    /// Judged ≈ native.
    same: usize,
    /// With a paired ratio but too few rounds to judge.
    unjudged: usize,
}

impl Tally {
    fn add(&mut self, a: &Aggregate, previous: Option<&Aggregate>, sc: &str, b: &str, metric: &str, label: &str) {
        let Some(c) = a.ratio_cell(sc, b, metric) else { return };
        match c.verdict {
            Verdict::NotJudged(_) => self.unjudged += 1,
            Verdict::Same { .. } => self.same += 1,
            Verdict::Different(_) => match a.replicates(sc, b, metric, previous) {
                Replication::Holds => self.named.push((
                    cost_factor(metric, c.paired.centre),
                    format!("{label} on {b}{}", a.platform.suffix(b)),
                    c.paired.centre,
                )),
                _ => self.unreplicated += 1,
            },
        }
    }
    fn judged(&self) -> usize {
        self.named.len() + self.unreplicated + self.same
    }
}

/// Where a named difference had to hold besides the whole run.
fn where_held(previous: Option<&Aggregate>) -> &'static str {
    if previous.is_some() {
        "in both halves of the rounds and in the previous run"
    } else {
        "in both halves of the rounds"
    }
}

/// One sentence on a scenario's metric (startup, memory) per kind.
fn per_kind(
    a: &Aggregate,
    previous: Option<&Aggregate>,
    scenario: &str,
    metric: &str,
    (scale, unit): (f64, &str),
    what: &str,
) -> Option<String> {
    let native = a.cell(scenario, BackendId::Native.name(), metric).summary.map(|s| s.median * scale);
    let mut parts = Vec::new();
    for kind in Kind::COMPARED {
        let cells: Vec<(&str, Cell)> = members(a, kind)
            .into_iter()
            .map(|b| (b, a.cell(scenario, b, metric)))
            .filter(|(_, c)| c.summary.is_some())
            .collect();
        let meds: Vec<f64> = cells.iter().filter_map(|(_, c)| c.summary.map(|s| s.median * scale)).collect();
        let Some((lo, hi)) = range(&meds) else { continue };
        let mut t = Tally::default();
        for (b, _) in &cells {
            t.add(a, previous, scenario, b, metric, "");
        }
        let ratios: Vec<f64> = t.named.iter().map(|x| x.2).collect();
        let mut rest = Vec::new();
        if t.same > 0 {
            rest.push(format!("{} ≈ native", t.same));
        }
        if t.unreplicated > 0 {
            rest.push(format!("{} different over the run but not {}", t.unreplicated, where_held(previous)));
        }
        if t.unjudged > 0 {
            rest.push(format!("{} not judged: fewer than {} rounds", t.unjudged, a.rules.min_rounds));
        }
        let ratio = match range(&ratios) {
            Some((rl, rh)) if rest.is_empty() => {
                format!(
                    " (×{} native, every one different and held {})",
                    span(rl, rh, "").trim_end(),
                    where_held(previous)
                )
            }
            Some((rl, rh)) => format!(
                " (×{} native where a difference held {}; {})",
                span(rl, rh, "").trim_end(),
                where_held(previous),
                rest.join(", ")
            ),
            None if native.is_some() && !rest.is_empty() => format!(" ({})", rest.join(", ")),
            None => String::new(),
        };
        let mark = cells.iter().map(|(b, _)| a.platform.suffix(b)).max().unwrap_or_default();
        parts.push(format!("{}{mark} {}{ratio}", kind.plural(), span(lo, hi, unit)));
    }
    if parts.is_empty() {
        return None;
    }
    let base = native.map(|n| format!("natively {} {unit}; ", num(n))).unwrap_or_default();
    Some(format!("{what}: {base}{}.", parts.join("; ")))
}

/// One sentence on the work cells of a kind: which differ from native.
fn work_sentence(a: &Aggregate, previous: Option<&Aggregate>, kind: Kind) -> Option<String> {
    let bs = members(a, kind);
    if bs.is_empty() {
        return None;
    }
    let mut t = Tally::default();
    for (sc, hl) in a.headline_rows().into_iter().filter(|(sc, _)| WORK.contains(&family_of(sc))) {
        for b in &bs {
            t.add(a, previous, &sc, b, hl.metric, hl.label);
        }
    }
    let marked: Vec<String> = bs.iter().map(|b| format!("{b}{}", a.platform.suffix(b))).collect();
    let who = format!("{} ({})", capitalised(kind.plural()), marked.join(", "));
    let total = t.judged();
    if total == 0 {
        return (t.unjudged > 0).then(|| {
            format!(
                "{who}: none of the {} throughput and I/O cells has {} rounds, so no difference from native is \
                 claimed.",
                t.unjudged, a.rules.min_rounds
            )
        });
    }
    let min = format!("{:.0}%", a.rules.min_effect * 100.0);
    if t.named.is_empty() {
        let mut s = format!("{who}: none of the {total} judged throughput and I/O cells differs from native by {min} or more in a way that held {}", where_held(previous));
        if t.unreplicated > 0 {
            s.push_str(&format!(" ({} did over the whole run only)", t.unreplicated));
        }
        s.push('.');
        return Some(s);
    }
    t.named.sort_by(|x, y| y.0.total_cmp(&x.0));
    let worst = &t.named[0];
    let mut s = format!(
        "{who}: {} of {total} judged throughput and I/O cells differ from native (BH q ≤ {}, effect ≥ {min}) and held {}, \
         the largest cost {} (×{} slower)",
        t.named.len(),
        a.rules.fdr_q,
        where_held(previous),
        worst.1,
        num(worst.0)
    );
    if let Some(best) = t.named.iter().rev().find(|x| x.0 < 1.0) {
        s.push_str(&format!(", the largest gain {} (×{} faster)", best.1, num(1.0 / best.0)));
    }
    if t.unreplicated > 0 {
        s.push_str(&format!(
            "; {} more differ over the whole run but did not replicate and are not named",
            t.unreplicated
        ));
    }
    s.push_str(&format!("; the other {} are ≈ native.", t.same));
    Some(s)
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

/// A run with no cell beside native (the swarm's own bench: docker only) judges nothing.
pub const NO_NATIVE: &str = "This run has no cell with native beside it (e.g. the swarm's own bench: docker only), so \
     nothing in it is judged against native; its figures are descriptive.";

/// The sentence that opens the summary of a run too small to judge.
fn too_small(a: &Aggregate) -> String {
    if a.ratio_cells().next().is_none() {
        return NO_NATIVE.to_string();
    }
    let most = a.ratio_cells().map(|(_, c)| c.paired.rounds).max().unwrap_or(0);
    format!(
        "This run is too small to judge: no ratio cell has the {} paired rounds a verdict needs (the most any has \
         is {most}), so the report calls nothing different from native; its figures are descriptive.",
        a.rules.min_rounds
    )
}

/// The summary paragraph (three to six sentences). A difference is named
/// only when it is judged different and holds in both halves of the rounds
/// (and in `previous`, the run before, when given).
pub fn executive(a: &Aggregate, previous: Option<&Aggregate>) -> String {
    let mut s: Vec<String> = Vec::new();
    if a.too_small_to_judge() {
        s.push(too_small(a));
    }
    if let Some(x) = per_kind(
        a,
        previous,
        "startup-serial",
        "host.launch_to_ready_ns",
        (1e-6, "ms"),
        "Start (noop launch→READY, median)",
    ) {
        s.push(x);
    }
    if !a.too_small_to_judge() {
        for kind in Kind::COMPARED {
            s.extend(work_sentence(a, previous, kind));
        }
    }
    if let Some(x) = per_kind(
        a,
        previous,
        "footprint",
        "footprint.pss_kib",
        (1.0 / 1024.0, "MiB"),
        "Idle memory (PSS of the instance's host processes)",
    ) {
        s.push(x);
    }
    let cells: Vec<Cell> = a
        .headline_rows()
        .into_iter()
        .flat_map(|(sc, hl)| a.backends.iter().map(move |b| (sc.clone(), hl, b.clone())))
        .map(|(sc, hl, b)| a.cell(&sc, &b, hl.metric))
        .collect();
    let noisy = cells.iter().filter(|c| Aggregate::noisy(c)).count();
    let missing: Vec<&str> = a.backends.iter().map(String::as_str).filter(|b| !ran(a, b)).collect();
    let mut last = format!(
        "{noisy} of {} cells are noisy (CV above {:.0}%)",
        cells.iter().filter(|c| c.summary.is_some()).count(),
        crate::stats::NOISY_CV * 100.0
    );
    if !missing.is_empty() {
        last.push_str(&format!("; {} could not run here (see *Backends*)", missing.join(", ")));
    }
    last.push('.');
    s.truncate(6);
    s.push(last);
    let key = a.platform.key(a.backends.iter().map(String::as_str).filter(|b| ran(a, b)));
    if !key.is_empty() {
        s.push(key);
    }
    s.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{HostTimings, RunRecord};

    fn rec(backend: &str, scenario: &str, round: u32, ready: u64, gbit: f64) -> RunRecord {
        RunRecord {
            backend: backend.into(),
            scenario: scenario.into(),
            iteration: round,
            host: HostTimings { launch_to_ready_ns: Some(ready), ..Default::default() },
            metrics: [("gbit_per_s".to_string(), gbit)].into_iter().collect(),
            ..Default::default()
        }
    }

    /// `rounds` rounds: every container starts ×30 native; TCP stream:
    /// crun ≈ native, runc ×0.5 in every round, docker ×0.5 in the first
    /// half only (≈ native in the second).
    fn run(rounds: u32, runc_stream: f64) -> Vec<RunRecord> {
        let mut recs = Vec::new();
        for i in 0..rounds {
            let wiggle = if i % 2 == 0 { 1.01 } else { 0.99 };
            let ns = 1_000_000 + u64::from(i % 2) * 1000;
            recs.push(rec("native", "startup-serial", i, ns, 1.0));
            for b in ["crun", "runc", "docker"] {
                recs.push(rec(b, "startup-serial", i, 30 * ns + u64::from(i % 3) * 1000, 1.0));
            }
            recs.push(rec("native", "net-stream", i, 1, 10.0));
            recs.push(rec("crun", "net-stream", i, 1, 10.0 * wiggle));
            recs.push(rec("runc", "net-stream", i, 1, 10.0 * runc_stream * wiggle));
            recs.push(rec("docker", "net-stream", i, 1, if i < rounds / 2 { 5.0 } else { 10.0 * wiggle }));
        }
        recs
    }

    fn sentences(s: &str) -> usize {
        s.matches(". ").count() + 1
    }

    #[test]
    fn summary_names_only_differences_that_hold_in_both_halves() {
        let s = executive(&Aggregate::new(&run(20, 0.5)), None);
        assert!(s.contains("natively 1.00 ms"), "{s}");
        assert!(s.contains("every one different and held in both halves of the rounds"), "{s}");
        assert!(s.contains("1 of 3 judged throughput and I/O cells differ from native"), "{s}");
        assert!(s.contains("TCP stream on runc (×2.00 slower)"), "{s}");
        assert!(!s.contains("on docker"), "docker's first-half-only difference was named: {s}");
        assert!(s.contains("1 more differ over the whole run but did not replicate"), "{s}");
        assert!(s.contains("the other 1 are ≈ native"), "{s}");
        assert!((3..=6).contains(&sentences(&s)), "{s}");
    }

    #[test]
    fn a_previous_run_without_the_difference_keeps_it_out_of_the_summary() {
        let previous = Aggregate::new(&run(20, 1.0));
        let s = executive(&Aggregate::new(&run(20, 0.5)), Some(&previous));
        assert!(!s.contains("on runc"), "{s}");
        assert!(s.contains("held in both halves of the rounds and in the previous run"), "{s}");
    }

    #[test]
    fn a_run_with_too_few_rounds_judges_nothing() {
        let s = executive(&Aggregate::new(&run(5, 0.5)), None);
        assert!(s.starts_with("This run is too small to judge: no ratio cell has the 10 paired rounds"), "{s}");
        assert!(!s.contains("differ from native (BH"), "{s}");
        assert!(!s.contains("held in both halves"), "{s}");
        assert!((3..=6).contains(&sentences(&s)), "{s}");
    }
    #[test]
    fn a_run_without_native_says_it_judges_nothing_against_it() {
        let recs: Vec<RunRecord> = run(10, 0.5).into_iter().filter(|r| r.backend == "docker").collect();
        let s = executive(&Aggregate::new(&recs), None);
        assert!(s.starts_with(NO_NATIVE), "{s}");
        assert!(!s.contains("too small"), "{s}");
    }
}
