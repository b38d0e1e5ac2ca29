//! Reading what `cargo test` and libtest print (stable Rust has no machine-readable test output):
//! the `Running`/`Doc-tests` headers that start a test binary, the `test result:` lines, and the
//! loud `SKIPPED:` lines, folded into one [`PartResult`] per test binary.

use std::collections::HashMap;

use crate::tally::{HostResults, PartResult};

/// What one line of output means to the tally.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// `     Running tests/x.rs (target/debug/deps/x-0123abcd)`: the file name of the executable.
    Running(&'a str),
    /// `   Doc-tests crate_name`.
    DocTests(&'a str),
    /// `test result: ok. 7 passed; 0 failed; 1 ignored; ...`.
    Result {
        passed: u32,
        failed: u32,
        ignored: u32,
    },
    /// A loud skip: the `SKIPPED: ...` text.
    Skipped(&'a str),
    Other,
}

impl<'a> Line<'a> {
    pub fn parse(line: &'a str) -> Line<'a> {
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(rest) = line.strip_prefix("test result: ") {
            return Self::result(rest).unwrap_or(Line::Other);
        }
        if let Some(skip) = skip_text(line) {
            return Line::Skipped(skip);
        }
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("Running ") {
            // The executable in the last parentheses; its file name is what names it.
            if let (Some(open), true) = (rest.rfind(" ("), rest.ends_with(')')) {
                let path = &rest[open + 2..rest.len() - 1];
                return Line::Running(path.rsplit('/').next().unwrap_or(path));
            }
        }
        if let Some(krate) = trimmed.strip_prefix("Doc-tests ") {
            if !krate.is_empty() && !krate.contains(' ') {
                return Line::DocTests(krate);
            }
        }
        Line::Other
    }

    fn result(rest: &str) -> Option<Line<'a>> {
        let (mut passed, mut failed, mut ignored) = (None, None, None);
        let words: Vec<&str> = rest.split_whitespace().collect();
        for pair in words.windows(2) {
            let n = pair[0].parse::<u32>();
            match (n, pair[1].trim_end_matches([';', ','])) {
                (Ok(n), "passed") if passed.is_none() => passed = Some(n),
                (Ok(n), "failed") if failed.is_none() => failed = Some(n),
                (Ok(n), "ignored") if ignored.is_none() => ignored = Some(n),
                _ => {}
            }
        }
        Some(Line::Result { passed: passed?, failed: failed?, ignored: ignored.unwrap_or(0) })
    }
}

/// The skip text of a line: `SKIPPED: ...` at its start, or right after libtest's `test NAME ... `
/// (a child process writing to the inherited stderr is not captured, and lands there).
fn skip_text(line: &str) -> Option<&str> {
    if line.starts_with("SKIPPED: ") {
        return Some(line);
    }
    let rest = line.strip_prefix("test ")?;
    let at = rest.find(" ... SKIPPED: ")?;
    Some(&rest[at + 5..])
}

/// Folds a command's output, line by line, into parts.
pub struct Collector {
    /// Executable file name -> part name (`package:target`), from cargo's JSON messages.
    names: HashMap<String, String>,
    parts: Vec<(PartResult, bool)>,
    /// Skips printed outside any part (before the first header).
    loose: PartResult,
}

impl Collector {
    /// `first`: the part the output starts in (a test binary run directly has no header).
    pub fn new(names: HashMap<String, String>, first: Option<&str>) -> Self {
        let mut c = Self { names, parts: Vec::new(), loose: PartResult::named("(outside a test binary)") };
        if let Some(name) = first {
            c.parts.push((PartResult::named(name), false));
        }
        c
    }

    pub fn feed(&mut self, line: &str) {
        match Line::parse(line) {
            Line::Running(exe) => {
                let name = self.names.get(exe).cloned().unwrap_or_else(|| strip_hash(exe).to_string());
                self.parts.push((PartResult::named(name), false));
            }
            Line::DocTests(krate) => self.parts.push((PartResult::named(format!("Doc-tests {krate}")), false)),
            Line::Result { passed, failed, ignored } => {
                let (part, seen) = self.current();
                part.passed += passed;
                part.failed += failed;
                part.ignored += ignored;
                *seen = true;
            }
            Line::Skipped(text) => {
                let text = text.to_string();
                match self.parts.last_mut() {
                    Some((part, _)) => part.skips.push(text),
                    None => self.loose.skips.push(text),
                }
            }
            Line::Other => {}
        }
    }

    fn current(&mut self) -> &mut (PartResult, bool) {
        if self.parts.is_empty() {
            self.parts.push((PartResult::named("(unnamed test binary)"), false));
        }
        let last = self.parts.len() - 1;
        &mut self.parts[last]
    }

    /// The parts, once the command ended with `status` (0: success). A part whose binary never
    /// printed its result ended early (a crash, a kill): one failure. A failed command that
    /// printed no part at all is one failure too.
    pub fn finish(mut self, command: &str, status: i32) -> HostResults {
        let mut out = HostResults::default();
        if status != 0 {
            out.failed_commands.push(command.to_string());
            if self.parts.is_empty() {
                let mut p = PartResult::named(command);
                p.failed = 1;
                p.note = Some(format!("ended with status {status} before its result"));
                self.parts.push((p, true));
            }
        }
        if !self.loose.skips.is_empty() {
            out.parts.push(self.loose);
        }
        for (mut part, seen) in self.parts {
            // libtest always ends with its result line, even for no tests: without one, the
            // binary crashed, was killed, or is not a test harness.
            if !seen {
                part.failed += 1;
                part.note = Some(format!("no test result: it ended early (the command's status {status})"));
            }
            out.parts.push(part);
        }
        out
    }
}

/// `bad_input-2039bd6147e7b8af` -> `bad_input`.
fn strip_hash(exe: &str) -> &str {
    match exe.rsplit_once('-') {
        Some((stem, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => stem,
        _ => exe,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(text: &str, names: &[(&str, &str)], status: i32) -> HostResults {
        let names = names.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let mut c = Collector::new(names, None);
        text.lines().for_each(|l| c.feed(l));
        c.finish("cargo test", status)
    }

    #[test]
    fn result_lines_parse_ok_and_failed() {
        assert_eq!(
            Line::parse(
                "test result: ok. 7 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 12.94s"
            ),
            Line::Result { passed: 7, failed: 0, ignored: 1 }
        );
        assert_eq!(
            Line::parse(
                "test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.37s"
            ),
            Line::Result { passed: 1, failed: 1, ignored: 0 }
        );
        assert_eq!(Line::parse("test result: garbled"), Line::Other);
        assert_eq!(Line::parse("  test result: ok. 1 passed; 0 failed"), Line::Other);
    }

    #[test]
    fn headers_name_the_executable_and_the_doctest_crate() {
        assert_eq!(
            Line::parse("     Running tests/bad_input.rs (target/debug/deps/bad_input-2039bd6147e7b8af)"),
            Line::Running("bad_input-2039bd6147e7b8af")
        );
        assert_eq!(
            Line::parse("     Running unittests src/lib.rs (target/debug/deps/cvbench_registry-ca36cc9a1fa562ee)"),
            Line::Running("cvbench_registry-ca36cc9a1fa562ee")
        );
        assert_eq!(Line::parse("   Doc-tests cvbench_registry"), Line::DocTests("cvbench_registry"));
    }

    #[test]
    fn skips_count_at_a_line_start_or_after_a_test_name_only() {
        assert_eq!(Line::parse("SKIPPED: [root] x needs root"), Line::Skipped("SKIPPED: [root] x needs root"));
        assert_eq!(Line::parse("test a::b ... SKIPPED: [kvm] no kvm"), Line::Skipped("SKIPPED: [kvm] no kvm"));
        assert_eq!(Line::parse("  1x SKIPPED: [root] x"), Line::Other);
        assert_eq!(Line::parse("note: SKIPPED: x"), Line::Other);
    }

    #[test]
    fn registry_output_folds_into_one_part_per_binary() {
        let r = collect(
            include_str!("../fixtures/registry-human.txt"),
            &[("bad_input-2039bd6147e7b8af", "cvbench-registry:bad_input")],
            0,
        );
        let names: Vec<&str> = r.parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["cvbench_registry", "cvbench-registry:bad_input", "roundtrip", "Doc-tests cvbench_registry"]
        );
        assert_eq!(r.parts[1].passed, 8);
        assert_eq!(r.parts[2].skips.len(), 1);
        assert!(r.parts[2].skips[0].starts_with("SKIPPED: workload binary "));
        let t = r.tally();
        assert_eq!((t.passed, t.failed, t.skipped), (26, 0, 1));
        assert!(r.ok());
    }

    #[test]
    fn a_failing_and_a_crashing_binary_are_both_failures() {
        let r = collect(include_str!("../fixtures/failing-human.txt"), &[], 101);
        let by_name = |n: &str| r.parts.iter().find(|p| p.name == n).unwrap();
        assert_eq!(by_name("failfix").skips, ["SKIPPED: [root] needs root (euid 1000)"]);
        assert_eq!(by_name("failfix").ignored, 1);
        assert_eq!((by_name("bad").passed, by_name("bad").failed), (1, 1));
        // SIGABRT before its result: counted as one failure, with why.
        assert_eq!(by_name("crash").failed, 1);
        assert!(by_name("crash").note.is_some());
        assert_eq!(r.failed_commands, ["cargo test"]);
        let t = r.tally();
        assert_eq!((t.passed, t.failed, t.skipped), (2, 2, 1));
    }

    #[test]
    fn a_command_that_printed_nothing_and_failed_is_one_failure() {
        let r = collect("error: could not compile `x`\n", &[], 101);
        assert_eq!(r.tally().failed, 1);
        assert_eq!(r.parts.len(), 1);
    }

    #[test]
    fn a_directly_run_binary_counts_into_its_named_part() {
        let mut c = Collector::new(HashMap::new(), Some("cvbench-runtime:oci"));
        c.feed("SKIPPED: [other] no crun");
        c.feed("test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s");
        let r = c.finish("oci", 0);
        assert_eq!(r.parts.len(), 1);
        assert_eq!(r.parts[0].one_line(), "cvbench-runtime:oci: 2 passed, 0 failed, 1 skipped");
    }

    #[test]
    fn a_killed_binary_with_no_output_is_one_failure() {
        let c = Collector::new(HashMap::new(), Some("cvbench-microvm:bare"));
        let r = c.finish("bare", 124);
        assert_eq!(r.tally().failed, 1);
        assert_eq!(r.parts[0].name, "cvbench-microvm:bare");
    }

    #[test]
    fn hashes_are_stripped_only_when_they_look_like_cargo_s() {
        assert_eq!(strip_hash("bad_input-2039bd6147e7b8af"), "bad_input");
        assert_eq!(strip_hash("leaks-not-a-hash"), "leaks-not-a-hash");
    }
}
