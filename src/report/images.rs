//! The registry scenarios' section of the report: cold start (pull → READY) by phase per
//! backend, and the overlay cost per image depth, each as a table of medians and a chart.
//! The numbers are aggregated here; the drawing takes them as they are.

use plotters::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::charts::{self, ChartError, Series};
use super::Written;
use crate::backend::BackendId;
use crate::record::RunRecord;
use crate::stats::{bootstrap_median_ci, median, seed_of, Interval};

const COLD_PHASES: &[&str] = &["pull", "unpack", "prepare", "start"];
/// The name of a backend's pull phase when it records no separate unpack (Docker's engine
/// unpacks the layers as part of its pull).
const PULL_AND_UNPACK: &str = "pull+unpack";
const DEPTH_METRICS: &[(&str, &str)] = &[
    ("depth_mount_ns", "overlay mount"),
    ("depth_first_read_ns", "first read (bottom layer)"),
    ("depth_copy_up_ns", "copy-up of 64 MiB on first write"),
    ("depth_container_ready_ns", "our runtime start → READY"),
];

/// One backend's cold starts: units, median phase times (ms), and the median of the summed
/// phases (pull → READY) with its bootstrap 95% CI.
#[derive(Clone, Debug, PartialEq)]
pub struct Cold {
    pub n: usize,
    pub phases: Vec<(String, f64)>,
    pub total: Option<(f64, Interval)>,
}

/// Median phase times (ms) of the successful cold starts, per backend; a pull with no
/// separate unpack phase is named `pull+unpack`.
pub fn cold_phases(records: &[RunRecord]) -> BTreeMap<String, Cold> {
    let mut by: BTreeMap<String, Vec<&RunRecord>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.scenario == "cold-start" && r.error.is_none()) {
        by.entry(r.backend.clone()).or_default().push(r);
    }
    by.into_iter()
        .map(|(b, rs)| {
            let unpacks = rs.iter().any(|r| r.host.phases.iter().any(|(n, _)| n == "unpack"));
            let phases = COLD_PHASES
                .iter()
                .filter_map(|p| {
                    let v: Vec<f64> = rs
                        .iter()
                        .filter_map(|r| r.host.phases.iter().find(|(n, _)| n == p).map(|(_, ns)| *ns as f64 / 1e6))
                        .collect();
                    let name = if *p == "pull" && !unpacks { PULL_AND_UNPACK } else { p };
                    median(&v).map(|m| (name.to_string(), m))
                })
                .collect();
            let totals: Vec<f64> = rs
                .iter()
                .map(|r| {
                    r.host
                        .phases
                        .iter()
                        .filter(|(n, _)| COLD_PHASES.contains(&n.as_str()))
                        .map(|(_, ns)| *ns as f64 / 1e6)
                        .sum()
                })
                .collect();
            let total = median(&totals).zip(bootstrap_median_ci(&totals, seed_of(&format!("cold-start|total|{b}"))));
            (b, Cold { n: rs.len(), phases, total })
        })
        .collect()
}

/// Each depth metric's median (ms) with its bootstrap 95% CI.
pub type DepthFigures = BTreeMap<String, (f64, Interval)>;

/// Median of each depth metric (ms) per depth with its bootstrap 95% CI, over the
/// successful image-depth units.
pub fn depth_medians(records: &[RunRecord]) -> BTreeMap<u32, (usize, DepthFigures)> {
    let mut by: BTreeMap<u32, Vec<&RunRecord>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.scenario.starts_with("image-depth-") && r.error.is_none()) {
        if let Some(n) = r.extra.get("depth_layers") {
            by.entry(*n as u32).or_default().push(r);
        }
    }
    by.into_iter()
        .map(|(n, rs)| {
            let m = DEPTH_METRICS
                .iter()
                .filter_map(|(k, _)| {
                    let v: Vec<f64> = rs.iter().filter_map(|r| r.extra.get(*k).map(|ns| ns / 1e6)).collect();
                    let ci = bootstrap_median_ci(&v, seed_of(&format!("image-depth-{n}|{k}")))?;
                    median(&v).map(|m| (k.to_string(), (m, ci)))
                })
                .collect();
            (n, (rs.len(), m))
        })
        .collect()
}

fn phase_rgb(phase: &str) -> RGBColor {
    match phase {
        "pull" => RGBColor(31, 119, 180),
        "unpack" => RGBColor(255, 127, 14),
        PULL_AND_UNPACK => RGBColor(120, 70, 160),
        "prepare" => RGBColor(44, 160, 44),
        _ => RGBColor(214, 39, 40),
    }
}

