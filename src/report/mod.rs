//! Reports from a result set: `results.csv`/`results.json`, `REPORT.md` with
//! the ratio-to-native tables, and the charts; plus the side-by-side
//! comparison of two result sets. The same result set always gives the same
//! files, byte for byte (seeded bootstrap, no clock, no paths).

pub mod aggregate;
pub mod backends;
pub mod charts;
pub mod compare;
pub mod images;
pub mod markdown;
pub mod summary;
pub mod swarm;

use crate::backend::BackendId;
use std::path::{Path, PathBuf};

use crate::results::{ResultSet, ResultsError};
use aggregate::{family_of, Aggregate};
use charts::{Distribution, PhaseBar, Point, RatioBar, Series};

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
            values: a.values("startup-serial", b, "host.launch_to_ready_ns").into_iter().map(|ns| ns / 1e6).collect(),
        })
        .filter(|d| !d.values.is_empty())
        .collect()
}

/// Density lines: median of `metric` (scaled by `scale`) against N, with
/// the median's CI.
pub fn density_series(a: &Aggregate, metric: &str, scale: f64) -> Vec<Series> {
    a.backends
        .iter()
        .map(|b| Series {
            backend: b.clone(),
            points: a
                .scenarios
                .iter()
                .filter(|s| family_of(s) == "density")
                .filter_map(|s| {
                    let n: f64 = s.rsplit('-').next()?.parse().ok()?;
                    let c = a.cell(s, b, metric);
                    let m = c.summary?.median * scale;
                    let ci = c.median_ci.unwrap_or(crate::stats::Interval { lo: m / scale, hi: m / scale });
                    Some(Point { x: n, y: m, lo: ci.lo * scale, hi: ci.hi * scale })
                })
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// Ratio bars (the table's ratios, with CIs) for every headline row and
/// non-native backend.
pub fn ratio_bars(a: &Aggregate) -> Vec<RatioBar> {
    let mut v = Vec::new();
    for (sc, hl) in a.headline_rows() {
        let arrow = match crate::stats::better(hl.metric) {
            crate::stats::Better::Higher => " ↑",
            crate::stats::Better::Lower => " ↓",
            crate::stats::Better::Neither => "",
        };
        for b in a.backends.iter().filter(|b| *b != BackendId::Native.name()) {
            let c = a.cell(&sc, b, hl.metric);
            if let (Some(r), Some(ci)) = (c.ratio, c.ratio_ci) {
                v.push(RatioBar {
                    metric: format!("{sc}: {}{arrow}", hl.label),
                    backend: b.clone(),
                    ratio: r,
                    lo: ci.lo,
                    hi: ci.hi,
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

/// Per-backend startup phases (medians of the successful serial runs).
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
        let total = crate::stats::median(
            &recs.iter().filter_map(|r| r.host.launch_to_ready_ns.map(|ns| ns as f64 / 1e6)).collect::<Vec<_>>(),
        );
        if let (false, Some(total_ms)) = (phases.is_empty(), total) {
            v.push(PhaseBar { backend: b.clone(), phases, total_ms });
        }
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

/// Write every report file for `set` into `out`.
pub fn generate(set: &ResultSet, out: &Path) -> Result<Written, ReportError> {
    std::fs::create_dir_all(out).map_err(|e| ReportError::Write(out.to_path_buf(), e))?;
    set.export(out)?;
    let mut w = Written { files: vec![out.join("results.csv"), out.join("results.json")], ..Default::default() };
    let a = Aggregate::new(&set.records);
    let mut figs = markdown::Figures::default();
    let dist = startup_distributions(&a);
    if !dist.is_empty() {
        figs.startup = chart(
            &mut w,
            "startup",
            charts::distributions(
                &out.join("startup"),
                "noop launch→READY, serial runs (each dot one run, bar = median)",
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
                "where startup time goes (noop, serial runs, medians)",
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
            charts::ratios(&out.join("ratios"), "ratio to native by metric (as in the table)", &bars),
        );
    }
    figs.errors = w.chart_errors.clone();
    let md = markdown::render(set, &a, &figs)
        + &images::section(&set.records, out, &mut w)
        + &swarm::section(&set.records, out, &mut w);
    let p = out.join("REPORT.md");
    std::fs::write(&p, md).map_err(|e| ReportError::Write(p.clone(), e))?;
    w.files.push(p);
    Ok(w)
}
