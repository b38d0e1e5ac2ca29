//! cvbench-xtask: what `scripts/test` runs after it has installed the toolchain and packages —
//! the checks, every test binary on this host, the test-host pass (booted and resumed through a
//! typed state file) and one tally over both hosts.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use cvbench_xtask::binaries::{self, TestBinary};
use cvbench_xtask::pass::{self, Part, PassState};
use cvbench_xtask::tally::{HostResults, PartResult};
use cvbench_xtask::{boots, libtest, run};

#[derive(Parser)]
#[command(name = "cvbench-xtask", about = "cvbench's test orchestration (run through scripts/test)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The checks, the tests on this host and in the test host, the tally over both.
    Test(TestArgs),
    /// Inside the test host (scripts/testhost): run the planned parts, resuming after those an
    /// earlier boot ended.
    TesthostPass(PassArgs),
    /// Every test binary cargo builds, and those the test-host pass runs with what they need.
    List,
    /// Write a test-host pass's state file planning just the named test binaries (any of them), to
    /// run by hand: `scripts/testhost --keep FILE target/debug/cvbench-xtask testhost-pass`.
    Plan(PlanArgs),
}

#[derive(clap::Args)]
struct PlanArgs {
    /// The test binaries (`package:target`; repeat), in this order.
    #[arg(long = "only", value_name = "PACKAGE:TARGET", required = true)]
    only: Vec<String>,
    /// The state file to write (replaced).
    #[arg(long)]
    state: PathBuf,
}

#[derive(clap::Args)]
struct TestArgs {
    /// Only these test binaries (`package:target`, e.g. `cvbench-registry:bad_input`; repeat),
    /// on this host and, if they are in its table, in the test host (no doctor, lab or matrix).
    #[arg(long = "only", value_name = "PACKAGE:TARGET")]
    only: Vec<String>,
    /// Leave out cargo fmt, clippy, fetch and build (the tests still build what they need).
    #[arg(long)]
    no_checks: bool,
    /// Leave out the test-host pass (counted as a skip, like CVBENCH_SKIP_TESTHOST=1).
    #[arg(long)]
    no_testhost: bool,
    /// Print what would run, run nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(clap::Args)]
struct PassArgs {
    /// The pass's state file (default: $CVBENCH_TH_KEEP, which scripts/testhost --keep sets).
    #[arg(long)]
    state: Option<PathBuf>,
    /// cvbench's binary (default: beside this program).
    #[arg(long)]
    cvbench: Option<PathBuf>,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cvbench-xtask: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<bool> {
    match Cli::parse().cmd {
        Cmd::Test(args) => test(&args),
        Cmd::TesthostPass(args) => testhost_pass(&args),
        Cmd::List => list(),
        Cmd::Plan(args) => plan(&args),
    }
}

/// This program's directory (`target/debug`): cvbench's binaries are built beside it.
fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    Ok(exe.parent().map(Path::to_path_buf).unwrap_or_default())
}

fn testhost_pass(args: &PassArgs) -> Result<bool> {
    if std::env::var_os("CVBENCH_TESTHOST").is_none_or(|v| v != "1") {
        bail!("testhost-pass runs inside the test host: run it through scripts/testhost");
    }
    let state = match &args.state {
        Some(s) => s.clone(),
        None => std::env::var_os("CVBENCH_TH_KEEP")
            .map(PathBuf::from)
            .context("no --state and no CVBENCH_TH_KEEP (scripts/testhost --keep FILE sets it)")?,
    };
    let cvbench = match &args.cvbench {
        Some(c) => c.clone(),
        None => bin_dir()?.join("cvbench"),
    };
    let part_timeout = env_secs("CVBENCH_TH_PART_TIMEOUT", 600)?;
    Ok(pass::run(&pass::PassConfig { state, cvbench, part_timeout })?)
}

fn env_secs(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v} is not a number of seconds")),
        Err(_) => Ok(default),
    }
}

