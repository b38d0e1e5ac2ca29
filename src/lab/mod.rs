//! The course labs' live experiments (`cvbench lab N`): each lab runs its
//! experiment with the suite's own APIs, returns what it observed as tables
//! plus checks, and says honestly what this host could not show.

pub mod bare_vm;
pub mod cgroups;
pub mod commands;
pub mod images;
pub mod linux_boot;
pub mod live;
pub mod namespaces;
pub mod orchestration;
pub mod overhead;
pub mod security;
pub mod table;

use crate::workload::Workload;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::backend::{self, BackendOptions};
use crate::record::RunRecord;
use crate::runner::{self, RunRequest};
pub use table::Table;

/// The labs, by number: (directory name, title).
pub const LABS: [(&str, &str); 8] = [
    ("01-namespaces", "Namespaces: what a container can see, and what that costs"),
    ("02-cgroups", "cgroups: limiting and accounting what a container uses"),
    ("03-images-overlayfs", "Images and the union filesystem"),
    ("04-vm-from-scratch", "A VM from scratch: the workload at CPL3, system calls as VM exits"),
    ("05-booting-linux", "Booting Linux in a micro-VM"),
    ("06-overhead-study", "The overhead study: containers vs VMs, against the literature"),
    ("07-orchestration", "Orchestration: managers, workers and the leader of a swarm"),
    ("08-security", "Security: seccomp, capabilities, privileged containers, user namespaces"),
];

/// Errors that stop a lab before it could observe anything.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("there is no lab {0} (the labs are 1 to {n})", n = LABS.len())]
    NoSuchLab(u8),
}

/// One checked observation, e.g. "PID inside container is 1: yes".
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub detail: String,
    pub kind: CheckKind,
}

/// What a check is about, which decides whether its failure fails the lab.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CheckKind {
    /// Something the mechanism must do (PID 1 in its namespace, an OOM kill at the limit): if it
    /// does not happen, the lab failed.
    #[default]
    Behaviour,
    /// A published performance claim held against this run's figures: whether it holds on this
    /// host, at this moment, is the finding (a busy or virtualised host can contradict it), so
    /// it is reported, never a failure of the lab.
    Claim,
}

/// Everything a lab run observed.
#[derive(Clone, Debug, Default)]
pub struct LabReport {
    pub title: String,
    pub tables: Vec<Table>,
    pub checks: Vec<Check>,
    /// What this host cannot show, each with its reason.
    pub unavailable: Vec<String>,
    /// Remarks for the reader (how to read a figure, what was skipped in --quick).
    pub notes: Vec<String>,
}

/// How a lab run ended, and the exit code `cvbench lab` uses for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every check held and everything could be shown.
    Passed,
    /// A check failed: what the lab teaches did not happen here.
    Failed,
    /// Every check that ran held, but this host cannot show part of the lab.
    Unavailable,
}

impl Outcome {
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Passed => 0,
            Outcome::Failed => 1,
            Outcome::Unavailable => 3,
        }
    }
}

impl LabReport {
    fn new(lab: u8) -> LabReport {
        let title =
            LABS.get(usize::from(lab).saturating_sub(1)).map(|(_, t)| format!("Lab {lab} — {t}")).unwrap_or_default();
        LabReport { title, ..Default::default() }
    }

    /// Record a check of behaviour: its failure fails the lab.
    pub fn check(&mut self, what: impl Into<String>, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check { what: what.into(), ok, detail: detail.into(), kind: CheckKind::Behaviour });
    }

    /// Record a published claim measured here: reported whether or not it holds.
    pub fn claim(&mut self, what: impl Into<String>, holds: bool, detail: impl Into<String>) {
        self.checks.push(Check { what: what.into(), ok: holds, detail: detail.into(), kind: CheckKind::Claim });
    }

    /// Record something this host cannot show, with the reason.
    pub fn unavailable(&mut self, reason: impl Into<String>) {
        self.unavailable.push(reason.into());
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub fn outcome(&self) -> Outcome {
        if self.checks.iter().any(|c| !c.ok && c.kind == CheckKind::Behaviour) {
            Outcome::Failed
        } else if !self.unavailable.is_empty() {
            Outcome::Unavailable
        } else {
            Outcome::Passed
        }
    }
}

