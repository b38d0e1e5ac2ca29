//! Every chart of the report, drawn with plotters as SVG and PNG from data
//! that is already aggregated (this module computes nothing but layout).
//! Each backend keeps one colour in every chart (`backends::rgb`); error
//! bars are the bootstrap 95% CIs; axes are logarithmic where the data span
//! decades.
//! PNG text needs a TrueType font: DejaVu Sans from Debian's
//! fonts-dejavu-core, loaded at run time (override with CVBENCH_FONT).

use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("font {0} not found or unreadable (apt-get install fonts-dejavu-core, or set CVBENCH_FONT to a .ttf)")]
    Font(PathBuf),
    #[error("drawing {0}: {1}")]
    Draw(PathBuf, String),
}

/// The per-backend values of one distribution (e.g. startup in ms).
#[derive(Clone, Debug, PartialEq)]
pub struct Distribution {
    pub backend: String,
    pub values: Vec<f64>,
}

/// One point of a line: x, the median y and its CI.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub lo: f64,
    pub hi: f64,
}

/// One backend's line in an x/y chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub backend: String,
    pub points: Vec<Point>,
}

/// One bar: a backend's ratio to native for a metric, with its CI, as the
/// table prints it (for ↑ metrics below 1 is a loss, for ↓ above 1).
#[derive(Clone, Debug, PartialEq)]
pub struct RatioBar {
    pub metric: String,
    pub backend: String,
    pub ratio: f64,
    pub lo: f64,
    pub hi: f64,
    /// The CI excludes 1.
    pub significant: bool,
}

/// One backend's startup split into phases (name, median ms), and its
/// median launch→READY.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseBar {
    pub backend: String,
    pub phases: Vec<(String, f64)>,
    pub total_ms: f64,
}

pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

static FONT: OnceLock<Result<(), PathBuf>> = OnceLock::new();

/// Load and register the font once per process.
pub fn ensure_font() -> Result<(), ChartError> {
    FONT.get_or_init(|| {
        let path = std::env::var_os("CVBENCH_FONT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_FONT));
        let bytes = std::fs::read(&path).map_err(|_| path.clone())?;
        // plotters keeps registered fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| path.clone())
    })
    .clone()
    .map_err(ChartError::Font)
}

fn color(backend: &str) -> RGBColor {
    let (r, g, b) = super::backends::rgb(backend);
    RGBColor(r, g, b)
}

/// A phase's shade: the palette cycles so neighbouring phases differ.
fn phase_color(i: usize) -> RGBColor {
    const P: &[RGBColor] = &[
        RGBColor(78, 121, 167),
        RGBColor(242, 142, 43),
        RGBColor(89, 161, 79),
        RGBColor(225, 87, 89),
        RGBColor(118, 183, 178),
        RGBColor(237, 201, 72),
        RGBColor(176, 122, 161),
        RGBColor(255, 157, 167),
        RGBColor(156, 117, 95),
    ];
    P[i % P.len()]
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

// Each chart is a function generic over the drawing backend; `render!`
// instantiates it once for SVG and once for PNG.
macro_rules! render {
    ($stem:expr, $size:expr, $draw:ident, $($arg:expr),*) => {{
        ensure_font()?;
        let svg = $stem.with_extension("svg");
        let png = $stem.with_extension("png");
        {
            let root = SVGBackend::new(&svg, $size).into_drawing_area();
            $draw(&root, $($arg),*).and_then(|_| root.present().map_err(Into::into))
                .map_err(|e| ChartError::Draw(svg.clone(), e.to_string()))?;
        }
        {
            let root = BitMapBackend::new(&png, $size).into_drawing_area();
            $draw(&root, $($arg),*).and_then(|_| root.present().map_err(Into::into))
                .map_err(|e| ChartError::Draw(png.clone(), e.to_string()))?;
        }
        Ok(vec![svg, png])
    }};
}

fn log_range(lo: f64, hi: f64) -> (f64, f64) {
    let lo = if lo > 0.0 { lo } else { 1e-3 };
    let hi = if hi > lo { hi } else { lo * 10.0 };
    (lo / 1.5, hi * 1.5)
}

fn draw_distributions<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    unit: &str,
    data: &[Distribution],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let all: Vec<f64> = data.iter().flat_map(|d| d.values.iter().copied()).collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = all.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = log_range(lo, hi);
    let names: Vec<String> = data.iter().map(|d| d.backend.clone()).collect();
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(data.len() as f64 - 0.5), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(data.len().max(1))
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(unit)
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, d) in data.iter().enumerate() {
        let c = color(&d.backend);
        let n = d.values.len().max(1) as f64;
        chart.draw_series(d.values.iter().enumerate().map(|(k, v)| {
            // Spread the points across the column so equal values stay visible.
            let x = i as f64 - 0.3 + 0.6 * (k as f64 + 0.5) / n;
            Circle::new((x, *v), 3, c.mix(0.6).filled())
        }))?;
        if let Some(m) = crate::stats::median(&d.values) {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(i as f64 - 0.4, m), (i as f64 + 0.4, m)],
                c.stroke_width(3),
            )))?;
        }
    }
    Ok(())
}

