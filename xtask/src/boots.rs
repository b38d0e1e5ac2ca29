//! The outer side of the test-host pass: boot the test host (scripts/testhost) with the pass's
//! state file kept across boots, boot again when the emulated host's kernel stopped (exit 126)
//! while the budget lasts, and read the typed results from that file at the end.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::pass::{PassError, PassState};
use crate::run;
use crate::tally::{HostResults, PartResult};

/// Boots at most, within the budget.
const MAX_BOOTS: u32 = 8;
/// A boot with less time left than this is not started.
const MIN_BOOT_SECS: u64 = 120;

#[derive(Debug, thiserror::Error)]
pub enum BootsError {
    #[error("cannot start {0}")]
    Spawn(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    State(#[from] PassError),
}

pub struct BootsConfig {
    /// scripts/testhost (another program of its command line in tests).
    pub testhost: PathBuf,
    /// The state file on this host (scripts/testhost `--keep` carries it in and out).
    pub state: PathBuf,
    /// This program, as the test host runs it (it sees this host's root at the same paths).
    pub xtask: PathBuf,
    /// Seconds for every boot together.
    pub budget: u64,
}

/// What the boots ended with.
pub struct BootsOutcome {
    pub results: HostResults,
    /// One line per extra boot (and for a budget spent): printed as warnings in the tally.
    pub retries: Vec<String>,
    pub boots: u32,
}

/// Runs the pass planned in `cfg.state` (written by the caller) to its end.
pub fn run_boots(cfg: &BootsConfig) -> Result<BootsOutcome, BootsError> {
    let deadline = Instant::now() + Duration::from_secs(cfg.budget);
    let mut retries = Vec::new();
    let mut status = 0;
    let mut boots = 0;
    for attempt in 1..=MAX_BOOTS {
        let left = deadline.saturating_duration_since(Instant::now()).as_secs();
        if left < MIN_BOOT_SECS {
            let line =
                format!("the test host's budget ({} s, CVBENCH_TH_BUDGET) is spent; no boot {attempt}", cfg.budget);
            println!("{line}");
            retries.push(line);
            status = 124;
            break;
        }
        boots = attempt;
        let mut cmd = Command::new(&cfg.testhost);
        cmd.arg("--timeout").arg(left.to_string()).arg("--keep").arg(&cfg.state);
        cmd.arg(&cfg.xtask).arg("testhost-pass");
        status = run::code(cmd.status().map_err(|e| BootsError::Spawn(cfg.testhost.clone(), e))?);
        if status != 126 || attempt == MAX_BOOTS {
            break;
        }
        let state = PassState::load(&cfg.state)?;
        let at = state.current.as_deref().unwrap_or("(before its first part)");
        let line = format!(
            "RETRIED: [testhost] boot {attempt}: the test host's kernel stopped (under TCG, in part '{at}'); boot {} resumes after the parts that ended",
            attempt + 1
        );
        println!("{line}");
        retries.push(line);
    }
    let state = PassState::load(&cfg.state)?;
    Ok(BootsOutcome { results: outcome(&state, status), retries, boots })
}

/// The pass's results as its state file holds them, and what its exit status adds: a pass that
/// ended before its tally is one failure more; any non-zero status a failed command.
pub fn outcome(state: &PassState, status: i32) -> HostResults {
    let mut r = state.results();
    if status != 0 {
        if !state.finished {
            println!("the test-host pass ended with status {status} before its tally: counted as one failure");
            let mut p = PartResult::named("the test-host pass");
            p.failed = 1;
            p.note = Some(format!("ended with {status} before its tally"));
            r.parts.push(p);
        }
        r.failed_commands.push(format!("scripts/testhost ... testhost-pass (exit {status})"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pass::Part;

    #[test]
    fn a_pass_cut_short_counts_one_failure_beside_what_ended() {
        let mut s = PassState::new(vec![Part::Doctor, Part::Lab5]);
        s.done.push(PartResult { passed: 1, ..PartResult::named("doctor") });
        let r = outcome(&s, 126);
        assert_eq!(r.tally().passed, 1);
        assert_eq!(r.tally().failed, 1);
        assert!(!r.ok());
    }

    #[test]
    fn a_finished_pass_with_a_failed_part_is_not_counted_twice() {
        let mut s = PassState::new(vec![Part::Doctor]);
        s.done.push(PartResult { failed: 2, ..PartResult::named("doctor") });
        s.finished = true;
        let r = outcome(&s, 1);
        assert_eq!(r.tally().failed, 2);
    }

    #[test]
    fn a_clean_pass_adds_nothing() {
        let mut s = PassState::new(vec![Part::Doctor]);
        s.done.push(PartResult { passed: 1, ..PartResult::named("doctor") });
        s.finished = true;
        let r = outcome(&s, 0);
        assert!(r.ok());
        assert_eq!(r.tally().passed, 1);
    }
}
