//! The bare VM's forwarded I/O stays inside the run's grant: a guest program
//! (`tests/guest/confine.rs`, built here with plain `rustc`) tries files outside the run
//! directory, `..`, a symlink planted in the run directory, /proc/self/mem, a TCP connection
//! to 127.0.0.1, an AF_PACKET socket and a write far past the file-size bound. Every attempt
//! must be refused with -EPERM and counted, the run must go on to use what it is granted, and
//! nothing outside the run directory may change. Needs root (network namespaces) and
//! /dev/kvm; otherwise `SKIPPED: <reason>`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cvbench_microvm::stats::BareStats;
use cvbench_testkit::Reap;

/// Root (namespaces, the jail) and a usable KVM, or a loud skip.
fn runnable() -> bool {
    cvbench_testkit::require_root_and_kvm("the confinement test (network namespaces)", || {
        cvbench_microvm::kvm_probe().usable()
    })
}

/// Build the probe guest into `dir`.
fn build_probe(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest/confine.rs");
    let out = dir.join("confine");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(rustc)
        .args(["--edition", "2021", "-O", "-C", "panic=abort", "-C", "relocation-model=static"])
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib", "-C", "link-arg=-static"])
        .args(["-C", "link-arg=-no-pie", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("run rustc");
    assert!(status.success(), "building {} failed", src.display());
    out
}

/// A process alone in a fresh network namespace: the run's (empty) peer.
fn peer_namespace() -> Reap {
    let mut cmd = Command::new("sleep");
    cmd.arg("120");
    // SAFETY: the closure runs between fork and exec and only calls unshare(2), which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Reap::new(cmd.spawn().expect("spawn the peer namespace holder"))
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn every_reach_past_the_grant_is_refused_and_the_run_continues() {
    if !runnable() {
        return;
    }
    let top = tempfile::tempdir().unwrap();
    let probe = build_probe(top.path());
    let run = top.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", run.join("link")).unwrap();
    let passwd_before = std::fs::read("/etc/passwd").unwrap();
    let top_before = listing(top.path());
    let peer = peer_namespace();
    let stats_path = top.path().join("stats.json");

    let out = Command::new(env!("CARGO_BIN_EXE_cvbench-vmm"))
        .arg("bare")
        .arg("--elf")
        .arg(&probe)
        .arg("--run-dir")
        .arg(&run)
        .args(["--net-peer-pid", &peer.id().to_string(), "--net-peer", "10.204.0.1:5201"])
        .args(["--net-local-ip", "10.204.0.2", "--timeout-s", "60"])
        .arg("--stats-json")
        .arg(&stats_path)
        .current_dir(&run)
        .output()
        .expect("run cvbench-vmm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{stdout}\n{stderr}", out.status);

    let value = |name: &str| -> i64 {
        let line = stdout.lines().find(|l| l.starts_with(&format!("{name}="))).unwrap_or_else(|| panic!("{stdout}"));
        line[name.len() + 1..].parse().unwrap()
    };
    let eperm = -i64::from(libc::EPERM);
    for name in [
        "etc_passwd",
        "dotdot",
        "symlink",
        "proc_mem",
        "unlink_dotdot",
        "connect_loopback",
        "packet_socket",
        "huge_pwrite",
    ] {
        assert_eq!(value(name), eperm, "{name} was not refused with EPERM:\n{stdout}\n{stderr}");
    }
    // What the run is granted still works, after all the refusals.
    assert!(value("tcp_socket") >= 3, "{stdout}");
    assert!(value("granted_open") >= 3, "{stdout}");
    assert_eq!(value("granted_write"), 2, "{stdout}");
    assert!(stdout.contains("done"), "{stdout}");
    assert_eq!(std::fs::read(run.join("granted.txt")).unwrap(), b"hi");

    let stats: BareStats = serde_json::from_slice(&std::fs::read(&stats_path).unwrap()).unwrap();
    assert_eq!(stats.refused_calls, 8, "{:?}", stats.refusals);
    assert!(stderr.contains("refused guest connect"), "{stderr}");
    // Nothing outside the run directory changed.
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd_before);
    let mut top_after = listing(top.path());
    top_after.retain(|n| n != "stats.json");
    assert_eq!(top_after, top_before);
    assert_eq!(listing(&run), ["granted.txt", "link"]);
    assert_eq!(std::fs::metadata(run.join("granted.txt")).unwrap().len(), 2, "the huge write grew the file");
}
