//! The `cvbench` command line: clap types live here and convert into the
//! library's config types (`RunRequest`, `BackendOptions`).

pub mod doctor;
pub mod run;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cvbench",
    version,
    about = "What does isolation cost? The same workload natively, in containers and in KVM micro-VMs."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one workload once on one backend and print its record.
    Run(run::RunArgs),
    /// Report what this host can run, and why not.
    Doctor(doctor::DoctorArgs),
}

pub fn main() -> anyhow::Result<i32> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(a) => run::execute(a),
        Command::Doctor(a) => doctor::execute(a),
    }
}
