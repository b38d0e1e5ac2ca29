//! Bare-VM snapshots end to end with the real `cvbench-vmm`: the workload (`wait-go`) is saved
//! while it blocks for its go line, restored lazily and eagerly, and runs its job; and each bad
//! snapshot is refused before a guest starts, with a message naming the file and the fault: a
//! snapshot from another format version, another memory size, a truncated memory file, a
//! state file whose checksum fails, and a workload that exits before it could be saved (which
//! leaves no files). Needs root and /dev/kvm; otherwise `SKIPPED: <reason>`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;
use common::{require_kvm, vmm, workload};

/// Take a snapshot of `wait-go --job <job...>` with 64 MiB of guest memory into `dir`.
fn take(dir: &Path, job: &[&str]) -> Output {
    Command::new(vmm())
        .args(["bare", "--mem-mib", "64", "--timeout-s", "60", "--elf"])
        .arg(workload())
        .arg("--snapshot-to")
        .arg(dir)
        .arg("--")
        .args(job)
        .stdin(Stdio::null())
        .output()
        .expect("run cvbench-vmm bare")
}

/// Restore from `dir` with `extra` flags, sending the go line.
fn restore(dir: &Path, extra: &[&str]) -> Output {
    let mut child = Command::new(vmm())
        .args(["bare-restore", "--timeout-s", "60", "--snapshot"])
        .arg(dir)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cvbench-vmm bare-restore");
    // The VMM may refuse before it reads: a closed pipe is fine then.
    let _ = child.stdin.take().expect("stdin").write_all(b"go\n");
    child.wait_with_output().expect("wait for cvbench-vmm")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn snapshot(job: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let o = take(dir.path(), job);
    assert!(o.status.success(), "snapshot failed: {}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "READY\n", "only READY is printed before the snapshot");
    dir
}

/// Re-frame an edited state body with a correct checksum, as a careful forger would.
fn reframe(dir: &Path, edit: impl Fn(&mut serde_json::Value)) {
    use sha2::Digest;
    let path = dir.join("state");
    let text = std::fs::read_to_string(&path).unwrap();
    let (header, body) = text.split_once('\n').unwrap();
    let mut v: serde_json::Value = serde_json::from_str(body).unwrap();
    edit(&mut v);
    let body = serde_json::to_string(&v).unwrap();
    let hex: String = sha2::Sha256::digest(body.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let version = header.split(' ').nth(2).unwrap();
    std::fs::write(&path, format!("cvbench-snapshot bare {version} sha256:{hex}\n{body}")).unwrap();
}

#[test]
fn a_restored_guest_runs_its_job_with_lazy_and_eager_memory() {
    require_kvm!("bare micro-VM snapshot tests (the VMM jails itself)");
    let dir =
        snapshot(&["wait-go", "--job", "mem-touch", "--touch-mib", "4", "--chase-mib", "1", "--accesses", "1000"]);
    for load in ["lazy", "eager"] {
        let stats = dir.path().join(format!("stats-{load}.json"));
        let o = restore(dir.path(), &["--load", load, "--stats-json", stats.to_str().unwrap()]);
        assert!(o.status.success(), "{load}: {}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        let line: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
        assert_eq!(line["workload"], "mem-touch", "{out}");
        assert_eq!(line["metrics"]["touch_pages"], 1024.0, "{out}");
        let s: cvbench_microvm::stats::BareStats = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
        let r = s.restore.expect("restore info");
        assert_eq!(r.load.name(), load);
        // The job first-touches 1024 fresh pages, faults of the VMM process: one per 4 KiB page
        // under kvm_pvm's shadow paging, far fewer with THP under hardware KVM (the test host
        // counted 2 for eager), so the test asserts that faults happened, not how many.
        assert!(r.minflt_after_restore >= 1, "{load}: {r:?}");
    }
}

#[test]
fn a_snapshot_restores_more_than_once() {
    require_kvm!("bare micro-VM snapshot tests (the VMM jails itself)");
    let dir = snapshot(&["wait-go", "--job", "noop"]);
    for _ in 0..2 {
        let o = restore(dir.path(), &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("\"job_ns\""));
    }
}

#[test]
fn a_workload_that_exits_before_blocking_leaves_nothing_and_says_so() {
    require_kvm!("bare micro-VM snapshot tests (the VMM jails itself)");
    let dir = tempfile::tempdir().unwrap();
    let o = take(dir.path(), &["noop"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("no snapshot written to") && e.contains("exited with status 0"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "files left behind");
}

#[test]
fn a_state_file_from_another_format_version_is_refused() {
    require_kvm!("bare micro-VM snapshot tests (the VMM jails itself)");
    let dir = snapshot(&["wait-go", "--job", "noop"]);
    let path = dir.path().join("state");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen(" v1 ", " v2 ", 1)).unwrap();
    let o = restore(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(125));
    let e = stderr(&o);
    assert!(e.contains(path.to_str().unwrap()) && e.contains("format version 2"), "{e}");
    assert!(o.stdout.is_empty(), "a guest ran: {}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn a_state_file_whose_checksum_fails_is_refused() {
    require_kvm!("bare micro-VM snapshot tests (the VMM jails itself)");
    let dir = snapshot(&["wait-go", "--job", "noop"]);
    let path = dir.path().join("state");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"blocked_signals\": 0", "\"blocked_signals\": 1", 1)).unwrap();
    let o = restore(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(125));
    let e = stderr(&o);
    assert!(e.contains(path.to_str().unwrap()) && e.contains("fails its checksum"), "{e}");
    assert!(o.stdout.is_empty());
}

#[test]
fn a_truncated_memory_file_is_refused() {
    require_kvm!("bare micro-VM snapshot tests (the VMM jails itself)");
    let dir = snapshot(&["wait-go", "--job", "noop"]);
    let mem = dir.path().join("memory");
    std::fs::OpenOptions::new().write(true).open(&mem).unwrap().set_len(32 << 20).unwrap();
    let o = restore(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(125));
    let e = stderr(&o);
    assert!(e.contains(mem.to_str().unwrap()) && e.contains("truncated"), "{e}");
    assert!(o.stdout.is_empty());
}

#[test]
fn a_snapshot_of_another_memory_size_is_refused() {
    require_kvm!("bare micro-VM snapshot tests (the VMM jails itself)");
    let dir = snapshot(&["wait-go", "--job", "noop"]);
    let o = restore(dir.path(), &["--mem-mib", "128"]);
    assert_eq!(o.status.code(), Some(125));
    let e = stderr(&o);
    assert!(e.contains("memory") && e.contains("64 MiB") && e.contains("128 MiB"), "{e}");
    assert!(o.stdout.is_empty());
}

/// One change to a state body.
type Edit = Box<dyn Fn(&mut serde_json::Value)>;

#[test]
fn a_forged_state_with_a_good_checksum_is_still_bounded() {
    require_kvm!("bare micro-VM snapshot tests (the VMM jails itself)");
    let dir = snapshot(&["wait-go", "--job", "noop"]);
    let original = std::fs::read(dir.path().join("state")).unwrap();
    let cases: Vec<(&str, Edit)> = vec![
        ("memory size", Box::new(|v| v["mem_size"] = (128u64 << 20).into())),
        ("descriptor", Box::new(|v| v["service"]["fds"][0]["fd"] = 100_000.into())),
        ("heap range", Box::new(|v| v["service"]["heap_free"][0][0] = 4096.into())),
        ("pending call", Box::new(|v| v["regs"]["rax"] = 1.into())),
    ];
    for (what, edit) in cases {
        std::fs::write(dir.path().join("state"), &original).unwrap();
        reframe(dir.path(), edit);
        let o = restore(dir.path(), &[]);
        assert_eq!(o.status.code(), Some(125), "{what}: {}", stderr(&o));
        assert!(stderr(&o).contains(dir.path().to_str().unwrap()), "{what}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{what}: a guest ran");
    }
}