fn draw_lines<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    data: &[Series],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let pts = || data.iter().flat_map(|s| s.points.iter());
    let xmin = pts().map(|p| p.x).fold(f64::INFINITY, f64::min);
    let xmax = pts().map(|p| p.x).fold(1.0, f64::max);
    let ymax = pts().map(|p| p.hi.max(p.y)).fold(0.0, f64::max).max(1e-9);
    let ymin = pts().map(|p| p.lo.min(p.y)).fold(f64::INFINITY, f64::min);
    // N goes 1, 10, 50: a log axis spaces them evenly. Backends that differ
    // by orders of magnitude share a log y axis; a zero or negative point
    // needs a linear one.
    let log_x = xmin > 0.0 && xmax / xmin >= 10.0;
    let log_y = ymin > 0.0 && ymax / ymin > 20.0;
    let (xl, xh) = if log_x { (xmin / 1.5, xmax * 1.5) } else { (0.0, xmax * 1.05) };
    macro_rules! plot {
        ($xrange:expr, $yrange:expr, $xdesc:expr, $ydesc:expr) => {{
            let mut chart = ChartBuilder::on(root)
                .caption(title, ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d($xrange, $yrange)?;
            chart.configure_mesh().x_desc($xdesc).y_desc($ydesc).label_style(("sans-serif", 14)).draw()?;
            for s in data {
                let c = color(&s.backend);
                let mut pts = s.points.clone();
                pts.sort_by(|a, b| a.x.total_cmp(&b.x));
                chart
                    .draw_series(LineSeries::new(pts.iter().map(|p| (p.x, p.y)), c.stroke_width(2)))?
                    .label(s.backend.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
                chart.draw_series(pts.iter().map(|p| ErrorBar::new_vertical(p.x, p.lo, p.y, p.hi, c.filled(), 8)))?;
                chart.draw_series(pts.iter().map(|p| Circle::new((p.x, p.y), 4, c.filled())))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .position(SeriesLabelPosition::UpperLeft)
                .draw()?;
        }};
    }
    let xd = if log_x { format!("{x_desc} (log scale)") } else { x_desc.to_string() };
    match (log_x, log_y) {
        (true, true) => {
            let (lo, hi) = log_range(ymin, ymax);
            plot!((xl..xh).log_scale(), (lo..hi).log_scale(), xd.clone(), format!("{y_desc} (log scale)"));
        }
        (true, false) => plot!((xl..xh).log_scale(), ymin.min(0.0) * 1.15..ymax * 1.15, xd.clone(), y_desc.to_string()),
        (false, true) => {
            let (lo, hi) = log_range(ymin, ymax);
            plot!(xl..xh, (lo..hi).log_scale(), xd.clone(), format!("{y_desc} (log scale)"));
        }
        (false, false) => plot!(xl..xh, ymin.min(0.0) * 1.15..ymax * 1.15, xd.clone(), y_desc.to_string()),
    }
    Ok(())
}

fn draw_ratios<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, bars: &[RatioBar]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let mut metrics: Vec<String> = Vec::new();
    let mut backends: Vec<String> = Vec::new();
    for b in bars {
        if !metrics.contains(&b.metric) {
            metrics.push(b.metric.clone());
        }
        if !backends.contains(&b.backend) {
            backends.push(b.backend.clone());
        }
    }
    let lo = bars.iter().map(|b| b.lo.min(b.ratio)).filter(|v| *v > 0.0).fold(1.0, f64::min);
    let hi = bars.iter().map(|b| b.hi.max(b.ratio)).fold(1.0, f64::max);
    let (lo, hi) = log_range(lo, hi);
    let m = metrics.len().max(1) as f64;
    let (upper, lower) = root.split_vertically(root.dim_in_pixel().1 - 40);
    let mut chart = ChartBuilder::on(&upper)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(330)
        .build_cartesian_2d((lo..hi).log_scale(), -0.5f64..(m - 0.5))?;
    chart
        .configure_mesh()
        .y_labels(metrics.len().max(1))
        .y_label_formatter(&|y| {
            let i = y.round();
            if (y - i).abs() < 1e-6 && i >= 0.0 {
                // Row 0 is drawn at the top.
                metrics.len().checked_sub(1 + i as usize).and_then(|k| metrics.get(k)).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc("ratio to native (×, log scale) with 95% CI; pale bars: CI contains 1 (≈ native) or n < 5 (not judged)")
        .label_style(("sans-serif", 13))
        .draw()?;
    chart.draw_series(std::iter::once(PathElement::new(vec![(1.0, -0.5), (1.0, m - 0.5)], BLACK.stroke_width(1))))?;
    let nb = backends.len().max(1) as f64;
    let h = 0.8 / nb;
    for b in bars {
        let mi = (metrics.len() - 1 - metrics.iter().position(|x| *x == b.metric).unwrap_or(0)) as f64;
        let bi = backends.iter().position(|x| *x == b.backend).unwrap_or(0);
        let y0 = mi - 0.4 + h * bi as f64;
        let c = color(&b.backend);
        let fill = if b.significant { c.filled() } else { c.mix(0.3).filled() };
        // Bars grow from 1 (native) towards the ratio.
        let (x0, x1) = if b.ratio >= 1.0 { (1.0, b.ratio) } else { (b.ratio.max(lo), 1.0) };
        chart.draw_series(std::iter::once(Rectangle::new([(x0, y0), (x1, y0 + h * 0.9)], fill)))?;
        let yc = y0 + h * 0.45;
        chart.draw_series(std::iter::once(ErrorBar::new_horizontal(
            yc,
            b.lo.max(lo),
            b.ratio,
            b.hi,
            BLACK.filled(),
            6,
        )))?;
    }
    // Legend along the bottom.
    let step = lower.dim_in_pixel().0 as i32 / (backends.len() as i32 + 1).max(1);
    for (i, name) in backends.iter().enumerate() {
        let x = 20 + step * i as i32;
        lower.draw(&Rectangle::new([(x, 10), (x + 14, 24)], color(name).filled()))?;
        lower.draw(&Text::new(name.clone(), (x + 20, 10), ("sans-serif", 14)))?;
    }
    Ok(())
}

fn draw_phases<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, bars: &[PhaseBar]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let n = bars.len().max(1) as f64;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(200)
        .build_cartesian_2d(0f64..100f64, -0.5f64..(n - 0.5))?;
    chart
        .configure_mesh()
        .y_labels(bars.len().max(1))
        .y_label_formatter(&|y| {
            let i = y.round();
            if (y - i).abs() < 1e-6 && i >= 0.0 {
                bars.len()
                    .checked_sub(1 + i as usize)
                    .and_then(|k| bars.get(k))
                    .map(|b| format!("{} ({} ms)", b.backend, crate::figures::num(b.total_ms)))
                    .unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc("share of the summed phase medians (%); each label gives the median launch→READY")
        .label_style(("sans-serif", 13))
        .draw()?;
    for (k, b) in bars.iter().enumerate() {
        let y = (bars.len() - 1 - k) as f64;
        let sum: f64 = b.phases.iter().map(|p| p.1).sum();
        if sum <= 0.0 {
            continue;
        }
        let mut x = 0.0;
        for (i, (name, ms)) in b.phases.iter().enumerate() {
            let w = ms / sum * 100.0;
            let c = phase_color(i);
            chart.draw_series(std::iter::once(Rectangle::new([(x, y - 0.35), (x + w, y + 0.35)], c.filled())))?;
            if w > 9.0 {
                let label = format!("{name} {}", crate::figures::num(*ms));
                chart.draw_series(std::iter::once(Text::new(label, (x + 0.5, y + 0.1), ("sans-serif", 11))))?;
            }
            x += w;
        }
    }
    Ok(())
}

/// Startup distributions per backend (log scale).
pub fn distributions(stem: &Path, title: &str, unit: &str, data: &[Distribution]) -> Result<Vec<PathBuf>, ChartError> {
    render!(stem, (900, 500), draw_distributions, title, unit, data)
}

/// An x/y line per backend (density: memory and launch time vs N).
pub fn lines(
    stem: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    data: &[Series],
) -> Result<Vec<PathBuf>, ChartError> {
    render!(stem, (900, 500), draw_lines, title, x_desc, y_desc, data)
}

/// Ratios to native per metric and backend with CIs (horizontal grouped bars).
pub fn ratios(stem: &Path, title: &str, bars: &[RatioBar]) -> Result<Vec<PathBuf>, ChartError> {
    let metrics = bars.iter().map(|b| b.metric.as_str()).collect::<std::collections::BTreeSet<_>>().len() as u32;
    render!(stem, (1000, 160 + 34 * metrics.max(1)), draw_ratios, title, bars)
}

/// The startup phases of each backend as stacked shares.
pub fn phases(stem: &Path, title: &str, bars: &[PhaseBar]) -> Result<Vec<PathBuf>, ChartError> {
    render!(stem, (1000, 120 + 60 * bars.len().max(1) as u32), draw_phases, title, bars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_render_to_svg_and_png() {
        if ensure_font().is_err() {
            eprintln!("SKIPPED: {DEFAULT_FONT} missing (apt-get install fonts-dejavu-core)");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let dist = vec![Distribution { backend: "native".into(), values: vec![1.0, 1.2, 0.9] }];
        let out = distributions(&d.path().join("s"), "t", "ms", &dist).unwrap();
        let bars = vec![RatioBar {
            metric: "cpu".into(),
            backend: "crun".into(),
            ratio: 1.1,
            lo: 1.0,
            hi: 1.2,
            significant: false,
        }];
        let out2 = ratios(&d.path().join("r"), "t", &bars).unwrap();
        for p in out.iter().chain(&out2) {
            assert!(std::fs::metadata(p).unwrap().len() > 500, "{}", p.display());
        }
    }
}
