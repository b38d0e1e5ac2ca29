//! `cvbench report --compare A B`: two result sets side by side (two runs,
//! two commits, two hosts). Two views, each with its count: the absolute
//! median of every headline cell (which moved beyond their CIs), and the
//! ratio to native paired within rounds (which have non-overlapping CIs,
//! which exclude 1 on opposite sides, which are judged different in
//! opposite directions). Sets from different hosts are labelled as such.

use std::fmt::Write;

use super::aggregate::{family_of, Aggregate, RatioCell, HEADLINES};
use super::markdown::interval_text;
use crate::figures::num;
use crate::results::ResultSet;
use crate::stats::decision::{Direction, Rules, Verdict};
use crate::stats::{self, Better, Significance};

/// One compared cell.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub scenario: String,
    pub metric: String,
    pub backend: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
    /// (b − a) / a in percent.
    pub change_pct: Option<f64>,
    pub better: Better,
    /// The two medians' 95% CIs do not overlap.
    pub moved: bool,
    /// Significance of the ratio to native in A and in B.
    pub sig_a: Option<Significance>,
    pub sig_b: Option<Significance>,
}

impl Change {
    /// Significant against native in A and in B, in opposite directions.
    pub fn contradicts(&self) -> bool {
        matches!(
            (self.sig_a, self.sig_b),
            (Some(Significance::Above), Some(Significance::Below))
                | (Some(Significance::Below), Some(Significance::Above))
        )
    }
}

/// One ratio cell (a backend's paired ratio to native) in A and in B.
#[derive(Clone, Debug, PartialEq)]
pub struct RatioChange {
    pub scenario: String,
    /// Metric name as in `results::figures`.
    pub metric: String,
    pub backend: String,
    pub a: Option<RatioCell>,
    pub b: Option<RatioCell>,
}

impl RatioChange {
    /// Present in both sets.
    pub fn compared(&self) -> bool {
        self.a.is_some() && self.b.is_some()
    }
    /// The two paired-ratio CIs share no point.
    pub fn disjoint(&self) -> bool {
        matches!((self.a, self.b), (Some(x), Some(y)) if x.paired.ci.disjoint(&y.paired.ci))
    }
    fn sides(&self) -> Option<(Direction, Direction)> {
        let (x, y) = (self.a?, self.b?);
        Some((Direction::of_interval(&x.paired.ci)?, Direction::of_interval(&y.paired.ci)?))
    }
    /// Both CIs exclude 1.
    pub fn both_exclude_one(&self) -> bool {
        self.sides().is_some()
    }
    /// Both CIs exclude 1, on opposite sides.
    pub fn opposite(&self) -> bool {
        self.sides().is_some_and(|(x, y)| x != y)
    }
    /// Judged different (BH and minimum effect) in both sets.
    pub fn both_different(&self) -> bool {
        matches!((self.a, self.b), (Some(x), Some(y)) if x.verdict.direction().is_some() && y.verdict.direction().is_some())
    }
    /// Judged different in both sets, in opposite directions.
    pub fn judged_opposite(&self) -> bool {
        matches!(
            (self.a.map(|c| c.verdict), self.b.map(|c| c.verdict)),
            (Some(Verdict::Different(x)), Some(Verdict::Different(y))) if x != y
        )
    }
}

/// Every headline ratio cell present in either set, in A's order then B's.
pub fn ratio_changes(aa: &Aggregate, ab: &Aggregate) -> Vec<RatioChange> {
    let mut keys: Vec<(String, String, String)> = aa.ratio_cells().map(|(k, _)| k.clone()).collect();
    for (k, _) in ab.ratio_cells() {
        if !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    keys.into_iter()
        .map(|(scenario, metric, backend)| RatioChange {
            a: aa.ratio_cell(&scenario, &backend, &metric),
            b: ab.ratio_cell(&scenario, &backend, &metric),
            scenario,
            metric,
            backend,
        })
        .collect()
}

/// Every headline cell present in either set.
pub fn changes(aa: &Aggregate, ab: &Aggregate) -> Vec<Change> {
    let mut rows = aa.headline_rows();
    for r in ab.headline_rows() {
        if !rows.contains(&r) {
            rows.push(r);
        }
    }
    let mut backends = aa.backends.clone();
    for x in &ab.backends {
        if !backends.contains(x) {
            backends.push(x.clone());
        }
    }
    let mut out = Vec::new();
    for (sc, hl) in rows {
        for be in &backends {
            let (ca, cb) = (aa.cell(&sc, be, hl.metric), ab.cell(&sc, be, hl.metric));
            let ma = ca.summary.map(|s| hl.unit.scale(s.median));
            let mb = cb.summary.map(|s| hl.unit.scale(s.median));
            if ma.is_none() && mb.is_none() {
                continue;
            }
            let moved = matches!((ca.median_ci, cb.median_ci), (Some(x), Some(y)) if x.disjoint(&y));
            out.push(Change {
                scenario: sc.clone(),
                metric: format!("{} ({})", hl.label, hl.unit.text()),
                backend: be.clone(),
                a: ma,
                b: mb,
                change_pct: match (ma, mb) {
                    (Some(x), Some(y)) => stats::change_pct(x, y),
                    _ => None,
                },
                better: stats::better(hl.metric),
                moved,
                sig_a: ca.significance,
                sig_b: cb.significance,
            });
        }
    }
    out
}

fn sig_text(s: Option<Significance>) -> &'static str {
    match s {
        Some(Significance::Above) => "above",
        Some(Significance::Below) => "below",
        Some(Significance::SameAsNative) => "≈",
        None => "—",
    }
}

