//! `cvbench-kvm-floor`, the KVM floor the `floor/kvm` bench execs, really runs a guest: it exits 0
//! only when the guest's `out` reached the VMM with the expected port and byte, and says why
//! when it cannot open `/dev/kvm`. Needs /dev/kvm (the first test); otherwise `SKIPPED: <reason>`.

use std::process::Command;

use cvbench_testkit::{skip, Need};

const FLOOR: &str = env!("CARGO_BIN_EXE_cvbench-kvm-floor");

#[test]
fn kvm_floor_runs_its_guest_to_the_expected_io_exit() {
    if let Err(why) = cvbench_microvm::kvm_probe().usable() {
        skip(Need::Kvm, &format!("the KVM floor needs a usable /dev/kvm: {why}"));
        return;
    }
    let out = Command::new(FLOOR).output().expect("spawn cvbench-kvm-floor");
    assert!(out.status.success(), "cvbench-kvm-floor failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "unexpected stderr: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn kvm_floor_names_dev_kvm_when_it_cannot_run() {
    // A private mount namespace with /dev/kvm hidden: the floor must fail and say which step.
    let status = Command::new("unshare").args(["--mount", "true"]).status();
    if !matches!(status, Ok(s) if s.success()) {
        skip(Need::Root, "hiding /dev/kvm needs `unshare --mount` (root)");
        return;
    }
    let script = format!("mount -t tmpfs none /dev && exec {FLOOR}");
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("spawn unshare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the floor succeeded without /dev/kvm");
    assert!(stderr.contains("open /dev/kvm"), "stderr does not name the step: {stderr}");
}
