//! The registry scenarios' section of the report: cold start (pull → READY) by phase per
//! backend, and the overlay cost per image depth, each as a table of medians and a chart.
//! The numbers are aggregated here; the drawing takes them as they are.

use plotters::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::charts::{self, ChartError, Series};
use super::Written;
use crate::record::RunRecord;
use crate::stats::median;

const COLD_PHASES: &[&str] = &["pull", "unpack", "prepare", "start"];
const DEPTH_METRICS: &[(&str, &str)] = &[
    ("depth_mount_ns", "overlay mount"),
    ("depth_first_read_ns", "first read (bottom layer)"),
    ("depth_copy_up_ns", "copy-up of 64 MiB on first write"),
    ("depth_container_ready_ns", "our runtime start → READY"),
];

/// Median phase times (ms) of the successful cold starts, per backend.
pub fn cold_phases(records: &[RunRecord]) -> BTreeMap<String, (usize, Vec<(String, f64)>)> {
    let mut by: BTreeMap<String, Vec<&RunRecord>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.scenario == "cold-start" && r.error.is_none()) {
        by.entry(r.backend.clone()).or_default().push(r);
    }
    by.into_iter()
        .map(|(b, rs)| {
            let phases = COLD_PHASES
                .iter()
                .filter_map(|p| {
                    let v: Vec<f64> = rs
                        .iter()
                        .filter_map(|r| r.host.phases.iter().find(|(n, _)| n == p).map(|(_, ns)| *ns as f64 / 1e6))
                        .collect();
                    median(&v).map(|m| (p.to_string(), m))
                })
                .collect();
            (b, (rs.len(), phases))
        })
        .collect()
}

/// Median of each depth metric (ms) per depth, over the successful image-depth units.
pub fn depth_medians(records: &[RunRecord]) -> BTreeMap<u32, (usize, BTreeMap<String, f64>)> {
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
                    median(&v).map(|m| (k.to_string(), m))
                })
                .collect();
            (n, (rs.len(), m))
        })
        .collect()
}

fn draw_stacked<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    data: &[(String, Vec<(String, f64)>)],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let max = data.iter().map(|(_, p)| p.iter().map(|(_, v)| v).sum::<f64>()).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(root)
        .caption("cold start: pull → READY by phase (median ms)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(110)
        .build_cartesian_2d(0.0..max, 0.0..data.len() as f64)?;
    let names: Vec<String> = data.iter().map(|(b, _)| b.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("ms")
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
    let colors = [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40)];
    for (pi, phase) in COLD_PHASES.iter().enumerate() {
        let c = colors[pi % colors.len()];
        let rects: Vec<Rectangle<(f64, f64)>> = data
            .iter()
            .enumerate()
            .filter_map(|(i, (_, ph))| {
                let before: f64 = ph.iter().take_while(|(n, _)| n != phase).map(|(_, v)| v).sum();
                let v = ph.iter().find(|(n, _)| n == phase)?.1;
                Some(Rectangle::new([(before, i as f64 + 0.15), (before + v, i as f64 + 0.85)], c.filled()))
            })
            .collect();
        chart
            .draw_series(rects)?
            .label(*phase)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    Ok(())
}

fn stacked(stem: &Path, data: &[(String, Vec<(String, f64)>)]) -> Result<Vec<PathBuf>, ChartError> {
    charts::ensure_font()?;
    let size = (900, 140 + 60 * data.len() as u32);
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
        "| backend | n | pull ms | unpack ms | prepare ms | start ms | total ms |\n|---|---|---|---|---|---|---|\n",
    );
    for (b, (n, ph)) in &cold {
        let get = |p: &str| ph.iter().find(|(k, _)| k == p).map_or("—".to_string(), |(_, v)| format!("{v:.1}"));
        let total: f64 = ph.iter().map(|(_, v)| v).sum();
        let _ = writeln!(
            s,
            "| {b} | {n} | {} | {} | {} | {} | {total:.1} |",
            get("pull"),
            get("unpack"),
            get("prepare"),
            get("start")
        );
    }
    if !cold.is_empty() {
        let data: Vec<(String, Vec<(String, f64)>)> = cold.iter().map(|(b, (_, p))| (b.clone(), p.clone())).collect();
        s.push_str(&figure(w, "cold-start", stacked(&out.join("cold-start"), &data)));
    }
    for n in notes(records, "cold-start") {
        let _ = writeln!(s, "- {n}");
    }
    s.push_str("\n### Image depth (overlayfs, our runtime)\n\n");
    s.push_str("| layers | n | overlay mount ms | first read ms | copy-up 64 MiB ms | start → READY ms |\n|---|---|---|---|---|---|\n");
    for (layers, (n, m)) in &depth {
        let get = |k: &str| m.get(k).map_or("failed".to_string(), |v| format!("{v:.2}"));
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
        let series: Vec<Series> = DEPTH_METRICS
            .iter()
            .map(|(k, label)| Series {
                backend: label.to_string(),
                points: depth
                    .iter()
                    .filter_map(|(n, (_, m))| {
                        m.get(*k).map(|v| charts::Point { x: f64::from(*n), y: *v, lo: *v, hi: *v })
                    })
                    .collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        s.push_str(&figure(
            w,
            "image-depth",
            charts::lines(&out.join("image-depth"), "cost by image depth (median)", "layers", "ms", &series),
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
        assert_eq!(c["runc"], (2, vec![("pull".to_string(), 2.0), ("start".to_string(), 5.0)]));
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
        assert_eq!(d[&8].1["depth_mount_ns"], 3.0);
        assert!(!d[&8].1.contains_key("depth_container_ready_ns"));
    }
}
