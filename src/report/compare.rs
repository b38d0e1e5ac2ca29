//! `cvbench report --compare A B`: two result sets side by side (two hosts,
//! two commits), the change of every headline median per backend.

use std::fmt::Write;

use super::aggregate::Aggregate;
use super::markdown::num;
use crate::results::ResultSet;
use crate::stats::{self, Better};

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
            let ma = aa.cell(&sc, be, hl.metric).summary.map(|s| hl.unit.scale(s.median));
            let mb = ab.cell(&sc, be, hl.metric).summary.map(|s| hl.unit.scale(s.median));
            if ma.is_none() && mb.is_none() {
                continue;
            }
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
            });
        }
    }
    out
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
    let _ = writeln!(out, "| scenario | metric | backend | A | B | change |\n|---|---|---|---:|---:|---:|");
    for c in changes(a, b) {
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
        let _ = writeln!(out, "| {} | {} | {} | {} | {} | {ch} |", c.scenario, c.metric, c.backend, f(c.a), f(c.b));
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
}
