//! The `cvbench` command line: clap types live here and convert into the
//! library's config types (`RunRequest`, `BackendOptions`).

pub mod bench;
pub mod doctor;
pub mod image;
pub mod lab;
pub mod report;
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
    /// Run the comparison matrix on every backend and write the report.
    Bench(bench::BenchArgs),
    /// Write the report of a result set, or compare two result sets.
    Report(report::ReportArgs),
    /// Manage the container image store.
    Image(image::ImageArgs),
    /// Remove what a crashed run left behind (mounts, cgroups, veths, state).
    Gc(image::GcArgs),
    /// Run a course lab's experiment live and check what it shows (labs/).
    Lab(lab::LabArgs),
}

pub fn main() -> anyhow::Result<i32> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(a) => run::execute(a),
        Command::Doctor(a) => doctor::execute(a),
        Command::Bench(a) => bench::execute(a),
        Command::Report(a) => report::execute(a),
        Command::Lab(a) => lab::execute(a),
        Command::Image(a) => image::execute(a),
        Command::Gc(a) => image::gc(a),
    }
}
