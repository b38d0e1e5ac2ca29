//! The report's executive summary, computed from the cells: what isolation
//! costs here per kind (containers, VMs), naming only differences whose CI
//! excludes native, in three to six sentences.

use super::aggregate::{cost_factor, family_of, Aggregate, Cell};
use super::backends::{self, Kind};
use crate::backend::BackendId;
use crate::figures::num;
use crate::stats::Significance;

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

/// One sentence on a scenario's metric (startup, memory) per kind.
fn per_kind(a: &Aggregate, scenario: &str, metric: &str, scale: f64, unit: &str, what: &str) -> Option<String> {
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
        let judged = cells.iter().filter(|(_, c)| c.significance.is_some()).count();
        let sig: Vec<f64> = cells
            .iter()
            .filter(|(_, c)| matches!(c.significance, Some(Significance::Above | Significance::Below)))
            .filter_map(|(_, c)| c.ratio)
            .collect();
        let ratio = match range(&sig) {
            Some((rl, rh)) if sig.len() == cells.len() => {
                format!(" (×{} native, all significant)", span(rl, rh, "").trim_end())
            }
            Some((rl, rh)) => format!(
                " (×{} native where significant; {} of {} ≈ native, {} not judged)",
                span(rl, rh, "").trim_end(),
                judged - sig.len(),
                cells.len(),
                cells.len() - judged
            ),
            None if judged == 0 && native.is_some() => {
                format!(" (not judged: fewer than {} runs a side)", crate::stats::MIN_N_SIGNIFICANCE)
            }
            None if judged == cells.len() && native.is_some() => " (every one ≈ native)".to_string(),
            None if native.is_some() => format!(" ({judged} of {} ≈ native, the rest not judged)", cells.len()),
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

/// One sentence on the work cells of a kind: how many differ from native.
fn work_sentence(a: &Aggregate, kind: Kind) -> Option<String> {
    let bs = members(a, kind);
    if bs.is_empty() {
        return None;
    }
    let mut total = 0;
    let mut unjudged = 0;
    let mut sig: Vec<(f64, String)> = Vec::new();
    for (sc, hl) in a.headline_rows().into_iter().filter(|(sc, _)| WORK.contains(&family_of(sc))) {
        for b in &bs {
            let c = a.cell(&sc, b, hl.metric);
            if c.ratio.is_some() && c.significance.is_none() {
                unjudged += 1;
            }
            let (Some(r), Some(s)) = (c.ratio, c.significance) else { continue };
            total += 1;
            if s != Significance::SameAsNative {
                sig.push((cost_factor(hl.metric, r), format!("{} on {b}{}", hl.label, a.platform.suffix(b))));
            }
        }
    }
    let marked: Vec<String> = bs.iter().map(|b| format!("{b}{}", a.platform.suffix(b))).collect();
    let who = format!("{} ({})", capitalised(kind.plural()), marked.join(", "));
    if total == 0 {
        return (unjudged > 0).then(|| {
            format!(
                "{who}: none of the {unjudged} throughput and I/O cells has {} runs a side, so no difference from \
                 native is claimed.",
                crate::stats::MIN_N_SIGNIFICANCE
            )
        });
    }
    if sig.is_empty() {
        return Some(format!("{who}: all {total} judged throughput and I/O cells are ≈ native (every CI contains 1)."));
    }
    sig.sort_by(|x, y| y.0.total_cmp(&x.0));
    let worst = &sig[0];
    let mut s = format!(
        "{who}: {} of {total} throughput and I/O cells (those with at least {} runs a side) differ significantly from native, the largest cost {} (×{} slower)",
        sig.len(),
        crate::stats::MIN_N_SIGNIFICANCE,
        worst.1,
        num(worst.0)
    );
    if let Some(best) = sig.iter().rev().find(|x| x.0 < 1.0) {
        s.push_str(&format!(", the largest gain {} (×{} faster)", best.1, num(1.0 / best.0)));
    }
    s.push_str(&format!("; the other {} are ≈ native.", total - sig.len()));
    Some(s)
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

/// The summary paragraph (three to six sentences).
pub fn executive(a: &Aggregate) -> String {
    let mut s: Vec<String> = Vec::new();
    if let Some(x) =
        per_kind(a, "startup-serial", "host.launch_to_ready_ns", 1e-6, "ms", "Start (noop launch→READY, median)")
    {
        s.push(x);
    }
    for kind in Kind::COMPARED {
        s.extend(work_sentence(a, kind));
    }
    if let Some(x) = per_kind(
        a,
        "footprint",
        "footprint.pss_kib",
        1.0 / 1024.0,
        "MiB",
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

    fn rec(backend: &str, scenario: &str, ready: u64, gbit: f64) -> RunRecord {
        RunRecord {
            backend: backend.into(),
            scenario: scenario.into(),
            host: HostTimings { launch_to_ready_ns: Some(ready), ..Default::default() },
            metrics: [("gbit_per_s".to_string(), gbit)].into_iter().collect(),
            ..Default::default()
        }
    }

    #[test]
    fn summary_names_only_significant_differences() {
        let mut recs = Vec::new();
        for i in 0..6u64 {
            let j = i as f64 * 0.01;
            recs.push(rec("native", "startup-serial", 1_000_000 + i * 1000, 1.0));
            recs.push(rec("crun", "startup-serial", 30_000_000 + i * 1000, 1.0));
            recs.push(rec("native", "net-stream", 1, 10.0 + j));
            // The same values in another order: indistinguishable from native.
            recs.push(rec("crun", "net-stream", 1, 10.0 + ((i * 5) % 6) as f64 * 0.01));
            recs.push(rec("runc", "net-stream", 1, 5.0 + j));
        }
        let s = executive(&Aggregate::new(&recs));
        assert!(s.contains("natively 1.00 ms"), "{s}");
        assert!(s.contains("all significant"), "{s}");
        assert!(
            s.contains("1 of 2 throughput and I/O cells (those with at least 5 runs a side) differ significantly"),
            "{s}"
        );
        assert!(s.contains("TCP stream on runc (×2.00 slower)"), "{s}");
        assert!(s.contains("the other 1 are ≈ native"), "{s}");
        assert!(!s.contains("every one ≈ native"), "{s}");
        let n = s.matches(". ").count() + 1;
        assert!((3..=6).contains(&n), "{n} sentences: {s}");
    }
}
