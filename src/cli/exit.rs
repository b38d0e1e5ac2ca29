//! Exit codes and the errors that pick them: 0 ok, 1 a run failed, 2 the
//! command line was wrong, 3 this host cannot run what was asked.

use std::fmt;

pub const OK: i32 = 0;
pub const RUN_FAILED: i32 = 1;
pub const USAGE: i32 = 2;
pub const CANNOT_RUN_HERE: i32 = 3;
/// Stopped by SIGINT/SIGTERM (the shell's 128 + SIGINT).
pub const INTERRUPTED: i32 = 130;

/// The text `--help` and the README show.
pub const HELP: &str = "\
Exit codes:
  0    success
  1    a run failed (its record, with the error, is still printed)
  2    usage error (bad flag, value or combination)
  3    this host cannot run what was asked (not root, no /dev/kvm, kernel not built, peer not installed)
  130  interrupted (Ctrl-C); what was measured so far is kept";

/// This host cannot run what was asked: what, why, and the fix.
#[derive(Debug)]
pub struct CannotRun {
    pub what: String,
    pub why: String,
    pub fix: Option<String>,
}

impl fmt::Display for CannotRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cannot run on this host: {}", self.what, self.why)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n  fix: {fix}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CannotRun {}

/// A combination of flags clap cannot reject by itself.
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// The exit code for an error that ended the command.
pub fn code_for(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<CannotRun>().is_some() {
        CANNOT_RUN_HERE
    } else if e.downcast_ref::<Usage>().is_some() {
        USAGE
    } else {
        RUN_FAILED
    }
}

/// A hint for errors a newcomer meets mid-run, recognised by their OS error
/// (the chain ends in the io::Error's text).
pub fn hint_for(error: &str) -> Option<&'static str> {
    if error.contains("os error 98") || error.contains("Address already in use") {
        Some("a port the run needs is taken: find the holder with `ss -ltnp`, stop it, or try again (ports are picked fresh each run)")
    } else if error.contains("os error 28") || error.contains("No space left on device") {
        Some("the disk is full: `cvbench gc` removes what crashed runs left under /var/lib/cvbench; `df -h /var/lib/cvbench /var/tmp` shows what is left")
    } else if error.contains("os error 1)") || error.contains("os error 13") {
        Some("permission denied: run as root (`sudo -E cvbench ...`)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cannot_run_maps_to_3() {
        let e = anyhow::Error::new(CannotRun { what: "x".into(), why: "y".into(), fix: None });
        assert_eq!(code_for(&e), CANNOT_RUN_HERE);
    }

    #[test]
    fn cannot_run_keeps_its_code_under_context() {
        let e = anyhow::Error::new(CannotRun { what: "x".into(), why: "y".into(), fix: None }).context("while z");
        assert_eq!(code_for(&e), CANNOT_RUN_HERE);
    }

    #[test]
    fn usage_maps_to_2_and_anything_else_to_1() {
        assert_eq!(code_for(&anyhow::Error::new(Usage("bad".into()))), USAGE);
        assert_eq!(code_for(&anyhow::anyhow!("boom")), RUN_FAILED);
    }

    #[test]
    fn full_disk_and_busy_port_get_a_fix() {
        assert!(hint_for("writing layer: No space left on device (os error 28)").unwrap().contains("cvbench gc"));
        assert!(hint_for("bind: Address already in use (os error 98)").unwrap().contains("ss -ltnp"));
        assert_eq!(hint_for("the guest said no"), None);
    }
}
