//! Reports from a result set: `results.csv`/`results.json`, `REPORT.md` with
//! the ratio-to-native tables, and the charts; plus the side-by-side
//! comparison of two result sets. The same result set always gives the same
//! files, byte for byte (seeded bootstrap, no clock, no paths).

pub mod aggregate;
pub mod backends;
pub mod charts;
pub mod claims;
pub mod compare;
pub mod images;
pub mod markdown;
pub mod platform;
pub mod restore;
pub mod summary;
pub mod swarm;

use crate::backend::BackendId;
use std::path::{Path, PathBuf};

use crate::results::{ResultSet, ResultsError};
use aggregate::{family_of, Aggregate};
use charts::{Distribution, PhaseBar, PhaseSegment, Point, RatioBar, Series, When};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error(transparent)]
    Chart(#[from] charts::ChartError),
    #[error("writing {0}")]
    Write(PathBuf, #[source] std::io::Error),
}

/// What a report run wrote.
#[derive(Debug, Default)]
pub struct Written {
    pub files: Vec<PathBuf>,
    /// Charts that could not be drawn, with why (the report says so too).
    pub chart_errors: Vec<String>,
}

/// Startup distributions (launch→READY, ms) of the successful serial runs.
pub fn startup_distributions(a: &Aggregate) -> Vec<Distribution> {
    a.backends
        .iter()
        .map(|b| Distribution {
            backend: b.clone(),
            label: a.platform.short_label(b),
            values: a.values("startup-serial", b, "host.launch_to_ready_ns").into_iter().map(|ns| ns / 1e6).collect(),
            ci: a.cell("startup-serial", b, "host.launch_to_ready_ns").median_ci.map(|ci| (ci.lo / 1e6, ci.hi / 1e6)),
        })
        .filter(|d| !d.values.is_empty())
        .collect()
}

/// A chart title followed by the key to the platform marks its backends carry.
fn with_key(a: &Aggregate, backends: &[&str], title: &str) -> String {
    let key = a.platform.title_key(backends.iter().copied());
    if key.is_empty() {
        title.to_string()
    } else {
        format!("{title}; {key}")
    }
}

/// A backend's line: its label carries its platform marks, its colour is the backend's.
fn backend_series(a: &Aggregate, b: &str, points: Vec<Point>) -> Series {
    Series { label: a.platform.label(b), rgb: backends::rgb(b), points }
}

/// Density lines: median of `metric` (scaled by `scale`) against N, with
/// the median's CI.
pub fn density_series(a: &Aggregate, metric: &str, scale: f64) -> Vec<Series> {
    a.backends
        .iter()
        .map(|b| {
            let points = a
                .scenarios
                .iter()
                .filter(|s| family_of(s) == "density")
                .filter_map(|s| {
                    let n: f64 = s.rsplit('-').next()?.parse().ok()?;
                    let c = a.cell(s, b, metric);
                    let m = c.summary?.median;
                    let ci = c.median_ci.unwrap_or(crate::stats::Interval { lo: m, hi: m });
                    Some(Point { x: n, y: m * scale, lo: ci.lo * scale, hi: ci.hi * scale })
                })
                .collect();
            backend_series(a, b, points)
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// Cost-factor bars (the table's ratios and CIs, turned so that above 1 is worse) for every
/// headline row and non-native backend.
pub fn ratio_bars(a: &Aggregate) -> Vec<RatioBar> {
    let mut v = Vec::new();
    for (sc, hl) in a.headline_rows() {
        let turned = crate::stats::better(hl.metric) == crate::stats::Better::Higher;
        for b in a.backends.iter().filter(|b| *b != BackendId::Native.name()) {
            let c = a.cell(&sc, b, hl.metric);
            if let (Some(r), Some(ci)) = (c.ratio, c.ratio_ci) {
                let (lo, hi) = if turned { (1.0 / ci.hi, 1.0 / ci.lo) } else { (ci.lo, ci.hi) };
                v.push(RatioBar {
                    metric: format!("{sc}: {}{}", hl.label, if turned { " (native ÷ backend)" } else { "" }),
                    backend: a.platform.label(b),
                    rgb: backends::rgb(b),
                    cost: aggregate::cost_factor(hl.metric, r),
                    lo,
                    hi,
                    significant: matches!(
                        c.significance,
                        Some(crate::stats::Significance::Above | crate::stats::Significance::Below)
                    ),
                });
            }
        }
    }
    v
}

/// Lays phases (name, ms) end to end from launch against READY at `ready_ms`: each phase
/// with where it lies against READY, and the part of launch→READY the phases before READY
/// leave uncovered (placed just before READY: where in time it falls is not recorded).
pub fn lay_out_phases(phases: &[(String, f64)], ready_ms: f64) -> (Vec<PhaseSegment>, Option<(f64, f64)>) {
    let mut t = 0.0;
    let mut segs = Vec::new();
    for (name, ms) in phases {
        let (start, end) = (t, t + ms.max(0.0));
        let when = if start >= ready_ms {
            When::After
        } else if end > ready_ms {
            When::Across
        } else {
            When::Before
        };
        segs.push(PhaseSegment { name: name.clone(), start, end, when });
        t = end;
    }
    let covered = segs.iter().filter(|s| s.when != When::After).map(|s| s.end).fold(0.0, f64::max);
    // Less than 1% of READY uncovered is rounding of the medians, not a gap.
    let uncovered = (ready_ms - covered > ready_ms * 0.01).then_some((covered, ready_ms));
    (segs, uncovered)
}

/// Per-backend startup phases (medians of the successful serial runs) laid out against the
/// median launch→READY and its CI from the table's cell.
pub fn phase_bars(a: &Aggregate) -> Vec<PhaseBar> {
    let mut v = Vec::new();
    for b in &a.backends {
        let recs: Vec<_> = a.records("startup-serial", b).iter().filter(|r| r.error.is_none()).collect();
        let mut order: Vec<String> = Vec::new();
        for r in &recs {
            for (p, _) in &r.host.phases {
                if !order.contains(p) {
                    order.push(p.clone());
                }
            }
        }
        let phases: Vec<(String, f64)> = order
            .into_iter()
            .filter_map(|p| {
                let vals: Vec<f64> = recs
                    .iter()
                    .flat_map(|r| r.host.phases.iter().filter(|(n, _)| *n == p).map(|(_, ns)| *ns as f64 / 1e6))
                    .collect();
                crate::stats::median(&vals).map(|m| (p, m))
            })
            .collect();
        let c = a.cell("startup-serial", b, "host.launch_to_ready_ns");
        let (Some(s), false) = (c.summary, phases.is_empty()) else { continue };
        let y = s.median / 1e6;
        let ci = c.median_ci.map_or((y, y), |ci| (ci.lo / 1e6, ci.hi / 1e6));
        let (segments, uncovered) = lay_out_phases(&phases, y);
        v.push(PhaseBar {
            label: a.platform.short_label(b),
            segments,
            uncovered,
            ready: Point { x: 0.0, y, lo: ci.0, hi: ci.1 },
        });
    }
    v
}

fn chart(w: &mut Written, name: &str, r: Result<Vec<PathBuf>, charts::ChartError>) -> Option<String> {
    match r {
        Ok(files) => {
            w.files.extend(files);
            Some(format!("{name}.svg"))
        }
        Err(e) => {
            w.chart_errors.push(format!("{name}: {e}"));
            None
        }
    }
}

/// How a report judges its ratio cells, and what it checks them against.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options<'a> {
    pub rules: crate::stats::decision::Rules,
    /// The run before: the summary names a difference only when it holds there too.
    pub previous: Option<&'a ResultSet>,
}

/// Write every report file for `set` into `out`, with the default rules.
pub fn generate(set: &ResultSet, out: &Path) -> Result<Written, ReportError> {
    generate_with(set, out, &Options::default())
}

/// Write every report file for `set` into `out`.
pub fn generate_with(set: &ResultSet, out: &Path, opts: &Options) -> Result<Written, ReportError> {
    std::fs::create_dir_all(out).map_err(|e| ReportError::Write(out.to_path_buf(), e))?;
    set.export(out)?;
    let mut w = Written { files: vec![out.join("results.csv"), out.join("results.json")], ..Default::default() };
    let a = Aggregate::with_rules(&set.records, opts.rules).on(platform::Platform::from_manifest(&set.manifest));
    let previous = opts
        .previous
        .map(|p| Aggregate::with_rules(&p.records, opts.rules).on(platform::Platform::from_manifest(&p.manifest)));
    let mut figs = markdown::Figures::default();
    let dist = startup_distributions(&a);
    if !dist.is_empty() {
        figs.startup = chart(
            &mut w,
            "startup",
            charts::distributions(
                &out.join("startup"),
                &with_key(
                    &a,
                    &dist.iter().map(|d| d.backend.as_str()).collect::<Vec<_>>(),
                    "noop launch→READY, serial runs (dot: a run; bar: median; whisker: 95% CI)",
                ),
                "ms (log scale)",
                &dist,
            ),
        );
    }
    let phases = phase_bars(&a);
    if !phases.is_empty() {
        figs.phases = chart(
            &mut w,
            "startup-phases",
            charts::phases(
                &out.join("startup-phases"),
                "where startup time goes (noop, serial runs, median ms per phase)",
                &phases,
            ),
        );
    }
    // The parent cgroup's figure where a backend has one, else summed PSS:
    // MemAvailable is host-wide and moves with whatever else the host does.
    let mut mem = density_series(&a, "extra.density_cgroup_per_instance_kib", 1.0 / 1024.0);
    let mut mem_what = "parent cgroup memory";
    if mem.is_empty() {
        mem = density_series(&a, "extra.density_pss_per_instance_kib", 1.0 / 1024.0);
        mem_what = "summed PSS of its host processes";
    }
    if !mem.is_empty() {
        figs.density_mem = chart(
            &mut w,
            "density-memory",
            charts::lines(
                &out.join("density-memory"),
                &format!("memory per idle instance vs N ({mem_what}; bars: 95% CI)"),
                "N instances",
                "MiB per instance",
                &mem,
            ),
        );
    }
    let launch = density_series(&a, "extra.density_launch_all_ns", 1e-6);
    if !launch.is_empty() {
        figs.density_launch = chart(
            &mut w,
            "density-launch",
            charts::lines(
                &out.join("density-launch"),
                "time until all N idle instances are READY, placed in the parent cgroup (bars: 95% CI)",
                "N instances",
                "ms",
                &launch,
            ),
        );
    }
    let bars = ratio_bars(&a);
    if !bars.is_empty() {
        figs.ratios = chart(
            &mut w,
            "ratios",
            charts::ratios(
                &out.join("ratios"),
                "cost of isolation by metric: the table's ratios as cost factors (pale: not a difference)",
                &bars,
            ),
        );
    }
    figs.errors = w.chart_errors.clone();
    let md = markdown::render(set, &a, previous.as_ref(), &figs)
        + &images::section(&set.records, out, &mut w)
        + &restore::section(&set.records, out, &mut w, platform::Platform::from_manifest(&set.manifest).emulated)
        + &swarm::section(&set.records, out, &mut w);
    let p = out.join("REPORT.md");
    std::fs::write(&p, md).map_err(|e| ReportError::Write(p.clone(), e))?;
    w.files.push(p);
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ph(list: &[(&str, f64)]) -> Vec<(String, f64)> {
        list.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    #[test]
    fn phases_short_of_ready_leave_an_uncovered_part() {
        // The bare VM: 3.2 ms of phases against 6.06 ms to READY.
        let (segs, gap) = lay_out_phases(&ph(&[("create", 1.2), ("jail", 2.0)]), 6.06);
        assert!(segs.iter().all(|s| s.when == When::Before));
        assert_eq!(segs[1].start, 1.2);
        let (s, e) = gap.unwrap();
        assert!((s - 3.2).abs() < 1e-9 && e == 6.06);
    }

    #[test]
    fn phases_past_ready_are_marked_after_and_leave_no_gap() {
        // Docker: create phases to 342 ms, READY at 335 ms, then exit and remove.
        let (segs, gap) = lay_out_phases(&ph(&[("create", 330.0), ("start", 12.0), ("until exit", 38.0)]), 335.0);
        let when: Vec<When> = segs.iter().map(|s| s.when).collect();
        assert_eq!(when, vec![When::Before, When::Across, When::After]);
        assert_eq!(gap, None);
    }
}
