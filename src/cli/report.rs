//! `cvbench report`: turn a result directory into `reports/` (CSV, JSON,
//! REPORT.md, charts), or compare two result sets cell by cell.

use anyhow::Context;
use clap::Args;
use std::path::{Path, PathBuf};

use cvbench::report;
use cvbench::results::ResultSet;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Result directory (manifest.json + records.jsonl) written by `cvbench bench`.
    #[arg(long = "in", value_name = "DIR", required_unless_present = "compare")]
    pub input: Option<PathBuf>,
    /// Where to write the report files.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    /// Compare two result directories (A B) instead: prints the change per
    /// cell and writes <out>/COMPARE.md.
    #[arg(long, num_args = 2, value_names = ["A", "B"], conflicts_with = "input")]
    pub compare: Option<Vec<PathBuf>>,
}

fn load(dir: &Path) -> anyhow::Result<ResultSet> {
    ResultSet::read_dir(dir).with_context(|| format!("loading result set {}", dir.display()))
}

/// Write the report for `input` into `out` and print what was written.
pub fn write_report(input: &Path, out: &Path) -> anyhow::Result<()> {
    let set = load(input)?;
    let w = report::generate(&set, out).with_context(|| format!("writing the report into {}", out.display()))?;
    for e in &w.chart_errors {
        eprintln!("cvbench: chart not drawn: {e}");
    }
    println!("report: {} ({} files)", out.join("REPORT.md").display(), w.files.len());
    Ok(())
}

pub fn execute(a: ReportArgs) -> anyhow::Result<i32> {
    if let Some(pair) = &a.compare {
        let (sa, sb) = (load(&pair[0])?, load(&pair[1])?);
        let md = report::compare::render(&sa, &sb, &pair[0].display().to_string(), &pair[1].display().to_string());
        std::fs::create_dir_all(&a.out).with_context(|| a.out.display().to_string())?;
        let p = a.out.join("COMPARE.md");
        std::fs::write(&p, &md).with_context(|| p.display().to_string())?;
        print!("{md}");
        return Ok(0);
    }
    let input = a.input.as_deref().context("--in is required")?;
    write_report(input, &a.out)?;
    Ok(0)
}