/// Every test executable of `packages` (all: the workspace), built now; cargo's progress shows.
fn built_binaries(packages: &[&str]) -> Result<Vec<TestBinary>> {
    let mut cmd = Command::new("cargo");
    cmd.args(["test", "--no-run", "--message-format=json"]);
    if packages.is_empty() {
        cmd.arg("--workspace");
    }
    for p in packages {
        cmd.args(["-p", p]);
    }
    let out = cmd.stderr(Stdio::inherit()).output().context("cannot run cargo test --no-run")?;
    if !out.status.success() {
        bail!("cargo test --no-run failed ({}): the tests do not build", out.status);
    }
    Ok(binaries::from_cargo_json(out.stdout.as_slice())?)
}

fn checks() -> Result<()> {
    let steps: &[(&str, &[&str])] = &[
        ("cargo fmt --check", &["fmt", "--all", "--check"]),
        ("", &["fmt", "--manifest-path", "workload/Cargo.toml", "--check"]),
        ("cargo clippy", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
        (
            "",
            &[
                "clippy",
                "--manifest-path",
                "workload/Cargo.toml",
                "--target-dir",
                "workload/target",
                "--",
                "-D",
                "warnings",
            ],
        ),
        (
            "cargo fetch (every locked package, other platforms' too: tests/rust_version.rs reads them all)",
            &["fetch", "--locked"],
        ),
        ("cargo build (all binaries the integration tests drive)", &["build", "--workspace", "--bins"]),
    ];
    for (title, args) in steps {
        if !title.is_empty() {
            println!("== {title}");
        }
        let status = Command::new("cargo").args(*args).status().context("cannot run cargo")?;
        if !status.success() {
            bail!("cargo {} failed ({status})", args.join(" "));
        }
    }
    Ok(())
}

/// Moves to the workspace's root: the checks, scripts/testhost and the test binaries' table are
/// named from there, wherever this program was started.
fn to_workspace_root() -> Result<()> {
    let out = Command::new("cargo")
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo locate-project")?;
    if !out.status.success() {
        bail!("cargo locate-project failed ({}): not inside cvbench's checkout?", out.status);
    }
    let manifest = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let root = manifest.parent().context("cargo located a manifest without a directory")?;
    std::env::set_current_dir(root).with_context(|| format!("cannot change to {}", root.display()))
}

fn test(args: &TestArgs) -> Result<bool> {
    to_workspace_root()?;
    if !args.no_checks && !args.dry_run {
        checks()?;
    }
    let built = built_binaries(&packages_of(&args.only))?;
    let selected = select(&built, &args.only)?;
    let plan = testhost_plan(&built, &args.only)?;

    // The whole workspace in one command (its doctests too), or one command per selected binary
    // (cargo applies --lib and --test to every -p of a command, which would select more).
    let selectors: Vec<Vec<String>> = if selected.is_empty() {
        vec![vec!["--workspace".into()]]
    } else {
        selected.iter().map(|b| b.cargo_selector()).collect()
    };
    let host_cmds: Vec<Command> = selectors
        .iter()
        .map(|sel| {
            let mut cmd = Command::new("cargo");
            cmd.arg("test").args(sel);
            // One test at a time: the labs and benches measure, and two of them on 2 cores disturb
            // each other. --show-output: a passing test's captured output (its SKIPPED line among
            // it) is printed, each line at the start of a line; without it the harness swallows it.
            cmd.args(["--no-fail-fast", "--", "--test-threads=1", "--show-output"]);
            cmd
        })
        .collect();
    if args.dry_run {
        host_cmds.iter().for_each(|c| println!("this host: {}", run::describe(c)));
        match &plan {
            Some(plan) => plan.iter().for_each(|p| println!("test host: {}", p.name())),
            None => println!("test host: nothing selected"),
        }
        return Ok(true);
    }

    println!("== cargo test (this host)");
    let mut host = HostResults::default();
    for cmd in host_cmds {
        let what = run::describe(&cmd);
        let mut collector = libtest::Collector::new(binaries::names_by_file(&built), None);
        let ended = run::streamed(cmd, |l| collector.feed(l))?;
        host.extend(collector.finish(&what, ended.status));
        host.extend(HostResults::left_behind(&what, &ended.left_behind));
    }
    print!("{}", host.summary("host"));

    let (th, retries, boots) = testhost(args, plan)?;
    host.extend(fresh_os(args));

    println!("\n== tally over both hosts");
    if !retries.is_empty() {
        // The goal is one boot per pass (README: the test host's stalls): every extra boot is a warning.
        retries.iter().for_each(|r| println!("{r}"));
        println!(
            "WARNING: [testhost] the test-host pass needed {boots} boots (the goal is one; README: the test host's stalls)"
        );
    }
    let mut total = host.clone();
    total.extend(th.clone());
    let ok = host.ok() && th.ok();
    let file = bin_dir()?.parent().map(Path::to_path_buf).unwrap_or_default().join("xtask").join("results.json");
    let record = TestRecord { ok, host, testhost: th, testhost_boots: boots, retries };
    write_record(&file, &record)?;
    println!("typed results per part and host: {}", file.display());
    // The tally's line stays the last one printed.
    print!("{}", total.summary("total"));
    Ok(ok)
}

/// The fresh-OS part (scripts/fresh-os: the README's set-up in minimal Debian 12 and 13 trees).
/// It takes most of an hour per tree on two cores (a release build and a guest kernel each), so it runs
/// only when asked (`CVBENCH_FRESH_OS=1`); otherwise it is one counted skip that says how.
fn fresh_os(args: &TestArgs) -> HostResults {
    const SUITES: [&str; 2] = ["bookworm", "trixie"];
    let mut results = HostResults::default();
    let asked = std::env::var("CVBENCH_FRESH_OS").is_ok_and(|v| v == "1");
    if !asked || !args.only.is_empty() {
        let line = "SKIPPED: [fresh-os] the README's set-up in bare Debian 12 and 13 trees (scripts/fresh-os \
                    bookworm trixie; 18 and 19 minutes here, side by side beside a test run): set CVBENCH_FRESH_OS=1 to run it"
            .to_string();
        println!("{line}");
        let mut p = PartResult::named("fresh-os");
        p.skips.push(line);
        results.parts.push(p);
        return results;
    }
    for suite in SUITES {
        println!("== fresh OS: {suite} (scripts/fresh-os {suite})");
        let mut p = PartResult::named(format!("fresh-os:{suite}"));
        match Command::new("scripts/fresh-os").arg(suite).status() {
            Ok(st) if st.success() => p.passed = 1,
            Ok(st) => {
                p.failed = 1;
                p.note = Some(format!("scripts/fresh-os {suite} exited {st}"));
                results.failed_commands.push(format!("scripts/fresh-os {suite}"));
            }
            Err(e) => {
                p.failed = 1;
                p.note = Some(format!("cannot run scripts/fresh-os: {e}"));
                results.failed_commands.push(format!("scripts/fresh-os {suite}"));
            }
        }
        results.parts.push(p);
    }
    results
}

/// What one `cvbench-xtask test` ended with, written beside the build for tools and readers.
#[derive(serde::Serialize)]
struct TestRecord {
    ok: bool,
    host: HostResults,
    testhost: HostResults,
    testhost_boots: u32,
    retries: Vec<String>,
}

fn write_record(file: &Path, record: &TestRecord) -> Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(record).context("cannot serialise the results")?;
    std::fs::write(file, text).with_context(|| format!("cannot write {}", file.display()))
}

