//! `cvbench report`: turn a result directory into `reports/` (CSV, JSON,
//! REPORT.md, charts), or compare two result sets cell by cell.

use anyhow::Context;
use clap::Args;
use std::path::{Path, PathBuf};

use cvbench::report;
use cvbench::results::ResultSet;
use cvbench::stats::decision::Rules;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Result directory (manifest.json + records.jsonl) written by `cvbench bench`.
    #[arg(long = "in", value_name = "DIR", required_unless_present = "compare")]
    pub input: Option<PathBuf>,
    /// Where to write: with --in, the report's directory (default: reports); with --compare, a
    /// file, or a directory that gets COMPARE.md (default: stdout only, nothing written).
    #[arg(long, value_name = "DIR|FILE")]
    pub out: Option<PathBuf>,
    /// Compare two result directories (A B) instead: the change per cell, printed on stdout
    /// (or written to --out).
    #[arg(long, num_args = 2, value_names = ["A", "B"], conflicts_with = "input")]
    pub compare: Option<Vec<PathBuf>>,
    /// With --in: the result directory of the run before; the summary names a difference only
    /// when it also holds there.
    #[arg(long, value_name = "DIR", conflicts_with = "compare")]
    pub previous: Option<PathBuf>,
    /// Smallest effect, in percent, a ratio must show to be called different from native (with
    /// significance after Benjamini–Hochberg at q = 0.05); recorded in the report.
    #[arg(long, value_name = "PERCENT", default_value_t = 5.0, value_parser = parse_min_effect)]
    pub min_effect: f64,
}

/// A minimum effect in percent: finite, at least 0, below 100.
fn parse_min_effect(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number of percent (e.g. 5)"))?;
    if v.is_finite() && (0.0..100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s}% is out of range: give a percentage from 0 to below 100"))
    }
}

/// The report directory when `--in` is given without `--out`.
const DEFAULT_REPORT_DIR: &str = "reports";
/// The file name a comparison gets inside an `--out` directory.
const COMPARE_FILE: &str = "COMPARE.md";

/// Where `--compare --out <out>` writes: an existing directory gets COMPARE.md, and so does a
/// new path without an `.md` extension (created as a directory); anything else is the file.
fn compare_target(out: &Path) -> PathBuf {
    let is_md = out.extension().is_some_and(|e| e.eq_ignore_ascii_case("md"));
    if out.is_dir() || (!out.exists() && !is_md) {
        out.join(COMPARE_FILE)
    } else {
        out.to_path_buf()
    }
}

fn load(dir: &Path) -> anyhow::Result<ResultSet> {
    ResultSet::read_dir(dir).with_context(|| format!("loading result set {}", dir.display()))
}

/// Write the report for `input` into `out` with the default rules and print what was written.
pub fn write_report(input: &Path, out: &Path) -> anyhow::Result<()> {
    write_report_with(input, out, None, Rules::default())
}

fn write_report_with(input: &Path, out: &Path, previous: Option<&Path>, rules: Rules) -> anyhow::Result<()> {
    let set = load(input)?;
    let previous = previous.map(load).transpose()?;
    let opts = report::Options { rules, previous: previous.as_ref() };
    let w = report::generate_with(&set, out, &opts)
        .with_context(|| format!("writing the report into {}", out.display()))?;
    for e in &w.chart_errors {
        eprintln!("cvbench: chart not drawn: {e}");
    }
    println!("report: {} ({} files)", out.join("REPORT.md").display(), w.files.len());
    Ok(())
}

pub fn execute(a: ReportArgs) -> anyhow::Result<i32> {
    let rules = Rules { min_effect: a.min_effect / 100.0, ..Rules::default() };
    if let Some(pair) = &a.compare {
        let (sa, sb) = (load(&pair[0])?, load(&pair[1])?);
        let (na, nb) = (pair[0].display().to_string(), pair[1].display().to_string());
        let md = report::compare::render_with(&sa, &sb, &na, &nb, &rules);
        let Some(out) = &a.out else {
            // Nothing is written unless asked: the committed reports/COMPARE.md stays as it is.
            print!("{md}");
            return Ok(0);
        };
        let p = compare_target(out);
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&p, &md).with_context(|| format!("writing {}", p.display()))?;
        println!("compare: {}", p.display());
        return Ok(0);
    }
    let input = a.input.as_deref().context("--in is required")?;
    let out = a.out.as_deref().unwrap_or(Path::new(DEFAULT_REPORT_DIR));
    write_report_with(input, out, a.previous.as_deref(), rules)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_effect_takes_a_percentage_and_refuses_the_rest() {
        assert_eq!(parse_min_effect("5"), Ok(5.0));
        assert_eq!(parse_min_effect("0"), Ok(0.0));
        assert!(parse_min_effect("-1").unwrap_err().contains("out of range"));
        assert!(parse_min_effect("100").unwrap_err().contains("out of range"));
        assert!(parse_min_effect("NaN").unwrap_err().contains("out of range"));
        assert!(parse_min_effect("five").unwrap_err().contains("not a number"));
    }
}
