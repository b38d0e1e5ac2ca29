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
    /// The column's label (the backend with its platform marks).
    pub label: String,
    pub values: Vec<f64>,
    /// The table's 95% CI of the median, drawn as an error bar.
    pub ci: Option<(f64, f64)>,
}

/// One point of a line: x, the median y and its CI.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub lo: f64,
    pub hi: f64,
}

/// One line in an x/y chart: its legend label, colour and points.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub label: String,
    pub rgb: (u8, u8, u8),
    pub points: Vec<Point>,
}

/// One bar: a backend's cost factor for a metric (ratio to native turned so that above 1
/// is always worse: native ÷ backend for throughput), with its CI turned the same way.
#[derive(Clone, Debug, PartialEq)]
pub struct RatioBar {
    pub metric: String,
    /// The legend label (backend name with its platform marks).
    pub backend: String,
    pub rgb: (u8, u8, u8),
    pub cost: f64,
    pub lo: f64,
    pub hi: f64,
    /// The cell's decision is a difference from native.
    pub significant: bool,
}

/// Where a startup phase lies against READY when the phases are laid end to end from launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Before,
    /// Starts before READY and ends after it.
    Across,
    After,
}

/// One phase of a backend's startup, in ms from launch (phases laid end to end).
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseSegment {
    pub name: String,
    pub start: f64,
    pub end: f64,
    pub when: When,
}

/// One backend's startup: its phases, the part of launch→READY no phase covers, and its
/// median launch→READY with that median's CI (the table's figures).
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseBar {
    pub label: String,
    pub segments: Vec<PhaseSegment>,
    /// `(start, end)` of launch→READY that no recorded phase covers, if any.
    pub uncovered: Option<(f64, f64)>,
    pub ready: Point,
}

impl PhaseBar {
    /// How far right the bar reaches (ms).
    pub fn extent(&self) -> f64 {
        self.segments.iter().map(|s| s.end).fold(self.ready.hi.max(self.ready.y), f64::max)
    }
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

fn rgb((r, g, b): (u8, u8, u8)) -> RGBColor {
    RGBColor(r, g, b)
}

/// A tick's text: about three significant digits and no binary noise (`0.3`, not
/// `0.30000000000000004`; `1`, not `1.0`).
pub fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || !v.is_finite() {
        return "0".into();
    }
    let decimals = (2 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let t = format!("{v:.decimals$}");
    let t = if t.contains('.') { t.trim_end_matches('0').trim_end_matches('.').to_string() } else { t };
    if t == "-0" {
        "0".into()
    } else {
        t
    }
}

/// A colour per phase name, the same in every row: distinct hues, alternating lightness so
/// neighbours differ even where hues are close.
pub fn phase_color(i: usize) -> RGBColor {
    const P: &[(u8, u8, u8)] = &[
        (78, 121, 167),
        (242, 142, 43),
        (89, 161, 79),
        (225, 87, 89),
        (118, 183, 178),
        (237, 201, 72),
        (176, 122, 161),
        (255, 157, 167),
        (156, 117, 95),
        (31, 60, 120),
        (160, 203, 232),
        (255, 190, 125),
        (140, 209, 125),
        (182, 153, 45),
        (73, 152, 148),
        (148, 0, 211),
        (255, 0, 255),
        (212, 166, 200),
        (110, 40, 60),
        (190, 186, 218),
        (60, 110, 40),
        (200, 82, 0),
        (95, 158, 209),
        (200, 200, 120),
    ];
    let (r, g, b) = P[i % P.len()];
    RGBColor(r, g, b)
}

/// Distinct colours for several lines that belong to one backend: the backend's own colour
/// first, then the phase palette's colours that are far from it and from each other.
pub fn line_colors(base: (u8, u8, u8), n: usize) -> Vec<(u8, u8, u8)> {
    let dist = |a: (u8, u8, u8), b: (u8, u8, u8)| {
        let d = |x: u8, y: u8| (f64::from(x) - f64::from(y)).powi(2);
        (d(a.0, b.0) + d(a.1, b.1) + d(a.2, b.2)).sqrt()
    };
    let mut v = vec![base];
    for i in 0..24 {
        if v.len() >= n {
            break;
        }
        let RGBColor(r, g, b) = phase_color(i);
        if v.iter().all(|c| dist(*c, (r, g, b)) > 120.0) {
            v.push((r, g, b));
        }
    }
    v.truncate(n);
    v
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

/// Tick values for a log axis over `lo..hi`: 1-2-5 per decade, or only the powers of ten
/// when that would be more than a dozen; each value once, in order.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo) {
        return Vec::new();
    }
    let (d0, d1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let pick = |mult: &[f64]| -> Vec<f64> {
        let mut v: Vec<f64> = (d0..=d1)
            .flat_map(|d| mult.iter().map(move |m| m * 10f64.powi(d)))
            .filter(|t| *t >= lo * (1.0 - 1e-9) && *t <= hi * (1.0 + 1e-9))
            .collect();
        v.dedup_by(|a, b| (*a / *b - 1.0).abs() < 1e-9);
        v
    };
    let fine = pick(&[1.0, 2.0, 5.0]);
    if fine.len() <= 12 {
        fine
    } else {
        pick(&[1.0])
    }
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
    let names: Vec<String> = data.iter().map(|d| d.label.clone()).collect();
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            -0.5f64..(data.len() as f64 - 0.5),
            (lo..hi).log_scale().with_key_points(log_ticks(lo, hi)),
        )?;
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
        .y_label_formatter(&|y| tick_label(*y))
        .light_line_style(TRANSPARENT)
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
            if let Some((lo, hi)) = d.ci {
                let x = i as f64 + 0.42;
                chart.draw_series(std::iter::once(ErrorBar::new_vertical(x, lo, m, hi, BLACK.filled(), 8)))?;
            }
        }
    }
    Ok(())
}