/// Knobs common to every lab.
#[derive(Clone, Copy, Debug, Default)]
pub struct LabOptions {
    /// Fewer repetitions and smaller sizes (what the tests run).
    pub quick: bool,
}

impl LabOptions {
    /// Repetitions per measured cell.
    pub fn reps(&self) -> usize {
        if self.quick {
            3
        } else {
            7
        }
    }
}

/// Run lab `lab` (1..=8) live.
pub fn run(lab: u8, opts: LabOptions) -> Result<LabReport, LabError> {
    let mut r = LabReport::new(lab);
    match lab {
        1 => namespaces::run(&opts, &mut r),
        2 => cgroups::run(&opts, &mut r),
        3 => images::run(&opts, &mut r),
        4 => bare_vm::run(&opts, &mut r),
        5 => linux_boot::run(&opts, &mut r),
        6 => overhead::run(&opts, &mut r),
        7 => orchestration::run(&opts, &mut r),
        8 => security::run(&opts, &mut r),
        n => return Err(LabError::NoSuchLab(n)),
    }
    Ok(r)
}

/// The process's interrupted flag (set by the signal owner, `cvbench_signals`, on
/// SIGINT/SIGTERM): labs stop starting runs, and every guard (containers, cgroups, mounts,
/// daemons) cleans up on the way out.
pub fn stop_flag() -> &'static AtomicBool {
    cvbench_signals::flag()
}

/// Has the user asked the lab to stop?
pub fn stopped() -> bool {
    cvbench_signals::interrupted()
}

/// Print a progress line (labs take seconds to minutes).
pub(crate) fn progress(msg: &str) {
    eprintln!("  … {msg}");
}

/// A backend that passed its host check, or the reason it cannot run here.
pub(crate) fn backend_ready(id: backend::BackendId) -> Result<Box<dyn backend::Backend>, String> {
    let (name, b) = (id.name(), id.backend());
    b.check().map_err(|reason| format!("backend {name} cannot run here: {reason}"))?;
    Ok(b)
}

/// One run of `workload` on `b` through the harness runner.
pub(crate) fn run_once(
    b: &dyn backend::Backend,
    workload: Workload,
    args: &[&str],
    options: &BackendOptions,
    timeout: Duration,
) -> RunRecord {
    let mut req = RunRequest::new(workload, args.iter().map(|s| s.to_string()).collect());
    if stopped() {
        return RunRecord {
            backend: b.name().to_string(),
            workload: workload.to_string(),
            error: Some("interrupted before it started".into()),
            ..Default::default()
        };
    }
    req.options = options.clone();
    req.timeout = timeout;
    req.scenario = "lab".into();
    runner::run(b, &req)
}

/// Milliseconds with three decimals, or "-".
pub(crate) fn ms(ns: Option<u64>) -> String {
    ns.map(|n| format!("{:.3}", n as f64 / 1e6)).unwrap_or_else(|| "-".into())
}

/// "yes"/"no" for a check's detail.
pub(crate) fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_is_failed_when_any_check_fails() {
        let mut r = LabReport::new(1);
        r.check("a", true, "");
        r.check("b", false, "");
        r.unavailable("no kvm");
        assert_eq!(r.outcome(), Outcome::Failed);
        assert_eq!(r.outcome().exit_code(), 1);
    }

    #[test]
    fn outcome_is_unavailable_when_checks_hold_but_parts_are_missing() {
        let mut r = LabReport::new(5);
        r.check("a", true, "");
        r.unavailable("software KVM");
        assert_eq!(r.outcome(), Outcome::Unavailable);
        assert_eq!(r.outcome().exit_code(), 3);
    }

    #[test]
    fn unknown_lab_number_is_an_error() {
        assert!(matches!(run(9, LabOptions::default()), Err(LabError::NoSuchLab(9))));
    }

    #[test]
    fn report_title_names_the_lab() {
        assert!(LabReport::new(3).title.starts_with("Lab 3 — Images"));
    }
}
