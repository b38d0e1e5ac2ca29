//! Plain-text rendering of a lab's observations: aligned tables, the check
//! list ("PID inside container is 1: yes") and what could not be shown.

use std::fmt::Write as _;

use super::{CheckKind, LabReport};

/// A titled table of strings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, headers: &[&str]) -> Table {
        Table { title: title.to_string(), headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// The table as aligned text, one line per row, headers underlined.
    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).chain([self.headers.len()]).max().unwrap_or(0);
        let mut width = vec![0usize; cols];
        for r in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, c) in r.iter().enumerate() {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| -> String {
            let mut s = String::new();
            for (i, w) in width.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = w - c.chars().count();
                s.push_str(c);
                if i + 1 < cols {
                    s.push_str(&" ".repeat(pad + 2));
                }
            }
            s.trim_end().to_string()
        };
        let mut out = String::new();
        if !self.title.is_empty() {
            let _ = writeln!(out, "{}", self.title);
        }
        let _ = writeln!(out, "{}", line(&self.headers));
        let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
        let _ = writeln!(out, "{}", line(&rule));
        for r in &self.rows {
            let _ = writeln!(out, "{}", line(r));
        }
        out
    }
}

/// The whole report as text: title, tables, checks, what is unavailable.
pub fn render(r: &LabReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}\n{}\n", r.title, "=".repeat(r.title.chars().count()));
    for t in &r.tables {
        let _ = writeln!(out, "{}", t.render());
    }
    if !r.checks.is_empty() {
        let _ = writeln!(out, "checks");
        for c in &r.checks {
            let mark = match (c.ok, c.kind) {
                (true, _) => "ok  ",
                (false, CheckKind::Behaviour) => "FAIL",
                (false, CheckKind::Claim) => "DOES NOT HOLD HERE",
            };
            if c.detail.is_empty() {
                let _ = writeln!(out, "  [{mark}] {}", c.what);
            } else {
                let _ = writeln!(out, "  [{mark}] {}: {}", c.what, c.detail);
            }
        }
        let _ = writeln!(out);
    }
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    for u in &r.unavailable {
        let _ = writeln!(out, "CANNOT SHOW HERE: {u}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_are_aligned() {
        let mut t = Table::new("t", &["a", "bbbb"]);
        t.row(["long cell", "x"]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "a          bbbb");
        assert_eq!(lines[3], "long cell  x");
    }

    #[test]
    fn report_shows_failed_checks_and_unavailable_parts() {
        let mut r = LabReport { title: "Lab 9".into(), ..Default::default() };
        r.check("PID inside container is 1", false, "no (pid 7)");
        r.unavailable("no /dev/kvm");
        let text = render(&r);
        assert!(text.contains("[FAIL] PID inside container is 1: no (pid 7)"));
        assert!(text.contains("CANNOT SHOW HERE: no /dev/kvm"));
    }

    #[test]
    fn a_claim_that_does_not_hold_is_reported_but_does_not_fail_the_lab() {
        let mut r = LabReport { title: "Lab 9".into(), ..Default::default() };
        r.claim("container CPU ≈ native", false, "no (1.4×)");
        assert!(render(&r).contains("[DOES NOT HOLD HERE] container CPU ≈ native: no (1.4×)"));
        assert_eq!(r.outcome(), super::super::Outcome::Passed);
        r.check("PID inside container is 1", false, "no");
        assert_eq!(r.outcome(), super::super::Outcome::Failed);
    }
}