/// A legend drawn in its own area: one entry per line, top to bottom in the given order.
fn side_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, entries: &[(String, RGBColor)]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    for (i, (label, c)) in entries.iter().enumerate() {
        let y = 60 + 24 * i as i32;
        area.draw(&PathElement::new(vec![(4, y), (26, y)], c.stroke_width(3)))?;
        area.draw(&Circle::new((15, y), 4, c.filled()))?;
        area.draw(&Text::new(label.clone(), (32, y - 8), ("sans-serif", 14)))?;
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
    // The legend lists the lines top to bottom as they end on the right.
    let mut data: Vec<Series> = data.to_vec();
    for s in &mut data {
        s.points.sort_by(|a, b| a.x.total_cmp(&b.x));
    }
    data.sort_by(|a, b| {
        let last = |s: &Series| s.points.last().map_or(f64::NEG_INFINITY, |p| p.y);
        last(b).total_cmp(&last(a))
    });
    let data = data.as_slice();
    let (w, _) = root.dim_in_pixel();
    let titled = root.titled(title, ("sans-serif", 20))?;
    let (plot, legend) = titled.split_horizontally(w.saturating_sub(280));
    let entries: Vec<(String, RGBColor)> = data.iter().map(|s| (s.label.clone(), rgb(s.rgb))).collect();
    side_legend(&legend, &entries)?;
    let root = &plot;
    let pts = || data.iter().flat_map(|s| s.points.iter());
    let xmin = pts().map(|p| p.x).fold(f64::INFINITY, f64::min);
    let xmax = pts().map(|p| p.x).fold(1.0, f64::max);
    let ymax = pts().map(|p| p.hi.max(p.y)).fold(0.0, f64::max).max(1e-9);
    let ymin = pts().map(|p| p.lo.min(p.y)).fold(f64::INFINITY, f64::min);
    let mut xs: Vec<f64> = pts().map(|p| p.x).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    // N goes 1, 10, 50: a log axis spaces them evenly, ticked at the Ns measured. Backends
    // that differ by orders of magnitude share a log y axis; a zero or negative point needs
    // a linear one.
    let log_x = xmin > 0.0 && xmax / xmin >= 10.0;
    let log_y = ymin > 0.0 && ymax / ymin > 20.0;
    let (xl, xh) = if log_x { (xmin / 1.5, xmax * 1.5) } else { (0.0, xmax * 1.05) };
    macro_rules! plot {
        ($xrange:expr, $yrange:expr, $xdesc:expr, $ydesc:expr) => {{
            let mut chart = ChartBuilder::on(root)
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d($xrange, $yrange)?;
            chart
                .configure_mesh()
                .x_desc($xdesc)
                .y_desc($ydesc)
                .x_label_formatter(&|x| tick_label(*x))
                .y_label_formatter(&|y| tick_label(*y))
                .light_line_style(TRANSPARENT)
                .label_style(("sans-serif", 14))
                .draw()?;
            for s in data {
                let c = rgb(s.rgb);
                chart.draw_series(LineSeries::new(s.points.iter().map(|p| (p.x, p.y)), c.stroke_width(2)))?;
                chart.draw_series(
                    s.points.iter().map(|p| ErrorBar::new_vertical(p.x, p.lo, p.y, p.hi, c.filled(), 8)),
                )?;
                chart.draw_series(s.points.iter().map(|p| Circle::new((p.x, p.y), 4, c.filled())))?;
            }
        }};
    }
    let xd = if log_x { format!("{x_desc} (log scale)") } else { x_desc.to_string() };
    let (ylo, yhi) = log_range(ymin, ymax);
    match (log_x, log_y) {
        (true, true) => plot!(
            (xl..xh).log_scale().with_key_points(xs.clone()),
            (ylo..yhi).log_scale().with_key_points(log_ticks(ylo, yhi)),
            xd.clone(),
            format!("{y_desc} (log scale)")
        ),
        (true, false) => plot!(
            (xl..xh).log_scale().with_key_points(xs.clone()),
            ymin.min(0.0) * 1.15..ymax * 1.15,
            xd.clone(),
            y_desc.to_string()
        ),
        (false, true) => plot!(
            xl..xh,
            (ylo..yhi).log_scale().with_key_points(log_ticks(ylo, yhi)),
            xd.clone(),
            format!("{y_desc} (log scale)")
        ),
        (false, false) => plot!(xl..xh, ymin.min(0.0) * 1.15..ymax * 1.15, xd.clone(), y_desc.to_string()),
    }
    Ok(())
}

