//! `cvbench doctor`: print the host checks; exit 0 when the core suite can run.

use clap::Args;
use cvbench::doctor::{self, Status};

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Print the checks as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(a: DoctorArgs) -> anyhow::Result<i32> {
    let checks = doctor::run_checks();
    let ok = doctor::core_ok(&checks);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            let s = match c.status {
                Status::Ok => "ok     ",
                Status::Warn => "WARN   ",
                Status::Missing => "MISSING",
            };
            println!("{s} {:<14} {}", c.name, c.detail);
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
    Ok(if ok { 0 } else { 1 })
}
