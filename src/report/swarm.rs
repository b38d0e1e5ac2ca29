//! The swarm scenario's section of the report: per service size N, the median seconds of each
//! phase (service create → all running and READY, beside N `docker run -d`; scale; rolling
//! update; node loss; leader loss) and the engines' memory, as a table and a chart. The numbers
//! are aggregated here; the drawing takes them as they are.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::charts::{self, ChartError, Point, Series};
use super::Written;
use crate::record::RunRecord;
use crate::stats::decision::MIN_ROUNDS;
use crate::stats::median;

/// Per N: rounds that succeeded, and per phase the (median, min, max) seconds.
pub type PhaseTable = BTreeMap<u32, (usize, BTreeMap<String, (f64, f64, f64)>)>;

fn size_of(scenario: &str) -> Option<u32> {
    scenario.strip_prefix("swarm-")?.parse().ok()
}

/// Where the swarm's own bench writes its report, relative to the main report's directory.
const OWN_REPORT: &str = "swarm/REPORT.md";

/// A report without swarm records (the full matrix leaves the swarm out: a round builds five
/// engines) points at the swarm's own committed report when it sits beside it.
fn link_to_own_bench(out: &Path) -> String {
    if !out.join(OWN_REPORT).is_file() {
        return String::new();
    }
    format!(
        "\n## Docker Swarm\n\nThe swarm scenario (service start, scaling, rolling update, node loss and leader \
         failover on a swarm of five private engines the run makes) is a bench of its own, \
         `cvbench bench --backends docker --workloads swarm`: its rows and chart are in \
         [{OWN_REPORT}]({OWN_REPORT}).\n"
    )
}

/// Phase seconds per N over the successful rounds, in the order the rounds record them.
pub fn phases(records: &[RunRecord]) -> (PhaseTable, Vec<String>) {
    let mut raw: BTreeMap<u32, (usize, BTreeMap<String, Vec<f64>>)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for r in records.iter().filter(|r| r.error.is_none()) {
        let Some(n) = size_of(&r.scenario) else { continue };
        let e = raw.entry(n).or_default();
        e.0 += 1;
        for (k, ns) in &r.host.phases {
            if !order.contains(k) {
                order.push(k.clone());
            }
            e.1.entry(k.clone()).or_default().push(*ns as f64 / 1e9);
        }
    }
    let table = raw
        .into_iter()
        .map(|(n, (count, m))| {
            let m = m
                .into_iter()
                .filter_map(|(k, v)| {
                    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    Some((k, (median(&v)?, lo, hi)))
                })
                .collect();
            (n, (count, m))
        })
        .collect();
    (table, order)
}

/// Median MiB of the engines' PSS, idle and with tasks, per N.
fn memory(records: &[RunRecord]) -> BTreeMap<u32, (Option<f64>, Option<f64>)> {
    let mut out = BTreeMap::new();
    for n in records.iter().filter_map(|r| size_of(&r.scenario)).collect::<std::collections::BTreeSet<_>>() {
        let get = |k: &str| {
            let v: Vec<f64> = records
                .iter()
                .filter(|r| r.error.is_none() && size_of(&r.scenario) == Some(n))
                .filter_map(|r| r.extra.get(k).map(|kib| kib / 1024.0))
                .collect();
            median(&v)
        };
        out.insert(n, (get("swarm_engines_pss_kib_idle"), get("swarm_engines_pss_kib_tasks")));
    }
    out
}

/// `N = 10 (10 rounds)`, or with fewer than [`MIN_ROUNDS`] `N = 50 (3 rounds; not judged: 3 rounds < 10)`.
fn column_head(n: u32, rounds: usize) -> String {
    if rounds < MIN_ROUNDS {
        format!("N = {n} ({rounds} rounds; not judged: {rounds} rounds < {MIN_ROUNDS})")
    } else {
        format!("N = {n} ({rounds} rounds)")
    }
}