/// A metric row's bars stay in the near panel when every bar and CI lies within this factor
/// of native either way; the rest go to a panel whose axis spans decades.
pub const NEAR_FACTOR: f64 = 3.0;

/// Splits the metrics (in first-seen order) into those within [`NEAR_FACTOR`] of native and
/// the rest.
pub fn split_rows(bars: &[RatioBar]) -> (Vec<String>, Vec<String>) {
    let mut metrics: Vec<String> = Vec::new();
    for b in bars {
        if !metrics.contains(&b.metric) {
            metrics.push(b.metric.clone());
        }
    }
    metrics.into_iter().partition(|m| {
        bars.iter()
            .filter(|b| b.metric == *m)
            .all(|b| b.lo.min(b.cost) >= 1.0 / NEAR_FACTOR && b.hi.max(b.cost) <= NEAR_FACTOR)
    })
}

fn ratio_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    metrics: &[String],
    bars: &[RatioBar],
    backends: &[String],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let mine: Vec<&RatioBar> = bars.iter().filter(|b| metrics.contains(&b.metric)).collect();
    let lo = mine.iter().map(|b| b.lo.min(b.cost)).filter(|v| *v > 0.0).fold(1.0, f64::min);
    let hi = mine.iter().map(|b| b.hi.max(b.cost)).fold(1.0, f64::max);
    let (lo, hi) = (lo / 1.15, hi * 1.15);
    let m = metrics.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(44)
        .y_label_area_size(330)
        .build_cartesian_2d((lo..hi).log_scale().with_key_points(log_ticks(lo, hi)), -0.5f64..(m - 0.5))?;
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
        .x_label_formatter(&|x| format!("×{}", tick_label(*x)))
        .light_line_style(TRANSPARENT)
        .x_desc("cost factor (×, log scale): > 1 = worse than native, < 1 = better; bars: 95% CI")
        .label_style(("sans-serif", 13))
        .draw()?;
    chart.draw_series(std::iter::once(PathElement::new(vec![(1.0, -0.5), (1.0, m - 0.5)], BLACK.stroke_width(1))))?;
    let nb = backends.len().max(1) as f64;
    let h = 0.8 / nb;
    for b in mine {
        let mi = (metrics.len() - 1 - metrics.iter().position(|x| *x == b.metric).unwrap_or(0)) as f64;
        let bi = backends.iter().position(|x| *x == b.backend).unwrap_or(0);
        let y0 = mi - 0.4 + h * bi as f64;
        let c = rgb(b.rgb);
        let fill = if b.significant { c.filled() } else { c.mix(0.3).filled() };
        // Bars grow from 1 (native) towards the cost factor.
        let (x0, x1) = if b.cost >= 1.0 { (1.0, b.cost) } else { (b.cost.max(lo), 1.0) };
        chart.draw_series(std::iter::once(Rectangle::new([(x0, y0), (x1, y0 + h * 0.9)], fill)))?;
        let yc = y0 + h * 0.45;
        chart.draw_series(std::iter::once(ErrorBar::new_horizontal(
            yc,
            b.lo.max(lo),
            b.cost,
            b.hi.min(hi),
            BLACK.filled(),
            6,
        )))?;
    }
    Ok(())
}