fn packages_of(only: &[String]) -> Vec<&str> {
    only.iter().map(|o| o.split_once(':').map_or(o.as_str(), |(p, _)| p)).collect()
}

fn select<'a>(built: &'a [TestBinary], only: &[String]) -> Result<Vec<&'a TestBinary>> {
    only.iter()
        .map(|o| {
            built.iter().find(|b| &b.name == o).with_context(|| format!("--only {o}: cargo built no such test binary"))
        })
        .collect()
}

fn plan(args: &PlanArgs) -> Result<bool> {
    let built = built_binaries(&packages_of(&args.only))?;
    let parts = select(&built, &args.only)?.into_iter().map(|b| Part::TestBinary(b.clone())).collect();
    PassState::new(parts).save(&args.state)?;
    println!("planned {} test binaries in {}", args.only.len(), args.state.display());
    Ok(true)
}

/// The test-host pass's parts: the whole pass, or with `--only` just the selected binaries of its
/// table (`None`: nothing selected runs there).
fn testhost_plan(built: &[TestBinary], only: &[String]) -> Result<Option<Vec<Part>>> {
    if only.is_empty() {
        let mut plan = vec![Part::Doctor];
        plan.extend(binaries::testhost_binaries(built, &[])?.into_iter().map(Part::TestBinary));
        plan.extend([Part::Lab5, Part::QuickMatrix]);
        return Ok(Some(plan));
    }
    let in_table: Vec<String> = only
        .iter()
        .filter(|o| binaries::TESTHOST.iter().any(|d| format!("{}:{}", d.package, d.target) == **o))
        .cloned()
        .collect();
    if in_table.is_empty() {
        return Ok(None);
    }
    Ok(Some(binaries::testhost_binaries(built, &in_table)?.into_iter().map(Part::TestBinary).collect()))
}