fn ratio_text(c: Option<RatioCell>) -> String {
    match c {
        Some(c) => {
            let v = match c.verdict {
                Verdict::Different(Direction::Above) => " above",
                Verdict::Different(Direction::Below) => " below",
                Verdict::Same { .. } => " ≈",
                Verdict::NotJudged(_) => "",
            };
            format!(
                "×{} (×{}, {} rounds){v}",
                num(c.paired.centre),
                interval_text(&c.paired.ci, |x| x),
                c.paired.rounds
            )
        }
        None => "—".into(),
    }
}

/// A headline metric as the report's tables name it; the raw name otherwise.
fn metric_label(scenario: &str, metric: &str) -> String {
    HEADLINES
        .iter()
        .find(|h| h.metric == metric && h.family == family_of(scenario))
        .map(|h| h.label.to_string())
        .unwrap_or_else(|| metric.to_string())
}

fn pct(k: usize, n: usize) -> String {
    if n == 0 {
        "—".into()
    } else {
        format!("{:.1}%", k as f64 * 100.0 / n as f64)
    }
}

/// The ratio view: its count line, the cells in opposite directions and
/// with non-overlapping CIs, and every compared cell.
fn render_ratios(out: &mut String, aa: &Aggregate, ab: &Aggregate, rules: &Rules) {
    let all = ratio_changes(aa, ab);
    let compared: Vec<&RatioChange> = all.iter().filter(|c| c.compared()).collect();
    let disjoint: Vec<&&RatioChange> = compared.iter().filter(|c| c.disjoint()).collect();
    let both = compared.iter().filter(|c| c.both_exclude_one()).count();
    let opposite: Vec<&&RatioChange> = compared.iter().filter(|c| c.opposite()).collect();
    let both_diff = compared.iter().filter(|c| c.both_different()).count();
    let judged_opp = compared.iter().filter(|c| c.judged_opposite()).count();
    let _ = writeln!(out, "## Ratio cells (paired ratios to native)\n");
    let _ = writeln!(
        out,
        "{} ratio cells compared; **{} with non-overlapping CIs** ({} of them; the paired ratios' 95% CIs over \
         rounds share no point); {both} exclude 1 in both runs, **{} of them in opposite directions**; {both_diff} \
         are judged different from native in both runs (Benjamini–Hochberg q ≤ {}, effect ≥ {:.0}%, at least {} \
         rounds), {judged_opp} of them in opposite directions.{}\n",
        compared.len(),
        disjoint.len(),
        pct(disjoint.len(), compared.len()),
        opposite.len(),
        rules.fdr_q,
        rules.min_effect * 100.0,
        rules.min_rounds,
        match all.len() - compared.len() {
            0 => String::new(),
            k => format!(" {k} more are in only one of the two sets."),
        }
    );
    let label = |c: &RatioChange| format!("{} / {} / {}", c.scenario, metric_label(&c.scenario, &c.metric), c.backend);
    if !opposite.is_empty() {
        let _ = writeln!(out, "CIs excluding 1 on opposite sides:\n");
        for c in &opposite {
            let _ = writeln!(out, "- ⚠ {}: A {}, B {}", label(c), ratio_text(c.a), ratio_text(c.b));
        }
        out.push('\n');
    }
    if !disjoint.is_empty() {
        let _ = writeln!(out, "Non-overlapping CIs:\n");
        for c in &disjoint {
            let _ = writeln!(out, "- {}: A {}, B {}", label(c), ratio_text(c.a), ratio_text(c.b));
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "| scenario | metric | backend | A: ratio (95% CI, rounds) verdict | B | CIs |\n|---|---|---|---|---|---|"
    );
    for c in &all {
        let flag = if c.opposite() {
            "⚠ opposite"
        } else if c.disjoint() {
            "**apart**"
        } else if c.compared() {
            "overlap"
        } else {
            "—"
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {flag} |",
            c.scenario,
            metric_label(&c.scenario, &c.metric),
            c.backend,
            ratio_text(c.a),
            ratio_text(c.b)
        );
    }
    out.push('\n');
}

/// The comparison as Markdown, judged by the default rules.
pub fn render(a: &ResultSet, b: &ResultSet, a_name: &str, b_name: &str) -> String {
    render_with(a, b, a_name, b_name, &Rules::default())
}

/// The comparison as Markdown, both sets judged by `rules`.
pub fn render_with(a: &ResultSet, b: &ResultSet, a_name: &str, b_name: &str, rules: &Rules) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# cvbench comparison\n");
    let _ = writeln!(
        out,
        "A = `{a_name}` (env {}, {} on {}), B = `{b_name}` (env {}, {} on {}). Ratio cells: each backend's \
         ratio to native paired within rounds (geometric mean, 95% CI over rounds); absolute cells: medians, \
         change = (B − A) / A.\n",
        a.manifest.id(),
        a.manifest.git_rev.as_deref().unwrap_or("?"),
        a.manifest.hostname,
        b.manifest.id(),
        b.manifest.git_rev.as_deref().unwrap_or("?"),
        b.manifest.hostname,
    );
    let (ma, mb) = (&a.manifest, &b.manifest);
    if ma.hostname != mb.hostname || ma.cpu_model != mb.cpu_model || ma.kernel != mb.kernel || ma.kvm != mb.kvm {
        let _ = writeln!(
            out,
            "**⚠ A and B come from different hosts** ({} / {} / {} vs {} / {} / {}): every change below includes \
             the difference between the hosts, not only between the runs.\n",
            ma.hostname, ma.kernel, ma.cpu_model, mb.hostname, mb.kernel, mb.cpu_model
        );
    } else if ma.id() != mb.id() {
        let _ = writeln!(
            out,
            "Same host, different environment ids ({} vs {}): the commit or a peer's version differs.\n",
            ma.id(),
            mb.id()
        );
    }
    for (name, set) in [("A", a), ("B", b)] {
        let foreign = set.foreign_env_ids();
        if !foreign.is_empty() {
            let _ = writeln!(out, "**⚠ {name} mixes records from other environments**: {}.\n", foreign.join(", "));
        }
    }
    let (aa, ab) = (Aggregate::with_rules(&a.records, *rules), Aggregate::with_rules(&b.records, *rules));
    render_ratios(&mut out, &aa, &ab, rules);
    let _ = writeln!(out, "## Absolute cells (medians)\n");
    let all = changes(&aa, &ab);
    let moved: Vec<&Change> = all.iter().filter(|c| c.moved).collect();
    let opposite: Vec<&Change> = all.iter().filter(|c| c.contradicts()).collect();
    let both_sig = all
        .iter()
        .filter(|c| {
            matches!(c.sig_a, Some(Significance::Above | Significance::Below))
                && matches!(c.sig_b, Some(Significance::Above | Significance::Below))
        })
        .count();
    let _ = writeln!(
        out,
        "{} absolute cells compared; **{} moved beyond their CIs** (the two medians' 95% CIs do not overlap); \
         {} are judged different from native in both runs, {} of them in opposite directions.\n",
        all.len(),
        moved.len(),
        both_sig,
        opposite.len()
    );
    let label = |c: &Change| format!("{} / {} / {}", c.scenario, c.metric, c.backend);
    if !opposite.is_empty() {
        let _ = writeln!(out, "Contradicted (significant against native in opposite directions):\n");
        for c in &opposite {
            let _ = writeln!(out, "- ⚠ {}: A {}, B {}", label(c), sig_text(c.sig_a), sig_text(c.sig_b));
        }
        out.push('\n');
    }
    if !moved.is_empty() {
        let _ = writeln!(out, "Moved beyond their CIs:\n");
        for c in &moved {
            let _ = writeln!(
                out,
                "- {}: {} → {}",
                label(c),
                c.a.map(num).unwrap_or_default(),
                c.b.map(num).unwrap_or_default()
            );
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "| scenario | metric | backend | A | B | change | beyond CIs | vs native A / B |\n|---|---|---|---:|---:|---:|---|---|"
    );
    for c in &all {
        let f = |v: Option<f64>| v.map(num).unwrap_or_else(|| "—".into());
        // Mark which way the change went for the metric's direction.
        let better = match (c.better, c.change_pct) {
            (Better::Higher, Some(p)) if p > 0.0 => " (better)",
            (Better::Lower, Some(p)) if p < 0.0 => " (better)",
            (Better::Higher | Better::Lower, Some(p)) if p != 0.0 => " (worse)",
            _ => "",
        };
        let ch = c
            .change_pct
            .map(|p| format!("{}{}%{better}", if p >= 0.0 { "+" } else { "" }, num(p)))
            .unwrap_or_else(|| "—".into());
        let moved = if c.moved { "**moved**" } else { "" };
        let sig = format!(
            "{} / {}{}",
            sig_text(c.sig_a),
            sig_text(c.sig_b),
            if c.contradicts() { " ⚠ opposite" } else { "" }
        );
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {ch} | {moved} | {sig} |",
            c.scenario,
            c.metric,
            c.backend,
            f(c.a),
            f(c.b)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{HostTimings, RunRecord};

    fn set(ready: u64) -> ResultSet {
        let m = crate::env::Manifest::collect();
        ResultSet {
            manifest: m,
            records: vec![RunRecord {
                backend: "native".into(),
                scenario: "startup-serial".into(),
                host: HostTimings { launch_to_ready_ns: Some(ready), ..Default::default() },
                ..Default::default()
            }],
        }
    }

    fn agg(s: &ResultSet) -> Aggregate {
        Aggregate::new(&s.records)
    }

    #[test]
    fn change_is_relative_to_a() {
        let c = changes(&agg(&set(2_000_000)), &agg(&set(3_000_000)));
        let row = c.iter().find(|c| c.metric.starts_with("noop launch→READY")).unwrap();
        assert_eq!((row.a, row.b), (Some(2.0), Some(3.0)));
        assert_eq!(row.change_pct, Some(50.0));
    }

    /// One startup-serial record per value, the k-th in round k.
    fn startup(backend: &str, ms: &[u64]) -> Vec<RunRecord> {
        ms.iter()
            .enumerate()
            .map(|(k, m)| RunRecord {
                backend: backend.into(),
                scenario: "startup-serial".into(),
                iteration: k as u32,
                host: HostTimings { launch_to_ready_ns: Some(m * 1_000_000), ..Default::default() },
                ..Default::default()
            })
            .collect()
    }

    fn with(records: Vec<RunRecord>) -> ResultSet {
        ResultSet { manifest: crate::env::Manifest::collect(), records }
    }

    const NATIVE: [u64; 12] = [10, 10, 11, 10, 11, 12, 10, 11, 10, 12, 11, 10];

    fn times(k: f64) -> Vec<u64> {
        NATIVE.iter().enumerate().map(|(i, n)| (*n as f64 * k).round() as u64 + (i % 2) as u64).collect()
    }

    #[test]
    fn ratio_cells_in_opposite_directions_are_counted_and_listed() {
        let a = with([startup("native", &NATIVE), startup("crun", &times(2.0))].concat());
        let b = with([startup("native", &NATIVE), startup("crun", &times(0.5))].concat());
        let r = ratio_changes(&agg(&a), &agg(&b));
        let row = r.iter().find(|c| c.backend == "crun" && c.metric == "host.launch_to_ready_ns").unwrap();
        assert!(row.disjoint() && row.opposite() && row.judged_opposite(), "{row:?}");
        let md = render(&a, &b, "A", "B");
        assert!(md.contains("1 ratio cells compared; **1 with non-overlapping CIs**"), "{md}");
        assert!(md.contains("1 exclude 1 in both runs, **1 of them in opposite directions**"), "{md}");
        assert!(md.contains("1 are judged different from native in both runs"), "{md}");
        assert!(md.contains("**1 moved beyond their CIs**"), "{md}");
    }

    #[test]
    fn the_same_ratio_in_both_runs_overlaps_and_agrees() {
        // Native itself moves between the runs; the paired ratio does not.
        let nb: Vec<u64> = NATIVE.iter().map(|n| n * 3).collect();
        let crun_b: Vec<u64> = times(2.0).iter().map(|v| v * 3).collect();
        let a = with([startup("native", &NATIVE), startup("crun", &times(2.0))].concat());
        let b = with([startup("native", &nb), startup("crun", &crun_b)].concat());
        let r = ratio_changes(&agg(&a), &agg(&b));
        assert!(r.iter().all(|c| c.compared() && !c.disjoint() && !c.opposite()), "{r:?}");
        let md = render(&a, &b, "A", "B");
        assert!(md.contains("**0 with non-overlapping CIs**"), "{md}");
        assert!(md.contains("1 exclude 1 in both runs, **0 of them in opposite directions**"), "{md}");
        // The absolute medians did move.
        assert!(!md.contains("**0 moved beyond their CIs**"), "{md}");
    }

    #[test]
    fn different_hosts_are_labelled() {
        let a = with(startup("native", &[1]));
        let mut b = a.clone();
        b.manifest.hostname = "elsewhere".into();
        assert!(render(&a, &b, "A", "B").contains("A and B come from different hosts"));
        let same = render(&a, &a.clone(), "A", "B");
        assert!(!same.contains("different hosts") && !same.contains("different environment ids"), "{same}");
        let mut c = a.clone();
        c.manifest.git_rev = Some("other".into());
        assert!(render(&a, &c, "A", "B").contains("Same host, different environment ids"));
    }
}
