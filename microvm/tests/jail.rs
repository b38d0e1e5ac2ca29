//! The VMM jails itself before guest code runs: while a bare guest runs, its
//! `/proc/<pid>/status` shows no capabilities, seccomp filter mode and no_new_privs, and its
//! mount namespace is its own; a system call outside the allow-list ends that VMM alone,
//! with the call named; `--no-jail` leaves it unconfined and the stats say so. Needs root and
//! /dev/kvm; otherwise `SKIPPED: <reason>`.

use std::io::{BufRead, BufReader};
use std::process::{ChildStdout, Command, Stdio};

use cvbench_microvm::stats::BareStats;
use cvbench_testkit::Reap;

mod common;
use common::{require_kvm, vmm, workload};

/// A bare VMM running `idle` until its stdin closes, after its READY line.
fn idle_vmm(extra: &[&str]) -> (Reap, BufReader<ChildStdout>) {
    let mut child = Command::new(vmm())
        .arg("bare")
        .arg("--elf")
        .arg(workload())
        .args(extra)
        .args(["--timeout-s", "60", "--", "idle"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn cvbench-vmm");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("READY line");
    assert_eq!(line.trim(), "READY");
    (Reap::new(child), out)
}

fn status_field(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with(&format!("{key}:"))).unwrap_or_else(|| panic!("{key}"));
    line[key.len() + 1..].trim().to_string()
}

#[test]
fn a_running_jailed_vmm_has_no_capabilities_a_seccomp_filter_and_no_new_privs() {
    require_kvm!("the jail tests");
    let (mut vmm, _out) = idle_vmm(&[]);
    let pid = vmm.id();
    for cap in ["CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(pid, cap), "0000000000000000", "{cap}");
    }
    assert_eq!(status_field(pid, "Seccomp"), "2");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).expect("mnt ns");
    assert_ne!(ns(&pid.to_string()), ns("self"), "the VMM kept the host's mount namespace");
    drop(vmm.stdin.take()); // idle ends
    let status = vmm.wait().expect("wait");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_system_call_outside_the_allow_list_kills_only_that_vmm_and_names_the_call() {
    require_kvm!("the jail tests");
    let (mut bystander, _out) = idle_vmm(&[]);
    let out = Command::new(vmm())
        .arg("bare")
        .arg("--elf")
        .arg(workload())
        .args(["--selftest-forbidden-syscall", "--", "noop"])
        .output()
        .expect("run cvbench-vmm");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(cvbench_microvm::jail::seccomp::EXIT_SECCOMP), "{stderr}");
    assert!(stderr.contains(&format!("seccomp: blocked system call {}", libc::SYS_getcwd)), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("READY"), "the guest ran after the violation");
    assert_eq!(bystander.try_wait().expect("try_wait"), None, "another VMM died too");
    drop(bystander.stdin.take());
    assert!(bystander.wait().expect("wait").success());
}

#[test]
fn no_jail_leaves_the_vmm_unconfined_and_the_stats_say_so() {
    require_kvm!("the jail tests");
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.json");
    let (mut vmm, _out) = idle_vmm(&["--no-jail", "--stats-json", stats.to_str().unwrap()]);
    assert_eq!(status_field(vmm.id(), "Seccomp"), "0");
    drop(vmm.stdin.take());
    assert!(vmm.wait().expect("wait").success());
    let s: BareStats = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert!(!s.jailed);
    assert_eq!(s.seccomp_allowed_syscalls, None);
    assert!(!s.phases.iter().any(|(p, _)| p == "jail"));
}