/// The markdown section (empty without swarm records).
pub fn section(records: &[RunRecord], out: &Path, w: &mut Written) -> String {
    if !records.iter().any(|r| size_of(&r.scenario).is_some()) {
        return link_to_own_bench(out);
    }
    let (table, order) = phases(records);
    let named = records.iter().any(|r| r.extra.get("swarm_named").is_some_and(|v| *v == 1.0));
    let mut s = String::new();
    if named {
        let _ = write!(
            s,
            "\n## Docker Swarm: orchestration on a swarm named by --swarm-manager\n\n\
             Each round measures the round's service sizes N, in an order shuffled from the run's seed, on the swarm \
             the user named (its address and nodes: the manifest's `swarm`), with a service of the run's own that is \
             removed after each N. Not measured there: {}. Seconds, median (min–max) over the successful rounds; a \
             column with fewer than the {MIN_ROUNDS} rounds a verdict needs says so.\n\n",
            crate::swarm::remote::NOT_MEASURED
        );
    } else {
        let _ = write!(
            s,
            "\n## Docker Swarm: orchestration on a swarm made by the run\n\n\
             Each round makes one swarm (3 managers + 2 workers, each a private dockerd in its own network namespace \
             on a run-created bridge; nothing routed to the host), pulls the workload's two tags on every node, and \
             measures the round's service sizes N on it in an order shuffled from the run's seed; after each N the \
             service is removed and the killed worker and leader engines are restarted on their data roots, and the \
             next N starts once every node is back and no engine holds a container. Seconds, median (min–max) over \
             the successful rounds. These cells have no native to pair with, so they are descriptive; a column with \
             fewer than the {MIN_ROUNDS} rounds a verdict needs says so.\n\n"
        );
    }
    let sizes: Vec<u32> = table.keys().copied().collect();
    let _ = write!(s, "| phase |");
    for n in &sizes {
        let _ = write!(s, " {} |", column_head(*n, table[n].0));
    }
    let _ = writeln!(s, "\n|---|{}", "---|".repeat(sizes.len()));
    for k in &order {
        let _ = write!(s, "| {k} |");
        for n in &sizes {
            match table[n].1.get(k) {
                Some((m, lo, hi)) => {
                    let _ = write!(s, " {m:.2} ({lo:.2}–{hi:.2}) |");
                }
                None => s.push_str(" — |"),
            }
        }
        s.push('\n');
    }
    let mem = memory(records);
    let _ = write!(s, "| engines' PSS MiB, idle → with N tasks |");
    for n in &sizes {
        match mem.get(n) {
            Some((Some(i), Some(t))) => {
                let _ = write!(s, " {i:.0} → {t:.0} |");
            }
            _ => s.push_str(" — |"),
        }
    }
    s.push('\n');
    let series: Vec<Series> = order
        .iter()
        .filter(|k| k.as_str() != "swarm formed")
        .map(|k| Series {
            label: k.clone(),
            rgb: (0, 0, 0), // unused: this chart takes its colours from PALETTE by line
            points: table
                .iter()
                .filter_map(|(n, (_, m))| {
                    m.get(k).map(|(y, lo, hi)| Point { x: f64::from(*n), y: *y, lo: *lo, hi: *hi })
                })
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    if !series.is_empty() {
        let chart = draw(&out.join("swarm"), &series);
        match chart {
            Ok(files) => {
                w.files.extend(files);
                s.push_str("\n![swarm](swarm.svg)\n");
            }
            Err(e) => {
                w.chart_errors.push(format!("swarm: {e}"));
                let _ = writeln!(s, "\n(chart swarm not drawn: {e})");
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for r in records.iter().filter(|r| size_of(&r.scenario).is_some()) {
        seen.extend(r.notes.iter().filter(|n| n.starts_with("swarm")).cloned());
        if let Some(e) = &r.error {
            seen.insert(format!("{} failed: {e}", r.scenario));
        }
    }
    for n in seen {
        let _ = writeln!(s, "- {n}");
    }
    s
}

/// A phase's colour (the shared palette colours backends; these lines are phases).
const PALETTE: &[RGBColor] = &[
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(89, 161, 79),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(237, 201, 72),
    RGBColor(176, 122, 161),
    RGBColor(156, 117, 95),
    RGBColor(50, 50, 50),
];

/// The phases against N (log axis: N goes 1, 10, 50), min–max bars; SVG and PNG.
fn draw(stem: &Path, data: &[Series]) -> Result<Vec<PathBuf>, ChartError> {
    charts::ensure_font()?;
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    plot(&SVGBackend::new(&svg, (900, 520)).into_drawing_area(), data)
        .map_err(|e| ChartError::Draw(svg.clone(), e.to_string()))?;
    plot(&BitMapBackend::new(&png, (900, 520)).into_drawing_area(), data)
        .map_err(|e| ChartError::Draw(png.clone(), e.to_string()))?;
    Ok(vec![svg, png])
}

fn plot<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    data: &[Series],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let pts = || data.iter().flat_map(|s| s.points.iter());
    let xmax = pts().map(|p| p.x).fold(1.0, f64::max);
    let ymax = pts().map(|p| p.hi.max(p.y)).fold(0.0, f64::max).max(1.0);
    let mut chart = ChartBuilder::on(root)
        .caption("swarm: seconds per phase by service size (median, min–max)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0.8..xmax * 1.3).log_scale(), 0.0..ymax * 1.1)?;
    chart.configure_mesh().x_desc("tasks N").y_desc("s").label_style(("sans-serif", 14)).draw()?;
    for (i, s) in data.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let mut p = s.points.clone();
        p.sort_by(|a, b| a.x.total_cmp(&b.x));
        chart
            .draw_series(LineSeries::new(p.iter().map(|q| (q.x, q.y)), c.stroke_width(2)))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart.draw_series(p.iter().map(|q| ErrorBar::new_vertical(q.x, q.lo, q.y, q.hi, c.filled(), 8)))?;
        chart.draw_series(p.iter().map(|q| Circle::new((q.x, q.y), 4, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(scenario: &str, phases: &[(&str, u64)], error: Option<&str>) -> RunRecord {
        let mut r = RunRecord { scenario: scenario.into(), backend: "docker".into(), ..Default::default() };
        r.host.phases = phases.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        r.error = error.map(str::to_string);
        r
    }

    #[test]
    fn phases_are_medians_per_size_over_successful_rounds() {
        let rs = vec![
            rec("swarm-10", &[("service all running", 1_000_000_000)], None),
            rec("swarm-10", &[("service all running", 3_000_000_000)], None),
            rec("swarm-10", &[("service all running", 2_000_000_000)], None),
            rec("swarm-10", &[("service all running", 90_000_000_000)], Some("did not converge")),
            rec("cold-start", &[("pull", 1)], None),
        ];
        let (t, order) = phases(&rs);
        assert_eq!(order, ["service all running"]);
        assert_eq!(t.len(), 1);
        let (count, m) = &t[&10];
        assert_eq!(*count, 3);
        assert_eq!(m["service all running"], (2.0, 1.0, 3.0));
    }

    #[test]
    fn a_size_with_fewer_than_ten_rounds_is_marked_not_judged() {
        assert_eq!(column_head(50, 3), "N = 50 (3 rounds; not judged: 3 rounds < 10)");
        assert_eq!(column_head(10, 10), "N = 10 (10 rounds)");
    }

    #[test]
    fn no_swarm_records_no_section_but_a_link_to_the_swarms_own_report_beside_it() {
        let mut w = Written { files: vec![], chart_errors: vec![] };
        let recs = [rec("cold-start", &[], None)];
        assert_eq!(section(&recs, Path::new("/nonexistent"), &mut w), "");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("swarm")).unwrap();
        std::fs::write(dir.path().join(OWN_REPORT), "# swarm\n").unwrap();
        let s = section(&recs, dir.path(), &mut w);
        assert!(s.contains(&format!("[{OWN_REPORT}]({OWN_REPORT})")), "{s}");
        assert!(w.files.is_empty(), "a link draws no chart");
    }
}
