//! Skips that are loud, counted and, inside the test host, failures.
//!
//! A test that cannot run on a machine prints one `SKIPPED: <reason>` line on stderr;
//! `scripts/test` counts those lines and lists their reasons in its summary. Inside the test host
//! (`scripts/testhost` sets `CVBENCH_TESTHOST=1`), root, hardware-semantics KVM and cgroup v2 are
//! all present by construction, so a skip for lack of one of them means the test (or the test host)
//! is broken: [`skip`] panics there instead of skipping. [`Reap`] keeps a test's child process from
//! outliving a failed assertion.

mod reap;
pub use reap::Reap;

/// What a test needs that the machine may lack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Running as root.
    Root,
    /// A usable `/dev/kvm` (or one with hardware semantics, not kvm_pvm).
    Kvm,
    /// A pure cgroup v2 hierarchy (or a cgroup2 mount).
    CgroupV2,
    /// Anything else (an optional tool or peer): a skip everywhere.
    Other,
}

impl Need {
    fn label(self) -> &'static str {
        match self {
            Need::Root => "root",
            Need::Kvm => "kvm",
            Need::CgroupV2 => "cgroup-v2",
            Need::Other => "other",
        }
    }
}

/// True inside `scripts/testhost`.
pub fn in_testhost() -> bool {
    std::env::var_os("CVBENCH_TESTHOST").is_some_and(|v| v == "1")
}

/// Record that the calling test skips its checks for `reason`; panics inside the test host when
/// the missing thing is root, KVM or cgroup v2.
#[track_caller]
pub fn skip(need: Need, reason: &str) {
    if forbidden(need, in_testhost()) {
        panic!("inside the test host this must not be skipped (needs {}): {reason}", need.label());
    }
    eprintln!("SKIPPED: [{}] {reason}", need.label());
}

/// Whether a skip for `need` is a failure: inside the test host, for root, KVM or cgroup v2.
fn forbidden(need: Need, testhost: bool) -> bool {
    need != Need::Other && testhost
}

/// `true` when running as root; otherwise skips (see [`skip`]) naming `what`.
#[track_caller]
pub fn require_root(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        skip(Need::Root, &format!("{what} needs root (euid {euid})"));
        return false;
    }
    true
}

/// `true` when running as root and `kvm` — the caller's KVM probe, e.g.
/// `|| cvbench_microvm::kvm_probe().usable()` — finds KVM usable; otherwise one skip (see
/// [`skip`]) saying which of the two `what` lacks. Root is asked first: the probe may need it.
#[track_caller]
pub fn require_root_and_kvm<T, E: std::fmt::Display>(what: &str, kvm: impl FnOnce() -> Result<T, E>) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        skip(Need::Root, &format!("{what} needs root (euid {euid})"));
        return false;
    }
    match kvm() {
        Ok(_) => true,
        Err(why) => {
            skip(Need::Kvm, &format!("{what} needs a usable /dev/kvm: {why}"));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_kvm_and_cgroup_v2_skips_are_forbidden_and_only_in_the_test_host() {
        // (Not by calling `skip`: its line would count as a skip in the tally.)
        assert!(!forbidden(Need::Other, true));
        for need in [Need::Root, Need::Kvm, Need::CgroupV2] {
            assert!(forbidden(need, true));
            assert!(!forbidden(need, false));
        }
    }

    #[test]
    fn labels_name_what_was_missing() {
        assert_eq!(Need::CgroupV2.label(), "cgroup-v2");
        assert_eq!(Need::Kvm.label(), "kvm");
    }
}
