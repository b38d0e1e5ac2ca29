//! The test-host pass, run INSIDE the test host (scripts/testhost sets `CVBENCH_TESTHOST=1`):
//! the planned parts in order (the doctor, the test binaries built on the outer host, lab 5, the
//! whole quick matrix), with their typed results written to the state file after each part. A
//! boot that the emulated host stopped in leaves that file behind (scripts/testhost `--keep`);
//! the next boot reads it and resumes after the parts that ended, instead of running them again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::binaries::TestBinary;
use crate::libtest::{Collector, Line};
use crate::run::{self, RunError};
use crate::tally::{HostResults, PartResult};

/// Bumped when the state's shape changes: a file of another version is refused, not guessed at.
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("cannot read the pass's state {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("the pass's state {0} is not valid")]
    Parse(PathBuf, #[source] serde_json::Error),
    #[error("the pass's state {path} is version {found}, this program writes {STATE_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("cannot write the pass's state {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// One part of the pass, in the plan the outer host writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "part", deny_unknown_fields)]
pub enum Part {
    /// `cvbench doctor` tells the test host's truth (emulated CPU, hardware KVM, cgroup v2).
    Doctor,
    TestBinary(TestBinary),
    /// `cvbench lab 5 --quick` shows the whole boot.
    Lab5,
    /// `cvbench bench --quick`, every family, on native, container, microvm, qemu.
    QuickMatrix,
}

impl Part {
    pub fn name(&self) -> String {
        match self {
            Part::Doctor => "doctor".into(),
            Part::TestBinary(b) => b.name.clone(),
            Part::Lab5 => "lab 5".into(),
            Part::QuickMatrix => "quick matrix".into(),
        }
    }
}

/// Kept across the boots of one pass: the plan, the parts that ended, the one under way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassState {
    pub version: u32,
    pub plan: Vec<Part>,
    /// Results of the parts that ended, in the plan's order.
    pub done: Vec<PartResult>,
    /// Commands of those parts that ended non-zero.
    pub failed_commands: Vec<String>,
    /// The part running when the state was last written (where a stopped boot stopped).
    pub current: Option<String>,
    /// Boots that started this pass.
    pub boots: u32,
    /// The pass reached its tally.
    pub finished: bool,
}

impl PassState {
    pub fn new(plan: Vec<Part>) -> Self {
        Self {
            version: STATE_VERSION,
            plan,
            done: Vec::new(),
            failed_commands: Vec::new(),
            current: None,
            boots: 0,
            finished: false,
        }
    }

    pub fn load(path: &Path) -> Result<Self, PassError> {
        let text = std::fs::read_to_string(path).map_err(|e| PassError::Read(path.into(), e))?;
        // The version first, so an old file says so instead of failing on a field.
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let v: Versioned = serde_json::from_str(&text).map_err(|e| PassError::Parse(path.into(), e))?;
        if v.version != STATE_VERSION {
            return Err(PassError::Version { path: path.into(), found: v.version });
        }
        serde_json::from_str(&text).map_err(|e| PassError::Parse(path.into(), e))
    }

    /// Written whole to a temporary file beside it, synced, then renamed over it: a boot that
    /// stops while writing leaves the previous state intact.
    pub fn save(&self, path: &Path) -> Result<(), PassError> {
        let err = |e| PassError::Write(path.into(), e);
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
        serde_json::to_writer_pretty(&mut tmp, self).map_err(|e| err(e.into()))?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(path).map_err(|e| err(e.error))?;
        Ok(())
    }

    pub fn results(&self) -> HostResults {
        HostResults { parts: self.done.clone(), failed_commands: self.failed_commands.clone() }
    }

    fn ended(&self, name: &str) -> Option<&PartResult> {
        self.done.iter().find(|p| p.name == name)
    }
}

/// Settings of the pass.
pub struct PassConfig {
    pub state: PathBuf,
    /// `cvbench` as built on the outer host.
    pub cvbench: PathBuf,
    /// No one part may take the whole pass.
    pub part_timeout: u64,
}

/// Runs the pass; returns whether every part passed.
pub fn run(cfg: &PassConfig) -> Result<bool, PassError> {
    let started = Instant::now();
    let mut state = PassState::load(&cfg.state)?;
    state.boots += 1;
    state.save(&cfg.state)?;
    let mut resumed = 0;
    for part in state.plan.clone() {
        let name = part.name();
        if let Some(earlier) = state.ended(&name) {
            println!("RESUMED: [testhost] {name}: its result from the previous boot, not run again");
            println!("  {}", earlier.one_line());
            resumed += 1;
            continue;
        }
        state.current = Some(name.clone());
        state.save(&cfg.state)?;
        let part_started = Instant::now();
        let mut r = run_part(cfg, &part, started)?;
        let seconds = part_started.elapsed().as_secs();
        for p in &mut r.parts {
            p.seconds = Some(seconds);
        }
        state.failed_commands.extend(r.failed_commands);
        state.done.extend(r.parts);
        state.current = None;
        state.save(&cfg.state)?;
    }
    if resumed > 0 {
        println!("testhost pass: {resumed} part(s) resumed from the previous boot (see RESUMED lines)");
    }
    println!("testhost pass took {} s (emulated CPU: timings not representative)", started.elapsed().as_secs());
    println!("testhost pass: its longest parts: {}", longest(&state.done, 6));
    state.finished = true;
    state.save(&cfg.state)?;
    let all = state.results();
    print!("{}", all.summary("testhost"));
    Ok(all.ok())
}

/// The `n` parts that took longest, as "NAME N s, ..." (parts resumed from an earlier boot
/// keep the time they took there).
fn longest(done: &[PartResult], n: usize) -> String {
    let mut timed: Vec<(&str, u64)> = done.iter().filter_map(|p| Some((p.name.as_str(), p.seconds?))).collect();
    timed.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let shown: Vec<String> = timed.iter().take(n).map(|(name, s)| format!("{name} {s} s")).collect();
    if shown.is_empty() {
        "none timed".into()
    } else {
        shown.join(", ")
    }
}

fn run_part(cfg: &PassConfig, part: &Part, started: Instant) -> Result<HostResults, PassError> {
    match part {
        Part::Doctor => {
            // cvbench's path as an argument, not spliced into the script (a checkout path may hold
            // spaces or quotes).
            let script = "\"$1\" doctor | tee /dev/stderr | grep -q 'emulated CPU' && \"$1\" doctor | grep -E '^ok +kvm +hardware KVM' && \"$1\" doctor | grep -E '^ok +cgroups +cgroup v2'";
            let mut cmd = Command::new("sh");
            cmd.args(["-c", script, "sh"]).arg(&cfg.cvbench);
            check("doctor", "cvbench doctor tells the test host's truth", cmd, |_| {})
        }
        Part::TestBinary(b) => {
            println!("== test binary: {} ({} s in)", b.name, started.elapsed().as_secs());
            let mut cmd = Command::new(&b.exe);
            // --show-output: a passing test's captured output (its SKIPPED line) is printed.
            cmd.args(["--test-threads=1", "--show-output"]).args(&b.args).current_dir(&b.dir);
            let cmd = run::bounded(cfg.part_timeout, &cmd);
            let what = run::describe(&cmd);
            let mut c = Collector::new(HashMap::new(), Some(&b.name));
            let ended = run::streamed(cmd, |l| c.feed(l))?;
            if run::timed_out(ended.status) {
                overran(&what);
            }
            let mut r = c.finish(&what, ended.status);
            r.extend(HostResults::left_behind(&what, &ended.left_behind));
            Ok(r)
        }
        Part::Lab5 => {
            let mut cmd = Command::new(&cfg.cvbench);
            cmd.args(["lab", "5", "--quick"]);
            check("lab 5", "cvbench lab 5 --quick shows the whole boot", run::bounded(cfg.part_timeout, &cmd), |_| {})
        }
        Part::QuickMatrix => {
            let smoke = tempfile::Builder::new()
                .prefix("testhost-smoke-")
                .tempdir()
                .map_err(|e| PassError::Write("/tmp/testhost-smoke-*".into(), e))?;
            let mut cmd = Command::new(&cfg.cvbench);
            cmd.args(["bench", "--quick", "--backends", "native,container,microvm,qemu", "--workloads", FAMILIES])
                .arg("--results")
                .arg(smoke.path().join("results"))
                .arg("--out")
                .arg(smoke.path().join("reports"));
            let mut bad = Vec::new();
            let r = check(
                "quick matrix",
                "cvbench bench --quick, every family, on native,container,microvm,qemu",
                run::bounded(cfg.part_timeout * 2, &cmd),
                |line| {
                    if failed_cell(line) {
                        bad.push(line.trim_end().to_string());
                    }
                },
            )?;
            // The bench exits 0 and keeps failed records: a failed cell or backend fails the check.
            Ok(if bad.is_empty() {
                r
            } else {
                for line in &bad {
                    println!("{line}");
                }
                println!("testhost-pass: the cells or backends above failed (every one can run in the test host)");
                let mut r = r;
                if let Some(p) = r.parts.first_mut() {
                    if p.failed == 0 {
                        p.passed = p.passed.saturating_sub(1);
                        p.failed = 1;
                        p.note = Some(format!("{} failed cell(s) or backend(s)", bad.len()));
                    }
                }
                r
            })
        }
    }
}

/// Every scenario family at its smallest size.
const FAMILIES: &str = "surface,startup-serial,startup-parallel,footprint,density,cpu,mem-bw,mem-touch,syscall,net-stream,net-rr,disk,cold-start,image-depth";

/// A command that is one check (not a test binary): passed when it exits 0. Skips it prints
/// count like a test's. `each` sees every line too.
fn check(name: &str, what: &str, cmd: Command, mut each: impl FnMut(&str)) -> Result<HostResults, PassError> {
    println!("== check: {what}");
    let command = run::describe(&cmd);
    let mut part = PartResult::named(name);
    let ended = run::streamed(cmd, |line| {
        if let Line::Skipped(s) = Line::parse(line) {
            part.skips.push(s.to_string());
        }
        each(line);
    })?;
    let status = ended.status;
    if run::timed_out(status) {
        overran(&command);
    }
    let mut out = HostResults::default();
    if status == 0 {
        part.passed = 1;
        println!("check: {what}: ok");
    } else {
        part.failed = 1;
        part.note = Some(format!("exit {status}"));
        println!("check: {what}: FAILED (exit {status})");
        out.failed_commands.push(command.clone());
    }
    out.parts.push(part);
    out.extend(HostResults::left_behind(&command, &ended.left_behind));
    Ok(out)
}

/// A part that overran its deadline (the command says which): say so, show what the host was doing.
fn overran(what: &str) {
    println!("testhost-pass: '{what}' did not end in time; killed. Processes and kernel log:");
    run::show_stuck();
}

/// A quick-matrix summary line for a cell with failed runs (`  backend scenario N/M K failed, `)
/// or a backend that was unavailable (`  backend UNAVAILABLE: `).
fn failed_cell(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("  ") else { return false };
    if rest.starts_with(' ') || rest.is_empty() {
        return false;
    }
    let (first, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let rest = rest.trim_start();
    if first.is_empty() {
        return false;
    }
    if rest.starts_with("UNAVAILABLE: ") {
        return true;
    }
    let (_second, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let rest = rest.trim_start();
    let Some((ratio, rest)) = rest.split_once(' ') else { return false };
    let ratio_ok = ratio.split_once('/').is_some_and(|(a, b)| {
        !a.is_empty() && !b.is_empty() && (a.to_string() + b).bytes().all(|c| c.is_ascii_digit())
    });
    let Some((count, rest)) = rest.split_once(' ') else { return false };
    let count_ok = count.bytes().all(|c| c.is_ascii_digit())
        && count.parse::<u32>().is_ok_and(|n| n > 0)
        && !count.starts_with('0');
    ratio_ok && count_ok && rest.starts_with("failed, ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_cells_and_unavailable_backends_are_found() {
        assert!(failed_cell("  microvm  net-stream   1/3 1 failed, 2 not run"));
        assert!(failed_cell("  qemu UNAVAILABLE: no /dev/kvm"));
        assert!(!failed_cell("  microvm  net-stream   3/3 0 failed, 0 not run"));
        assert!(!failed_cell("   microvm net-stream 1/3 1 failed, "));
        assert!(!failed_cell("microvm net-stream 1/3 1 failed, "));
        assert!(!failed_cell("  microvm net-stream 1/3 01 failed, "));
    }

    #[test]
    fn the_longest_parts_come_first_and_untimed_ones_are_left_out() {
        let p = |name: &str, seconds| PartResult { seconds, ..PartResult::named(name) };
        let done = [p("a", Some(5)), p("b", None), p("c", Some(90)), p("d", Some(5))];
        assert_eq!(longest(&done, 2), "c 90 s, a 5 s");
        assert_eq!(longest(&done[1..2], 3), "none timed");
    }

    #[test]
    fn the_state_round_trips_and_a_saved_part_is_not_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut s = PassState::new(vec![Part::Doctor, Part::Lab5]);
        s.done.push(PartResult { passed: 1, ..PartResult::named("doctor") });
        s.current = Some("lab 5".into());
        s.save(&path).unwrap();
        let back = PassState::load(&path).unwrap();
        assert_eq!(back, s);
        assert!(back.ended("doctor").is_some());
        assert!(back.ended("lab 5").is_none());
    }

    #[test]
    fn a_state_of_another_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, r#"{"version": 99, "plan": []}"#).unwrap();
        assert!(matches!(PassState::load(&path), Err(PassError::Version { found: 99, .. })));
    }

    #[test]
    fn a_state_with_unknown_fields_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut v = serde_json::to_value(PassState::new(vec![])).unwrap();
        v["surprise"] = 1.into();
        std::fs::write(&path, v.to_string()).unwrap();
        assert!(matches!(PassState::load(&path), Err(PassError::Parse(..))));
    }

    #[test]
    fn a_resumed_pass_runs_only_the_parts_that_had_not_ended() {
        // The doctor "ended" in an earlier boot; lab 5 is replaced by a binary that exits 0
        // and prints one skip, run for real.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let bin = TestBinary {
            name: "x:y".into(),
            dir: dir.path().into(),
            exe: "/bin/echo".into(),
            kind: crate::binaries::TargetKind::Test,
            args: vec![],
        };
        let mut s = PassState::new(vec![Part::Doctor, Part::TestBinary(bin)]);
        s.done.push(PartResult { passed: 1, ..PartResult::named("doctor") });
        s.boots = 1;
        s.save(&path).unwrap();
        let cfg = PassConfig { state: path.clone(), cvbench: "/nonexistent".into(), part_timeout: 30 };
        // echo prints its arguments, not a result: the binary counts as a failure (no result).
        let ok = run(&cfg).unwrap();
        let after = PassState::load(&path).unwrap();
        assert!(!ok);
        assert_eq!(after.boots, 2);
        assert!(after.finished);
        assert_eq!(after.done.len(), 2);
        assert_eq!(after.done[0].name, "doctor");
        assert_eq!(after.done[1].name, "x:y");
    }
}
