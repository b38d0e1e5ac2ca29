//! `cvbench doctor`: print the host checks and which backends can run here;
//! exit 0 when the core suite can run, 3 when it cannot.

use clap::Args;

use super::args::Format;
use super::exit;
use cvbench::doctor::backends::{self, Host};
use cvbench::doctor::{self, Check, Status};

#[derive(Args, Debug)]
#[command(after_help = exit::HELP)]
pub struct DoctorArgs {
    /// Output: aligned text, or the checks as a JSON array.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Same as `--format json`.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
}

/// One backend's verdict as a check row (`backend <name>`), so the JSON
/// stays one array of checks.
fn backend_checks(host: &Host) -> Vec<Check> {
    backends::verdicts(host)
        .into_iter()
        .map(|(name, v)| Check {
            name: format!("backend {name}"),
            status: if v.is_ok() { Status::Ok } else { Status::Missing },
            detail: match v {
                Ok(()) => "can run here".into(),
                Err(b) => b.to_string(),
            },
            core: false,
        })
        .collect()
}

pub fn execute(a: DoctorArgs) -> anyhow::Result<i32> {
    let mut checks = doctor::run_checks();
    let ok = doctor::core_ok(&checks);
    checks.extend(backend_checks(&Host::probe()));
    match a.format.resolve(a.json) {
        Format::Json => println!("{}", serde_json::to_string_pretty(&checks)?),
        Format::Table => {
            for c in &checks {
                let s = match c.status {
                    Status::Ok => "ok     ",
                    Status::Warn => "WARN   ",
                    Status::Missing => "MISSING",
                };
                println!("{s} {:<20} {}", c.name, c.detail);
            }
            println!();
            println!(
                "{}",
                if ok {
                    "core suite (native, container, microvm-bare): can run"
                } else {
                    "core suite: CANNOT run (see MISSING core checks above)"
                }
            );
        }
    }
    Ok(if ok { exit::OK } else { exit::CANNOT_RUN_HERE })
}