fn skipped(reason: &str) -> HostResults {
    let line = format!("SKIPPED: [testhost] {reason}");
    println!("{line}");
    let mut p = PartResult::named("the test-host pass");
    p.skips.push(line);
    HostResults { parts: vec![p], failed_commands: vec![] }
}

/// The KVM module when this host already gives what the test host emulates: hardware KVM
/// (kvm_intel or kvm_amd, not the software kvm_pvm) and a pure cgroup v2 hierarchy.
fn provides_the_test_host() -> Option<&'static str> {
    let module = |m: &str| Path::new("/sys/module").join(m).exists();
    if module("kvm_pvm") || !Path::new("/dev/kvm").exists() {
        return None;
    }
    let kvm = ["kvm_intel", "kvm_amd"].into_iter().find(|m| module(m))?;
    let v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
    v2.then_some(kvm)
}

fn testhost(args: &TestArgs, plan: Option<Vec<Part>>) -> Result<(HostResults, Vec<String>, u32)> {
    if std::env::var("CVBENCH_SKIP_TESTHOST").is_ok_and(|v| v == "1") {
        return Ok((skipped("the test-host pass (CVBENCH_SKIP_TESTHOST=1)"), vec![], 0));
    }
    if args.no_testhost {
        return Ok((skipped("the test-host pass (--no-testhost)"), vec![], 0));
    }
    if !nix::unistd::geteuid().is_root() {
        return Ok((skipped("the test-host pass needs root (loop devices, tap, KVM inside)"), vec![], 0));
    }
    if let Some(kvm) = provides_the_test_host() {
        if std::env::var("CVBENCH_TESTHOST").map_or(true, |v| v != "always") {
            return Ok((
                skipped(&format!(
                    "the test-host pass adds nothing here: this host already has hardware KVM ({kvm}) and pure \
                     cgroup v2, and the host pass ran every test binary on them (CVBENCH_TESTHOST=always runs it anyway)"
                )),
                vec![],
                0,
            ));
        }
    }
    let Some(plan) = plan else {
        println!("== test host: none of the selected test binaries runs there");
        return Ok((HostResults::default(), vec![], 0));
    };
    let binaries = plan.iter().filter(|p| matches!(p, Part::TestBinary(_))).count();
    let others: Vec<String> = plan.iter().filter(|p| !matches!(p, Part::TestBinary(_))).map(Part::name).collect();
    println!("== test host: {binaries} test binaries{}", others.iter().map(|o| format!(", {o}")).collect::<String>());
    let dir = bin_dir()?;
    let state = dir.parent().unwrap_or(&dir).join("xtask").join("testhost-state.json");
    std::fs::create_dir_all(state.parent().unwrap_or(Path::new(".")))
        .with_context(|| format!("cannot make the directory of {}", state.display()))?;
    PassState::new(plan).save(&state)?;
    let cfg = boots::BootsConfig {
        testhost: PathBuf::from("scripts/testhost"),
        state,
        xtask: dir.join("cvbench-xtask"),
        budget: env_secs("CVBENCH_TH_BUDGET", 2700)?,
    };
    let out = boots::run_boots(&cfg)?;
    Ok((out.results, out.retries, out.boots))
}

fn list() -> Result<bool> {
    let built = built_binaries(&[])?;
    for b in &built {
        println!("{:<44} {}", b.name, b.exe.display());
    }
    println!("\nin the test host too (in this order), and what they need that only it has:");
    for d in binaries::TESTHOST {
        let needs: Vec<&str> = d.needs.iter().map(|n| n.label()).collect();
        let args = if d.args.is_empty() { String::new() } else { format!(" (filter: {})", d.args.join(" ")) };
        println!("  {}:{}{args}  needs {}", d.package, d.target, needs.join(", "));
    }
    Ok(true)
}
