//! Typed results of one part of a pass (a test binary, a check) and the tally over many parts.
//!
//! A skip is a test that printed a `SKIPPED: ...` line (cvbench-testkit or an optional-tool
//! check). libtest counts it as passed, so the tally subtracts skips from the passed count and
//! lists them by reason. The summary keeps the words and layout scripts/test always printed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// What one part of a pass ended with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartResult {
    /// `package:target` for a test binary, `Doc-tests crate` for doctests, or a check's name.
    pub name: String,
    /// As libtest counted them (a skip is among them).
    pub passed: u32,
    pub failed: u32,
    pub ignored: u32,
    /// Every `SKIPPED: ...` line the part printed, in order.
    pub skips: Vec<String>,
    /// Why a failure was counted that libtest did not report (a crash, a timeout, a check).
    pub note: Option<String>,
    /// Wall-clock seconds the part took, where the pass timed it (the test-host pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
}

impl PartResult {
    pub fn named(name: impl Into<String>) -> Self {
        Self { name: name.into(), ..Self::default() }
    }

    /// One line for a resumed or finished part: "NAME: N passed, N failed, N skipped".
    pub fn one_line(&self) -> String {
        let skipped = self.skips.len() as u32;
        let mut s = format!(
            "{}: {} passed, {} failed, {} skipped",
            self.name,
            self.passed.saturating_sub(skipped),
            self.failed,
            skipped
        );
        if let Some(note) = &self.note {
            let _ = write!(s, " ({note})");
        }
        s
    }
}

/// The results of one host (or of both): its parts and the commands that ended non-zero.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostResults {
    pub parts: Vec<PartResult>,
    pub failed_commands: Vec<String>,
}

impl HostResults {
    pub fn extend(&mut self, other: HostResults) {
        self.parts.extend(other.parts);
        self.failed_commands.extend(other.failed_commands);
    }

    /// One failed part for a command that left processes running (`procs`, each as it prints),
    /// nothing when it left none: a test's leak fails the tally even when every test passed.
    pub fn left_behind(command: &str, procs: &[impl std::fmt::Display]) -> HostResults {
        let mut out = HostResults::default();
        if procs.is_empty() {
            return out;
        }
        let mut part = PartResult::named(format!("left running by {command}"));
        part.failed = 1;
        part.note = Some(procs.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "));
        out.parts.push(part);
        out.failed_commands.push(command.to_string());
        out
    }

    pub fn tally(&self) -> Tally {
        // Per part: a skip that is not among libtest's passes (the test-host pass left out)
        // takes nothing from another part's passes.
        let passed: u32 = self.parts.iter().map(|p| p.passed.saturating_sub(p.skips.len() as u32)).sum();
        let mut failed: u32 = self.parts.iter().map(|p| p.failed).sum();
        let skipped = self.parts.iter().map(|p| p.skips.len() as u32).sum::<u32>();
        // A command that failed without a failing test (it did not build, a binary crashed
        // before its result) still fails the tally.
        if failed == 0 {
            failed = self.failed_commands.len() as u32;
        }
        Tally { passed, failed, skipped }
    }

    /// True when nothing failed: no failed test and no failed command.
    pub fn ok(&self) -> bool {
        self.failed_commands.is_empty() && self.parts.iter().all(|p| p.failed == 0)
    }

    /// The summary block: skip reasons counted, failed commands, and "HOST: N passed, ..." last.
    pub fn summary(&self, host: &str) -> String {
        let mut out = format!("\n== summary ({host})\n");
        let mut reasons: BTreeMap<&str, u32> = BTreeMap::new();
        for skip in self.parts.iter().flat_map(|p| &p.skips) {
            *reasons.entry(skip.as_str()).or_default() += 1;
        }
        if !reasons.is_empty() {
            out.push_str("skipped, with reasons:\n");
            for (reason, n) in reasons {
                let _ = writeln!(out, "  {n}x {reason}");
            }
        }
        if !self.failed_commands.is_empty() {
            out.push_str("commands that failed:\n");
            for cmd in &self.failed_commands {
                let _ = writeln!(out, "  {cmd}");
            }
        }
        let t = self.tally();
        let _ = writeln!(out, "{host}: {} passed, {} failed, {} skipped", t.passed, t.failed, t.skipped);
        out
    }
}

/// The counts of the final line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str, passed: u32, failed: u32, skips: &[&str]) -> PartResult {
        PartResult {
            name: name.into(),
            passed,
            failed,
            skips: skips.iter().map(|s| s.to_string()).collect(),
            ..PartResult::default()
        }
    }

    #[test]
    fn a_command_that_left_processes_running_fails_even_with_every_test_passed() {
        let mut r = HostResults { parts: vec![part("a:a", 4, 0, &[])], failed_commands: vec![] };
        r.extend(HostResults::left_behind("a-bin", &[] as &[String]));
        assert!(r.ok(), "nothing left: nothing added");
        r.extend(HostResults::left_behind("a-bin", &["pid 7 (sleep 600)".to_string()]));
        assert!(!r.ok());
        assert_eq!(r.tally(), Tally { passed: 4, failed: 1, skipped: 0 });
        assert_eq!(r.parts[1].note.as_deref(), Some("pid 7 (sleep 600)"));
    }

    #[test]
    fn skips_are_subtracted_from_passed_and_counted_by_reason() {
        let r = HostResults {
            parts: vec![
                part("a:a", 5, 0, &["SKIPPED: [root] x"]),
                part("b:b", 3, 0, &["SKIPPED: [root] x", "SKIPPED: [other] y"]),
            ],
            failed_commands: vec![],
        };
        assert_eq!(r.tally(), Tally { passed: 5, failed: 0, skipped: 3 });
        assert_eq!(
            r.summary("host"),
            "\n== summary (host)\nskipped, with reasons:\n  1x SKIPPED: [other] y\n  2x SKIPPED: [root] x\nhost: 5 passed, 0 failed, 3 skipped\n"
        );
        assert!(r.ok());
    }

    #[test]
    fn a_skip_outside_libtest_takes_no_other_part_s_pass() {
        let r = HostResults {
            parts: vec![part("a:a", 4, 0, &[]), part("the test-host pass", 0, 0, &["SKIPPED: [testhost] x"])],
            failed_commands: vec![],
        };
        assert_eq!(r.tally(), Tally { passed: 4, failed: 0, skipped: 1 });
    }

    #[test]
    fn a_failed_command_without_a_failed_test_counts_as_failures() {
        let r =
            HostResults { parts: vec![part("a:a", 2, 0, &[])], failed_commands: vec!["cargo test --workspace".into()] };
        assert_eq!(r.tally().failed, 1);
        assert!(!r.ok());
        assert!(r.summary("host").contains("commands that failed:\n  cargo test --workspace\n"));
    }

    #[test]
    fn failed_tests_are_summed_over_parts() {
        let r = HostResults {
            parts: vec![part("a:a", 1, 2, &[]), part("b:b", 0, 3, &[])],
            failed_commands: vec!["x".into(), "y".into()],
        };
        assert_eq!(r.tally(), Tally { passed: 1, failed: 5, skipped: 0 });
    }
}
