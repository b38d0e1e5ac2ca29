//! Every chart of the report, drawn with plotters as SVG and PNG from data
//! that is already aggregated (this module computes nothing but layout).
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

/// One backend's line in an x/y chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub backend: String,
    pub points: Vec<(f64, f64)>,
}

/// One bar: a backend's cost factor (>1 is worse than native) for a metric.
#[derive(Clone, Debug, PartialEq)]
pub struct RatioBar {
    pub metric: String,
    pub backend: String,
    pub cost: f64,
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

fn color(i: usize) -> RGBColor {
    const P: &[RGBColor] = &[
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
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
        let c = color(i);
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
    let xs = data.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys: Vec<f64> = data.iter().flat_map(|s| s.points.iter().map(|p| p.1)).collect();
    let xmax = xs.fold(1.0, f64::max);
    let ymax = ys.iter().copied().fold(0.0, f64::max).max(1e-9);
    let ymin = ys.iter().copied().fold(f64::INFINITY, f64::min);
    // Backends that differ by orders of magnitude share a log axis; a series
    // with a zero or negative point (a noisy memory delta) needs a linear one.
    let log_y = ymin > 0.0 && ymax / ymin > 20.0;
    // The legend goes in the upper corner the lines leave free: left when
    // they rise with N, right when they fall.
    let rising = data
        .iter()
        .filter_map(|s| {
            let first = s.points.iter().min_by(|a, b| a.0.total_cmp(&b.0))?;
            let last = s.points.iter().max_by(|a, b| a.0.total_cmp(&b.0))?;
            Some(last.1 > first.1)
        })
        .filter(|r| *r)
        .count()
        * 2
        > data.len();
    let legend_at = if rising { SeriesLabelPosition::UpperLeft } else { SeriesLabelPosition::UpperRight };
    macro_rules! plot {
        ($yrange:expr, $ydesc:expr) => {{
            let mut chart = ChartBuilder::on(root)
                .caption(title, ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(0f64..xmax * 1.05, $yrange)?;
            chart.configure_mesh().x_desc(x_desc).y_desc($ydesc).label_style(("sans-serif", 14)).draw()?;
            for (i, s) in data.iter().enumerate() {
                let c = color(i);
                let mut pts = s.points.clone();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                chart
                    .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
                    .label(s.backend.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
                chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, c.filled())))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .position(legend_at)
                .draw()?;
        }};
    }
    if log_y {
        let (lo, hi) = log_range(ymin, ymax);
        plot!((lo..hi).log_scale(), format!("{y_desc} (log scale)"));
    } else {
        let lo = ymin.min(0.0) * 1.15;
        plot!(lo..ymax * 1.15, y_desc.to_string());
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
    let lo = bars.iter().map(|b| b.cost).fold(1.0, f64::min);
    let hi = bars.iter().map(|b| b.cost).fold(1.0, f64::max);
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
        .x_desc("cost relative to native (×, log scale; >1 is worse)")
        .label_style(("sans-serif", 13))
        .draw()?;
    chart.draw_series(std::iter::once(PathElement::new(vec![(1.0, -0.5), (1.0, m - 0.5)], BLACK.stroke_width(1))))?;
    let nb = backends.len().max(1) as f64;
    let h = 0.8 / nb;
    for b in bars {
        let mi = (metrics.len() - 1 - metrics.iter().position(|x| *x == b.metric).unwrap_or(0)) as f64;
        let bi = backends.iter().position(|x| *x == b.backend).unwrap_or(0);
        let y0 = mi - 0.4 + h * bi as f64;
        let c = color(bi);
        chart.draw_series(std::iter::once(Rectangle::new([(lo, y0), (b.cost.max(lo), y0 + h * 0.9)], c.filled())))?;
    }
    // Legend along the bottom.
    let step = lower.dim_in_pixel().0 as i32 / (backends.len() as i32 + 1).max(1);
    for (i, name) in backends.iter().enumerate() {
        let x = 20 + step * i as i32;
        lower.draw(&Rectangle::new([(x, 10), (x + 14, 24)], color(i).filled()))?;
        lower.draw(&Text::new(name.clone(), (x + 20, 10), ("sans-serif", 14)))?;
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

/// Cost factors per metric and backend (horizontal grouped bars).
pub fn ratios(stem: &Path, title: &str, bars: &[RatioBar]) -> Result<Vec<PathBuf>, ChartError> {
    let metrics = bars.iter().map(|b| b.metric.as_str()).collect::<std::collections::BTreeSet<_>>().len() as u32;
    render!(stem, (1000, 160 + 34 * metrics.max(1)), draw_ratios, title, bars)
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
        let bars = vec![RatioBar { metric: "cpu".into(), backend: "crun".into(), cost: 1.1 }];
        let out2 = ratios(&d.path().join("r"), "t", &bars).unwrap();
        for p in out.iter().chain(&out2) {
            assert!(std::fs::metadata(p).unwrap().len() > 500, "{}", p.display());
        }
    }
}
