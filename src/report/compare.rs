//! `cvbench report --compare A B`: two result sets side by side (two runs,
//! two commits, two hosts), the change of every headline median per
//! backend, which cells moved beyond their CIs, and which ratios to native
//! are significant in opposite directions. Sets from different hosts are
//! labelled as such at the top.

use std::fmt::Write;

use super::aggregate::Aggregate;
use crate::figures::num;
use crate::results::ResultSet;
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

/// Every headline cell present in either set.
pub fn changes(a: &ResultSet, b: &ResultSet) -> Vec<Change> {
    let (aa, ab) = (Aggregate::new(&a.records), Aggregate::new(&b.records));
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

/// The comparison as Markdown.
pub fn render(a: &ResultSet, b: &ResultSet, a_name: &str, b_name: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# cvbench comparison\n");
    let _ = writeln!(
        out,
        "A = `{a_name}` (env {}, {} on {}), B = `{b_name}` (env {}, {} on {}). Medians; change = (B − A) / A.\n",
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
    let all = changes(a, b);
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
        "{} cells compared; **{} moved beyond their CIs** (the two medians' 95% CIs do not overlap); \
         {} are significant against native in both runs, **{} of them in opposite directions**.\n",
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

    #[test]
    fn change_is_relative_to_a() {
        let c = changes(&set(2_000_000), &set(3_000_000));
        let row = c.iter().find(|c| c.metric.starts_with("noop launch→READY")).unwrap();
        assert_eq!((row.a, row.b), (Some(2.0), Some(3.0)));
        assert_eq!(row.change_pct, Some(50.0));
    }

    fn startup(backend: &str, ms: &[u64]) -> Vec<RunRecord> {
        ms.iter()
            .map(|m| RunRecord {
                backend: backend.into(),
                scenario: "startup-serial".into(),
                host: HostTimings { launch_to_ready_ns: Some(m * 1_000_000), ..Default::default() },
                ..Default::default()
            })
            .collect()
    }

    fn with(records: Vec<RunRecord>) -> ResultSet {
        ResultSet { manifest: crate::env::Manifest::collect(), records }
    }

    #[test]
    fn opposite_significance_is_flagged_and_a_move_beyond_cis_found() {
        let native = startup("native", &[10, 10, 11, 10, 11]);
        let a = with([native.clone(), startup("crun", &[20, 21, 20, 22, 21])].concat());
        let b = with([native, startup("crun", &[5, 5, 6, 5, 6])].concat());
        let c = changes(&a, &b);
        let row = c.iter().find(|c| c.backend == "crun" && c.metric.starts_with("noop launch→READY")).unwrap();
        assert!(row.moved);
        assert!(row.contradicts());
        let md = render(&a, &b, "A", "B");
        assert!(md.contains("**1 moved beyond their CIs**"), "{md}");
        assert!(md.contains("**1 of them in opposite directions**"), "{md}");
    }

    #[test]
    fn overlapping_runs_neither_move_nor_contradict() {
        let a = with([startup("native", &[10, 11, 10, 12, 11]), startup("crun", &[20, 21, 22, 20, 21])].concat());
        let b = with([startup("native", &[11, 10, 11, 10, 12]), startup("crun", &[21, 20, 21, 22, 20])].concat());
        let c = changes(&a, &b);
        assert!(c.iter().all(|c| !c.moved && !c.contradicts()), "{c:?}");
    }

    #[test]
    fn different_hosts_are_labelled() {
        let a = with(startup("native", &[1]));
        let mut b = a.clone();
        b.manifest.hostname = "elsewhere".into();
        assert!(render(&a, &b, "A", "B").contains("A and B come from different hosts"));
        assert!(!render(&a, &a.clone(), "A", "B").contains("different"));
        let mut c = a.clone();
        c.manifest.git_rev = Some("other".into());
        assert!(render(&a, &c, "A", "B").contains("Same host, different environment ids"));
    }
}
