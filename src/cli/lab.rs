//! `cvbench lab N [--quick]`: run a course lab's experiment live and check it;
//! the hidden `cvbench lab check-commands FILE…` parses every `cvbench`
//! command quoted in lab handouts with this very parser.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

use cvbench::lab::{self, commands, LabOptions};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LabArgs {
    #[command(subcommand)]
    pub tool: Option<LabTool>,
    /// Lab number, 1 to 7 (see labs/README.md).
    #[arg(value_parser = clap::value_parser!(u8).range(1..=7))]
    pub lab: Option<u8>,
    /// Fewer repetitions and smaller sizes.
    #[arg(long)]
    pub quick: bool,
}

#[derive(Subcommand, Debug)]
pub enum LabTool {
    /// Parse every `cvbench` command quoted in these Markdown files.
    #[command(hide = true)]
    CheckCommands { files: Vec<PathBuf> },
}

pub fn execute(a: LabArgs) -> anyhow::Result<i32> {
    if let Some(LabTool::CheckCommands { files }) = a.tool {
        return check_commands(&files);
    }
    let Some(n) = a.lab else {
        println!("the labs (handouts in labs/; run one with `cvbench lab N [--quick]`):");
        for (i, (dir, title)) in lab::LABS.iter().enumerate() {
            println!("  {}  {title}  (labs/{dir}/README.md)", i + 1);
        }
        return Ok(super::exit::USAGE);
    };
    install_stop_handler();
    let report = lab::run(n, LabOptions { quick: a.quick })?;
    print!("{}", lab::table::render(&report));
    cvbench_signals::run_cleanup();
    if lab::stopped() {
        println!("lab {n}: interrupted (everything the lab made has been removed)");
        return Ok(super::exit::INTERRUPTED);
    }
    let outcome = report.outcome();
    match outcome {
        lab::Outcome::Passed => println!("lab {n}: every check held"),
        lab::Outcome::Failed => println!("lab {n}: FAILED: a check did not hold (see [FAIL] above)"),
        lab::Outcome::Unavailable => {
            println!("lab {n}: this machine cannot show all of the lab (see CANNOT SHOW HERE above)")
        }
    }
    Ok(outcome.exit_code())
}

/// Ctrl-C and SIGTERM stop the lab between runs instead of killing it (graceful mode of the
/// process's one signal owner), so its guards remove the containers, cgroups, mounts and
/// daemons it made; a second signal ends the process at once.
fn install_stop_handler() {
    cvbench_signals::install();
    cvbench_signals::set_mode(cvbench_signals::Mode::Graceful);
    cvbench_signals::set_message(
        b"\ncvbench lab: stopping after the current run and cleaning up (again to abort at once)\n",
    );
}

/// Parse a `cvbench-runtime` command with that binary's own parser: the
/// words plus `--help`, which clap answers with exit 0 only when every
/// subcommand and option before it is known.
fn runtime_parses(words: &[String]) -> Result<(), String> {
    let bin = cvbench::paths::sibling_binary("cvbench-runtime", "CVBENCH_RUNTIME").map_err(|e| e.to_string())?;
    let out = std::process::Command::new(&bin)
        .args(&words[1..])
        .arg("--help")
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err.lines().next().unwrap_or("").to_string())
    }
}

fn check_commands(files: &[PathBuf]) -> anyhow::Result<i32> {
    anyhow::ensure!(!files.is_empty(), "give the Markdown files to check");
    let mut checked = 0;
    let mut bad = 0;
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| f.display().to_string())?;
        for q in commands::quoted_commands(&text) {
            match q {
                Ok(q) => {
                    checked += 1;
                    let parsed = if q.words.first().map(String::as_str) == Some("cvbench-runtime") {
                        runtime_parses(&q.words)
                    } else {
                        super::Cli::try_parse_from(&q.words)
                            .map(|_| ())
                            .map_err(|e| e.to_string().lines().next().unwrap_or("").to_string())
                    };
                    if let Err(first) = parsed {
                        bad += 1;
                        println!("{}:{}: `{}` does not parse: {first}", f.display(), q.line, q.text);
                    }
                }
                Err(e) => {
                    bad += 1;
                    println!("{}: {e}", f.display());
                }
            }
        }
    }
    println!("{checked} commands checked, {bad} bad");
    Ok(if bad == 0 { 0 } else { 1 })
}
