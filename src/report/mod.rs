//! Reports from a result set: `results.csv`/`results.json`, `REPORT.md` with
//! the ratio-to-native tables, and the charts; plus the side-by-side
//! comparison of two result sets.

pub mod aggregate;
pub mod charts;
pub mod compare;
pub mod images;
pub mod markdown;

use std::path::{Path, PathBuf};

use crate::results::{ResultSet, ResultsError};
use aggregate::{family_of, Aggregate};
use charts::{Distribution, RatioBar, Series};

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

/// Density lines: median of `metric` (scaled by `scale`) against N.
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
                    let m = crate::stats::median(&a.values(s, b, metric))?;
                    Some((n, m * scale))
                })
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// Cost factor bars for every headline row and non-native backend.
pub fn ratio_bars(a: &Aggregate) -> Vec<RatioBar> {
    let mut v = Vec::new();
    for (sc, hl) in a.headline_rows() {
        for b in a.backends.iter().filter(|b| *b != "native") {
            if let Some(r) = a.cell(&sc, b, hl.metric).ratio {
                v.push(RatioBar {
                    metric: format!("{sc}: {}", hl.label),
                    backend: b.clone(),
                    cost: aggregate::cost_factor(hl.metric, r),
                });
            }
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
    // Summed PSS is the chart's figure: MemAvailable is host-wide and moves
    // with whatever else the host does (both are in the tables).
    let mem = density_series(&a, "extra.density_pss_per_instance_kib", 1.0 / 1024.0);
    if !mem.is_empty() {
        figs.density_mem = chart(
            &mut w,
            "density-memory",
            charts::lines(
                &out.join("density-memory"),
                "memory per idle instance vs N (summed PSS of its host processes)",
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
                "time until all N idle instances are READY",
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
            charts::ratios(&out.join("ratios"), "overhead relative to native, by metric", &bars),
        );
    }
    figs.errors = w.chart_errors.clone();
    let md = markdown::render(set, &a, &figs) + &images::section(&set.records, out, &mut w);
    let p = out.join("REPORT.md");
    std::fs::write(&p, md).map_err(|e| ReportError::Write(p.clone(), e))?;
    w.files.push(p);
    Ok(w)
}
