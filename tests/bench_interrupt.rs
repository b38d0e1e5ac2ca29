//! Ctrl-C during `cvbench bench --quick`, once a container, a qemu and a docker unit have run:
//! the bench exits 130, keeps the partial result set, and leaves nothing of its own behind
//! (processes, files under /run, /dev/shm and the state dir, mounts, links, netns, cgroups).
//! Everything the bench makes carries its pid (`cvbench-<pid>-…`, `cvbd-<pid>`,
//! `cvb-docker-<pid>-…`), so other programs' resources on the machine do not disturb the check.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cvbench::record::RunRecord;
use cvbench::results::ResultSet;

/// Backends that have a record in `records.jsonl` so far.
fn backends_seen(records: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(records).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str::<RunRecord>(l).ok()).map(|r| r.backend).collect()
}

fn names_under(dir: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| format!("{dir}/{}", e.file_name().to_string_lossy())).collect())
        .unwrap_or_default()
}

fn cgroups_named(dir: &Path, depth: u32, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.push(p.display().to_string());
            if depth > 0 {
                cgroups_named(&p, depth - 1, out);
            }
        }
    }
}

/// Every host object or process whose name or command line carries one of `marks`.
fn leftovers(marks: &[String], bench_pid: u32) -> Vec<String> {
    let hit = |s: &str| marks.iter().any(|m| s.contains(m.as_str()));
    let mut found = Vec::new();
    for dir in ["/run", "/dev/shm", "/dev/shm/cvbench/containers", "/run/cvbench/containers", "/run/netns"] {
        found.extend(names_under(dir).into_iter().filter(|n| hit(n)));
    }
    for dir in ["/var/lib/cvbench/tmp", "/var/tmp", "/tmp"] {
        found.extend(names_under(dir).into_iter().filter(|n| hit(n)));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    found.extend(mounts.lines().filter(|l| hit(l)).map(|l| format!("mount {l}")));
    let links = Command::new("ip").args(["-o", "link"]).output().map(|o| o.stdout).unwrap_or_default();
    found.extend(String::from_utf8_lossy(&links).lines().filter(|l| hit(l)).map(|l| format!("link {l}")));
    let mut cgroups = Vec::new();
    cgroups_named(Path::new("/sys/fs/cgroup"), 3, &mut cgroups);
    found.extend(cgroups.into_iter().filter(|c| hit(c)).map(|c| format!("cgroup {c}")));
    for p in names_under("/proc") {
        let Some(pid) = p.rsplit('/').next().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let cmd = std::fs::read(format!("{p}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let stat = std::fs::read_to_string(format!("{p}/stat")).unwrap_or_default();
        // Field 5 (after the command in parentheses) is the process group.
        let pgrp = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(2)?.parse::<u32>().ok());
        if pid != bench_pid && (pgrp == Some(bench_pid) || hit(&cmd)) {
            found.push(format!("process {pid}: {cmd}"));
        }
    }
    found
}

#[test]
fn ctrl_c_during_quick_bench_keeps_partial_results_and_leaves_nothing() {
    if !cvbench::env::is_root() {
        eprintln!("SKIPPED: the matrix needs root (containers, cgroups)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (results, reports) = (dir.path().join("results"), dir.path().join("reports"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_cvbench"))
        .args(["bench", "--quick"])
        .arg("--results")
        .arg(&results)
        .arg("--out")
        .arg(&reports)
        // Its own process group, as a shell job: Ctrl-C reaches the whole group.
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut marks = vec![format!("cvbench-{pid}-"), format!("cvbd-{pid}"), format!("cvb-docker-{pid}-")];
    for kind in ["crun", "runc", "cvbench-runtime", "docker", "qemu-initrd", "microvm-initrd"] {
        marks.push(format!("cvbench-{kind}-{pid}"));
    }
    let records = results.join(cvbench::results::RECORDS);
    let want = ["container", "qemu", "docker"];
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut seen = BTreeSet::new();
    while Instant::now() < deadline {
        seen = backends_seen(&records);
        if want.iter().all(|b| seen.contains(*b)) {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the bench ended before the interruption: {seen:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for b in want {
        if !seen.contains(b) {
            eprintln!("SKIPPED (part): no {b} record before the interruption (unavailable here?)");
        }
    }
    assert!(seen.contains("container"), "no container unit ran: {seen:?}");

    // Ctrl-C: SIGINT to the bench's process group.
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);

    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let set = ResultSet::read_dir(&results).unwrap();
    let kept: BTreeSet<&str> = set.records.iter().map(|r| r.backend.as_str()).collect();
    assert!(kept.contains("container"), "partial result set lost the container records: {kept:?}");
    // Removal of cgroups and the private dockerd's state can take a moment after exit.
    let mut left = leftovers(&marks, pid);
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = leftovers(&marks, pid);
    }
    assert!(left.is_empty(), "left behind: {left:#?}\n{stderr}");
}