fn draw_stacked<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    data: &[(String, Cold)],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let max = data
        .iter()
        .map(|(_, c)| c.total.map_or(0.0, |t| t.1.hi).max(c.phases.iter().map(|(_, v)| v).sum::<f64>()))
        .fold(1.0, f64::max)
        * 1.1;
    let (w, _) = root.dim_in_pixel();
    let (plot, legend) = root.split_horizontally(w.saturating_sub(150));
    let mut chart = ChartBuilder::on(&plot)
        .caption("cold start: pull → READY by phase (median ms; bar: 95% CI of the total)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(110)
        .build_cartesian_2d(0.0..max, 0.0..data.len() as f64)?;
    let names: Vec<String> = data.iter().map(|(b, _)| b.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("ms")
        .x_label_formatter(&|x| charts::tick_label(*x))
        .y_labels(names.len() * 2 + 1)
        .y_label_formatter(&|y| {
            let i = (*y - 0.5).round();
            if (*y - 0.5 - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .draw()?;
    let mut seen: Vec<String> = Vec::new();
    for (i, (_, c)) in data.iter().enumerate() {
        let mut x = 0.0;
        let y = i as f64;
        for (name, v) in &c.phases {
            if !seen.contains(name) {
                seen.push(name.clone());
            }
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x, y + 0.2), (x + v, y + 0.8)],
                phase_rgb(name).filled(),
            )))?;
            x += v;
        }
        if let Some((m, ci)) = c.total {
            chart.draw_series(std::iter::once(ErrorBar::new_horizontal(
                y + 0.5,
                ci.lo,
                m,
                ci.hi,
                BLACK.filled(),
                10,
            )))?;
        }
    }
    // Phases in pipeline order, each with its colour.
    let order = ["pull", PULL_AND_UNPACK, "unpack", "prepare", "start"];
    for (k, name) in order.iter().filter(|n| seen.iter().any(|s| s == *n)).enumerate() {
        let y = 60 + 22 * k as i32;
        legend.draw(&Rectangle::new([(4, y), (18, y + 14)], phase_rgb(name).filled()))?;
        legend.draw(&Text::new(name.to_string(), (24, y), ("sans-serif", 14)))?;
    }
    Ok(())
}

fn stacked(stem: &Path, data: &[(String, Cold)]) -> Result<Vec<PathBuf>, ChartError> {
    charts::ensure_font()?;
    let size = (1000, 140 + 60 * data.len() as u32);
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        draw_stacked(&root, data)
            .and_then(|_| root.present().map_err(Into::into))
            .map_err(|e| ChartError::Draw(svg.clone(), e.to_string()))?;
    }
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        draw_stacked(&root, data)
            .and_then(|_| root.present().map_err(Into::into))
            .map_err(|e| ChartError::Draw(png.clone(), e.to_string()))?;
    }
    Ok(vec![svg, png])
}

fn figure(w: &mut Written, name: &str, r: Result<Vec<PathBuf>, ChartError>) -> String {
    match r {
        Ok(files) => {
            w.files.extend(files);
            format!("\n![{name}]({name}.svg)\n")
        }
        Err(e) => {
            w.chart_errors.push(format!("{name}: {e}"));
            format!("\n(chart {name} not drawn: {e})\n")
        }
    }
}

/// Notes worth repeating once: cache state, VM/backends not run, depth failures.
fn notes(records: &[RunRecord], prefix: &str) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    for r in records.iter().filter(|r| r.scenario.starts_with(prefix)) {
        for n in r.notes.iter().filter(|n| n.starts_with(prefix) || n.contains("could not start")) {
            seen.insert(n.clone());
        }
        if let Some(e) = &r.error {
            seen.insert(format!("{}: {e}", r.backend));
        }
    }
    // A 128-layer mount error quotes every lower dir: the start of it says enough.
    seen.into_iter()
        .map(|n| if n.chars().count() > 400 { n.chars().take(400).collect::<String>() + " …" } else { n })
        .collect()
}