fn draw_ratios<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, bars: &[RatioBar]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let mut backends: Vec<(String, (u8, u8, u8))> = Vec::new();
    for b in bars {
        if !backends.iter().any(|(n, _)| *n == b.backend) {
            backends.push((b.backend.clone(), b.rgb));
        }
    }
    let names: Vec<String> = backends.iter().map(|(n, _)| n.clone()).collect();
    let (near, far) = split_rows(bars);
    let (_, height) = root.dim_in_pixel();
    let title_area = root.titled(title, ("sans-serif", 22))?;
    let rows = (near.len() + far.len()).max(1) as u32;
    let legend_rows = backends.len().div_ceil(4) as u32;
    let body = height.saturating_sub(40 + 26 * legend_rows + 2 * 80);
    let (panels, legend) = title_area.split_vertically(height.saturating_sub(30 + 26 * legend_rows));
    let far_h = 80 + body * far.len() as u32 / rows;
    let (top, bottom) = panels.split_vertically(if far.is_empty() { 0 } else { far_h });
    if !far.is_empty() {
        ratio_panel(
            &top,
            &format!("beyond ×{NEAR_FACTOR} of native for some backend (axis spans decades)"),
            &far,
            bars,
            &names,
        )?;
    }
    if !near.is_empty() {
        ratio_panel(&bottom, &format!("within ×{NEAR_FACTOR} of native for every backend"), &near, bars, &names)?;
    }
    // Legend along the bottom, four to a line.
    let step = legend.dim_in_pixel().0 as i32 / 4;
    for (i, (name, c)) in backends.iter().enumerate() {
        let x = 20 + step * (i % 4) as i32;
        let y = 6 + 26 * (i / 4) as i32;
        legend.draw(&Rectangle::new([(x, y), (x + 14, y + 14)], rgb(*c).filled()))?;
        legend.draw(&Text::new(name.clone(), (x + 20, y), ("sans-serif", 14)))?;
    }
    Ok(())
}

