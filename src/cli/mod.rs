//! The `cvbench` command line: clap types live here and convert into the
//! library's config types (`RunRequest`, `BackendOptions`).

pub mod args;
pub mod bench;
pub mod doctor;
pub mod exit;
pub mod image;
pub mod lab;
pub mod report;
pub mod run;
pub mod summary;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cvbench",
    version,
    about = "What does isolation cost? The same workload natively, in containers and in KVM micro-VMs.",
    after_help = exit::HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one workload on one backend: once (its record) or `--runs N` (mean ± σ, ratio to `--baseline`).
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
    /// Print a shell completion script (e.g. `cvbench completions bash > /etc/bash_completion.d/cvbench`).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "cvbench", &mut std::io::stdout());
            Ok(exit::OK)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn top_level_help_shows_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("3    this host cannot run"), "{help}");
    }

    #[test]
    fn run_help_shows_the_exit_codes_and_every_backend() {
        let mut cmd = Cli::command();
        let run = cmd.find_subcommand_mut("run").unwrap();
        let help = run.render_long_help().to_string();
        assert!(help.contains("2    usage error"), "{help}");
        for b in cvbench::backend::ALL {
            assert!(help.contains(b), "{b} missing from run --help");
        }
    }

    #[test]
    fn completions_cover_the_backends() {
        let mut out = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut Cli::command(), "cvbench", &mut out);
        let script = String::from_utf8(out).unwrap();
        assert!(script.contains("microvm-bare"), "bash completion lacks the backend names");
    }
}