/// The markdown section (empty when the result set has no registry scenarios).
pub fn section(records: &[RunRecord], out: &Path, w: &mut Written) -> String {
    let cold = cold_phases(records);
    let depth = depth_medians(records);
    if cold.is_empty() && depth.is_empty() && !records.iter().any(|r| r.scenario == "cold-start") {
        return String::new();
    }
    let mut s = String::from("\n## Images from a registry\n\n");
    s.push_str(
        "A private registry (Debian's docker-registry, CNCF distribution 2.8) on 127.0.0.1 serves the images; \
         `cvbench image pull` verifies every blob's size and digest before it enters the store.\n",
    );
    s.push_str("\n### Cold start: pull → READY\n\n");
    s.push_str("Image: the workload plus a 64 MiB incompressible layer (gzip). The image store is empty before every unit.\n\n");
    s.push_str(
        "Docker's engine unpacks the layers inside its pull, so its pull column is pull+unpack. Total: the median \
         of each unit's summed phases with its bootstrap 95% CI.\n\n",
    );
    s.push_str(
        "| backend | n | pull ms | unpack ms | prepare ms | start ms | total ms [95% CI] |\n|---|---|---|---|---|---|---|\n",
    );
    for (b, c) in &cold {
        let get = |p: &str| c.phases.iter().find(|(k, _)| k == p).map(|(_, v)| format!("{v:.1}"));
        let pull = get("pull").or_else(|| get(PULL_AND_UNPACK).map(|v| format!("{v} (pull+unpack)")));
        let unpack = get("unpack").or_else(|| get(PULL_AND_UNPACK).map(|_| "in pull".to_string()));
        let total = c.total.map_or("—".to_string(), |(m, ci)| format!("{m:.1} [{:.1}–{:.1}]", ci.lo, ci.hi));
        let dash = || "—".to_string();
        let _ = writeln!(
            s,
            "| {b} | {} | {} | {} | {} | {} | {total} |",
            c.n,
            pull.unwrap_or_else(dash),
            unpack.unwrap_or_else(dash),
            get("prepare").unwrap_or_else(dash),
            get("start").unwrap_or_else(dash),
        );
    }
    if !cold.is_empty() {
        let data: Vec<(String, Cold)> = cold.iter().map(|(b, c)| (b.clone(), c.clone())).collect();
        s.push_str(&figure(w, "cold-start", stacked(&out.join("cold-start"), &data)));
    }
    for n in notes(records, "cold-start") {
        let _ = writeln!(s, "- {n}");
    }
    s.push_str("\n### Image depth (overlayfs, our runtime)\n\n");
    s.push_str("Each figure: the median with its bootstrap 95% CI.\n\n");
    s.push_str("| layers | n | overlay mount ms | first read ms | copy-up 64 MiB ms | start → READY ms |\n|---|---|---|---|---|---|\n");
    for (layers, (n, m)) in &depth {
        let get =
            |k: &str| m.get(k).map_or("failed".to_string(), |(v, ci)| format!("{v:.2} [{:.2}–{:.2}]", ci.lo, ci.hi));
        let _ = writeln!(
            s,
            "| {layers} | {n} | {} | {} | {} | {} |",
            get("depth_mount_ns"),
            get("depth_first_read_ns"),
            get("depth_copy_up_ns"),
            get("depth_container_ready_ns")
        );
    }
    if !depth.is_empty() {
        // Every line is our runtime's: its colour for the first, distinct ones for the rest.
        let colours = charts::line_colors(BackendId::Container.profile().rgb, DEPTH_METRICS.len());
        let series: Vec<Series> = DEPTH_METRICS
            .iter()
            .zip(colours)
            .map(|((k, label), rgb)| Series {
                label: label.to_string(),
                rgb,
                points: depth
                    .iter()
                    .filter_map(|(n, (_, m))| {
                        m.get(*k).map(|(v, ci)| charts::Point { x: f64::from(*n), y: *v, lo: ci.lo, hi: ci.hi })
                    })
                    .collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        s.push_str(&figure(
            w,
            "image-depth",
            charts::lines(
                &out.join("image-depth"),
                "our runtime: cost by image depth (median, bars: 95% CI)",
                "layers",
                "ms",
                &series,
            ),
        ));
    }
    for n in notes(records, "image-depth") {
        let _ = writeln!(s, "- {n}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(scenario: &str, backend: &str, phases: &[(&str, u64)]) -> RunRecord {
        let mut r = RunRecord { scenario: scenario.into(), backend: backend.into(), ..Default::default() };
        r.host.phases = phases.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        r
    }

    #[test]
    fn cold_phases_are_medians_per_backend_over_successes() {
        let mut failed = rec("cold-start", "runc", &[("pull", 9_000_000_000)]);
        failed.error = Some("x".into());
        let rs = vec![
            rec("cold-start", "runc", &[("pull", 1_000_000), ("start", 4_000_000)]),
            rec("cold-start", "runc", &[("pull", 3_000_000), ("start", 6_000_000)]),
            failed,
            rec("startup-serial", "runc", &[("pull", 7)]),
        ];
        let c = cold_phases(&rs);
        assert_eq!(c["runc"].n, 2);
        // No unpack phase recorded: the pull did the unpacking.
        assert_eq!(c["runc"].phases, vec![("pull+unpack".to_string(), 2.0), ("start".to_string(), 5.0)]);
        // Totals 5 and 9 ms: median 7, CI within them.
        let (m, ci) = c["runc"].total.unwrap();
        assert_eq!(m, 7.0);
        assert!(ci.lo >= 5.0 && ci.hi <= 9.0, "{ci:?}");
    }

    #[test]
    fn a_pull_beside_an_unpack_keeps_its_name() {
        let rs = vec![rec("cold-start", "crun", &[("pull", 1_000_000), ("unpack", 2_000_000)])];
        assert_eq!(cold_phases(&rs)["crun"].phases[0].0, "pull");
    }

    #[test]
    fn depth_medians_group_by_layer_count() {
        let mut a = rec("image-depth-8", "container", &[]);
        a.extra.insert("depth_layers".into(), 8.0);
        a.extra.insert("depth_mount_ns".into(), 2e6);
        let mut b = a.clone();
        b.extra.insert("depth_mount_ns".into(), 4e6);
        let d = depth_medians(&[a, b]);
        assert_eq!(d[&8].0, 2);
        assert_eq!(d[&8].1["depth_mount_ns"].0, 3.0);
        assert!(!d[&8].1.contains_key("depth_container_ready_ns"));
    }
}