/// Groups the bars into panels whose extents lie within a factor of 8 of each other (an
/// axis in ms for 7 ms and for 350 ms would leave the short bars unreadable); each panel
/// keeps the bars' given order.
pub fn phase_panels(bars: &[PhaseBar]) -> Vec<Vec<usize>> {
    let mut by: Vec<usize> = (0..bars.len()).collect();
    by.sort_by(|a, b| bars[*a].extent().total_cmp(&bars[*b].extent()));
    let mut panels: Vec<Vec<usize>> = Vec::new();
    let mut first = 0.0;
    for i in by {
        let e = bars[i].extent();
        match panels.last_mut() {
            Some(p) if e <= first * 8.0 => p.push(i),
            _ => {
                first = e;
                panels.push(vec![i]);
            }
        }
    }
    for p in &mut panels {
        p.sort_unstable();
    }
    panels
}

fn phase_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, bars: &[&PhaseBar], colors: &[String]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let (h, _) = (area.dim_in_pixel().1, ());
    let legend_h = 56u32;
    let (plot, legend) = area.split_vertically(h.saturating_sub(legend_h));
    let xmax = bars.iter().map(|b| b.extent()).fold(0.0, f64::max) * 1.08;
    let n = bars.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&plot)
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(230)
        .build_cartesian_2d(0f64..xmax.max(1e-3), -0.5f64..(n - 0.5))?;
    chart
        .configure_mesh()
        .y_labels(bars.len().max(1))
        .y_label_formatter(&|y| {
            let i = y.round();
            if (y - i).abs() < 1e-6 && i >= 0.0 {
                bars.len()
                    .checked_sub(1 + i as usize)
                    .and_then(|k| bars.get(k))
                    .map(|b| format!("{} ({} ms)", b.label, crate::figures::num(b.ready.y)))
                    .unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_label_formatter(&|x| tick_label(*x))
        .light_line_style(TRANSPARENT)
        .x_desc("ms from launch (phases laid end to end); black line: median launch→READY with its 95% CI")
        .label_style(("sans-serif", 13))
        .draw()?;
    let mut used: Vec<usize> = Vec::new();
    for (k, b) in bars.iter().enumerate() {
        let y = (bars.len() - 1 - k) as f64;
        for seg in &b.segments {
            let ci = colors.iter().position(|c| *c == seg.name).unwrap_or(0);
            if !used.contains(&ci) {
                used.push(ci);
            }
            let c = phase_color(ci);
            let style = if seg.when == When::After { c.mix(0.35).filled() } else { c.filled() };
            chart.draw_series(std::iter::once(Rectangle::new([(seg.start, y - 0.3), (seg.end, y + 0.3)], style)))?;
            if seg.when == When::After {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(seg.start, y - 0.3), (seg.end, y + 0.3)],
                    c.stroke_width(1),
                )))?;
            }
            if (seg.end - seg.start) / xmax > 0.09 {
                let label = format!("{} {}", seg.name, crate::figures::num(seg.end - seg.start));
                chart.draw_series(std::iter::once(Text::new(label, (seg.start, y + 0.42), ("sans-serif", 11))))?;
            }
        }
        if let Some((s, e)) = b.uncovered {
            let g = RGBColor(200, 200, 200);
            chart.draw_series(std::iter::once(Rectangle::new([(s, y - 0.3), (e, y + 0.3)], g.filled())))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("no phase {}", crate::figures::num(e - s)),
                (s, y - 0.05),
                ("sans-serif", 11),
            )))?;
        }
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(b.ready.y, y - 0.42), (b.ready.y, y + 0.42)],
            BLACK.stroke_width(2),
        )))?;
        chart.draw_series(std::iter::once(ErrorBar::new_horizontal(
            y - 0.38,
            b.ready.lo,
            b.ready.y,
            b.ready.hi,
            BLACK.filled(),
            6,
        )))?;
    }
    // The key: each phase of this panel with its colour, then the two special shadings.
    let mut x = 8i32;
    let mut yl = 4i32;
    let width = legend.dim_in_pixel().0 as i32;
    let mut item = |label: String, fill: ShapeStyle, legend: &DrawingArea<DB, Shift>| -> DrawResult {
        let w = 24 + 7 * label.chars().count() as i32;
        if x + w > width {
            x = 8;
            yl += 18;
        }
        legend.draw(&Rectangle::new([(x, yl), (x + 12, yl + 12)], fill))?;
        legend.draw(&Rectangle::new([(x, yl), (x + 12, yl + 12)], RGBColor(120, 120, 120).stroke_width(1)))?;
        legend.draw(&Text::new(label, (x + 16, yl), ("sans-serif", 12)))?;
        x += w;
        Ok(())
    };
    for ci in used {
        item(colors[ci].clone(), phase_color(ci).filled(), &legend)?;
    }
    item("pale: after READY".into(), RGBColor(150, 150, 150).mix(0.35).filled(), &legend)?;
    item("grey: launch→READY no phase covers".into(), RGBColor(200, 200, 200).filled(), &legend)?;
    Ok(())
}

fn draw_phases<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, bars: &[PhaseBar]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    // One colour per phase name across every row and panel, in first-seen order.
    let mut colors: Vec<String> = Vec::new();
    for b in bars {
        for s in &b.segments {
            if !colors.contains(&s.name) {
                colors.push(s.name.clone());
            }
        }
    }
    let area = root.titled(title, ("sans-serif", 20))?;
    let panels = phase_panels(bars);
    let heights: Vec<u32> = panels.iter().map(|p| phase_panel_height(p.len())).collect();
    let mut rest = area;
    for (p, h) in panels.iter().zip(&heights) {
        let (this, next) = rest.split_vertically(*h);
        let rows: Vec<&PhaseBar> = p.iter().map(|i| &bars[*i]).collect();
        phase_panel(&this, &rows, &colors)?;
        rest = next;
    }
    Ok(())
}

fn phase_panel_height(rows: usize) -> u32 {
    110 + 62 * rows as u32
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

/// Cost factors per metric and backend with CIs (horizontal grouped bars), in two panels:
/// rows within [`NEAR_FACTOR`] of native, and the rest.
pub fn ratios(stem: &Path, title: &str, bars: &[RatioBar]) -> Result<Vec<PathBuf>, ChartError> {
    let metrics = bars.iter().map(|b| b.metric.as_str()).collect::<std::collections::BTreeSet<_>>().len() as u32;
    let backends = bars.iter().map(|b| b.backend.as_str()).collect::<std::collections::BTreeSet<_>>().len() as u32;
    render!(stem, (1000, 240 + 26 * backends.div_ceil(4) + 34 * metrics.max(1)), draw_ratios, title, bars)
}

/// The startup phases of each backend in ms from launch, in panels of similar extent.
pub fn phases(stem: &Path, title: &str, bars: &[PhaseBar]) -> Result<Vec<PathBuf>, ChartError> {
    let h: u32 = phase_panels(bars).iter().map(|p| phase_panel_height(p.len())).sum();
    render!(stem, (1100, 40 + h.max(120)), draw_phases, title, bars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(metric: &str, backend: &str, cost: f64, lo: f64, hi: f64) -> RatioBar {
        RatioBar { metric: metric.into(), backend: backend.into(), rgb: (1, 2, 3), cost, lo, hi, significant: false }
    }

    fn pbar(label: &str, end: f64, ready: f64) -> PhaseBar {
        PhaseBar {
            label: label.into(),
            segments: vec![PhaseSegment { name: "a".into(), start: 0.0, end, when: When::Before }],
            uncovered: (ready > end).then_some((end, ready)),
            ready: Point { x: 0.0, y: ready, lo: ready * 0.9, hi: ready * 1.1 },
        }
    }

    #[test]
    fn tick_labels_have_no_binary_noise_or_trailing_zeros() {
        assert_eq!(tick_label(0.1 + 0.2), "0.3");
        assert_eq!(tick_label(1.0), "1");
        assert_eq!(tick_label(10.0), "10");
        assert_eq!(tick_label(2500.0), "2500");
        assert_eq!(tick_label(0.05), "0.05");
        assert_eq!(tick_label(12.5), "12.5");
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(-0.0001), "-0.0001");
    }

    #[test]
    fn log_ticks_are_one_two_five_each_once() {
        assert_eq!(log_ticks(0.04, 3.0), vec![0.05, 0.1, 0.2, 0.5, 1.0, 2.0]);
        let labels: Vec<String> = log_ticks(0.04, 3.0).into_iter().map(tick_label).collect();
        let mut dedup = labels.clone();
        dedup.dedup();
        assert_eq!(labels, dedup);
        // Over many decades only the powers of ten.
        assert_eq!(log_ticks(0.5, 5000.0), vec![1.0, 10.0, 100.0, 1000.0]);
        assert!(log_ticks(0.0, 1.0).is_empty());
    }

    #[test]
    fn line_colors_start_with_the_backend_and_stay_apart() {
        let c = line_colors((31, 119, 180), 4);
        assert_eq!((c.len(), c[0]), (4, (31, 119, 180)));
        let mut d = c.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 4);
    }

    #[test]
    fn rows_far_from_native_go_to_their_own_panel() {
        let bars = vec![
            bar("cpu", "container", 1.02, 0.95, 1.1),
            bar("syscall", "container", 1.1, 1.0, 1.2),
            bar("syscall", "microvm-bare", 151.0, 120.0, 200.0),
            bar("tcp", "docker", 0.9, 0.2, 1.3),
        ];
        let (near, far) = split_rows(&bars);
        assert_eq!(near, vec!["cpu"]);
        assert_eq!(far, vec!["syscall", "tcp"]);
    }

    #[test]
    fn phase_panels_keep_a_decade_apart_and_the_given_order() {
        let bars = vec![pbar("container", 6.0, 7.0), pbar("docker", 300.0, 335.0), pbar("bare", 3.0, 6.0)];
        assert_eq!(phase_panels(&bars), vec![vec![0, 2], vec![1]]);
    }

    #[test]
    fn charts_render_to_svg_and_png() {
        if ensure_font().is_err() {
            eprintln!("SKIPPED: {DEFAULT_FONT} missing (apt-get install fonts-dejavu-core)");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let dist = vec![Distribution {
            backend: "native".into(),
            label: "native".into(),
            values: vec![1.0, 1.2, 0.9],
            ci: Some((0.9, 1.2)),
        }];
        let mut out = distributions(&d.path().join("s"), "t", "ms", &dist).unwrap();
        let bars = vec![bar("cpu", "crun", 1.1, 1.0, 1.2), bar("syscall", "microvm-bare †", 150.0, 100.0, 200.0)];
        out.extend(ratios(&d.path().join("r"), "t", &bars).unwrap());
        let p = |x: f64, y: f64| Point { x, y, lo: y * 0.9, hi: y * 1.1 };
        let lines_data = vec![
            Series { label: "a".into(), rgb: (10, 20, 30), points: vec![p(1.0, 0.3), p(10.0, 0.2), p(50.0, 0.1)] },
            Series { label: "b".into(), rgb: (200, 20, 30), points: vec![p(1.0, 2.5), p(10.0, 2.4), p(50.0, 2.4)] },
        ];
        out.extend(lines(&d.path().join("l"), "t", "N", "MiB", &lines_data).unwrap());
        out.extend(phases(&d.path().join("p"), "t", &[pbar("x", 3.0, 6.0), pbar("y", 300.0, 280.0)]).unwrap());
        assert_eq!(out.len(), 8);
        for p in &out {
            assert!(std::fs::metadata(p).unwrap().len() > 500, "{}", p.display());
        }
    }
}
