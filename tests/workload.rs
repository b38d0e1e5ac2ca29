//! The workload binary on its own: every subcommand natively (JSON shape and
//! plausible values), bad arguments, and its system-call footprint under strace.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use cvbench::record::WorkloadOutput;

fn bin() -> PathBuf {
    cvbench::paths::workload_binary().expect("workload binary (built by build.rs)")
}

fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).stdin(Stdio::null()).output().expect("spawn workload")
}

/// Run a subcommand, check READY then one JSON line, return its metrics.
fn metrics(args: &[&str]) -> std::collections::BTreeMap<String, f64> {
    let out = run(args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?} failed: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"READY"), "{args:?}: first line must be READY: {stdout}");
    assert_eq!(lines.len(), 2, "{args:?}: expected READY + one JSON line: {stdout}");
    let o = WorkloadOutput::parse(lines[1]).unwrap_or_else(|| panic!("{args:?}: bad JSON line {}", lines[1]));
    assert_eq!(o.workload, args[0]);
    o.finite_metrics()
}

#[test]
fn noop_prints_ready_and_empty_metrics() {
    assert!(metrics(&["noop"]).is_empty());
}

#[test]
fn cpu_reports_rates_and_correct_checksums() {
    let m = metrics(&["cpu", "--sha-mib", "2", "--sieve-n", "1000000", "--matmul-n", "32"]);
    // 78498 primes below one million: the sieve computed, not guessed.
    assert_eq!(m["sieve_primes"], 78498.0);
    assert!(m["sha256_mib_per_s"] > 0.0 && m["matmul_gflops"] > 0.0 && m["elapsed_ns"] > 0.0, "{m:?}");
}

#[test]
fn mem_bw_reports_all_four_stream_kernels() {
    let m = metrics(&["mem-bw", "--array-mib", "4", "--iters", "2"]);
    for k in ["copy_gb_s", "scale_gb_s", "add_gb_s", "triad_gb_s"] {
        assert!(m[k] > 0.05 && m[k] < 10_000.0, "{k} = {}", m[k]);
    }
}

#[test]
fn mem_touch_counts_every_page() {
    let m = metrics(&["mem-touch", "--touch-mib", "8", "--chase-mib", "1", "--accesses", "10000"]);
    assert_eq!(m["touch_pages"], 2048.0);
    assert!(m["touch_ns_per_page"] > 0.0 && m["chase_ns_per_access"] > 0.0);
}

#[test]
fn syscall_cost_is_plausible() {
    let m = metrics(&["syscall", "--iters", "20000"]);
    let ns = m["ns_per_call"];
    assert!(ns > 0.0 && ns < 100_000.0, "ns_per_call = {ns}");
}

#[test]
fn disk_reports_throughput_and_iops() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let d = dir.path().to_str().unwrap();
    let m = metrics(&["disk", "--dir", d, "--size-mib", "4", "--rand-ops", "16"]);
    for k in ["seq_write_mb_s", "seq_read_mb_s", "rand_write_iops", "rand_read_iops"] {
        assert!(m[k] > 0.0, "{k} = {}", m[k]);
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "disk left its file behind");
}

#[test]
fn net_workloads_talk_to_serve_on_loopback() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Command::new(bin())
        .args(["serve", "--listen", &addr, "--max-conns", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "READY");
    let s = metrics(&["net-stream", "--peer", &addr, "--mib", "8"]);
    assert_eq!(s["bytes"], 8.0 * 1048576.0);
    assert!(s["gbit_per_s"] > 0.0);
    let r = metrics(&["net-rr", "--peer", &addr, "--requests", "200"]);
    assert!(r["p50_us"] > 0.0 && r["p99_us"] >= r["p50_us"], "{r:?}");
    // The waiting form's net-rr job (what a restored micro-VM runs over its NIC): READY, go, the
    // client's report with the wait and the job's figures added.
    let mut child = Command::new(bin())
        .args(["wait-go", "--job", "net-rr", "--peer", &addr, "--requests", "50"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let (ready, report) = text.split_once('\n').unwrap();
    assert_eq!(ready, "READY");
    let o = WorkloadOutput::parse(report.trim()).unwrap_or_else(|| panic!("bad JSON line {report}"));
    assert_eq!(o.workload, "net-rr");
    let m = o.finite_metrics();
    assert_eq!(m["requests"], 50.0);
    assert!(m["p50_us"] > 0.0 && m["job_ns"] > 0.0, "{m:?}");
    let status = server.wait().unwrap();
    assert!(status.success(), "serve exits 0 after --max-conns connections");
}

#[test]
fn idle_ends_when_stdin_closes() {
    let mut child = Command::new(bin()).arg("idle").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"stopped_by_signal\":0"), "{text}");
}

#[test]
fn idle_ends_on_sigterm() {
    let mut child = Command::new(bin()).arg("idle").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "READY");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"stopped_by_signal\":1"));
}

#[test]
fn wait_go_runs_its_job_only_after_the_go_line_and_counts_the_job_faults() {
    use std::io::{BufRead, BufReader, Write};
    let args = ["wait-go", "--job", "mem-touch", "--touch-mib", "4", "--chase-mib", "1", "--accesses", "100"];
    let mut child = Command::new(bin()).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "READY\n");
    std::thread::sleep(std::time::Duration::from_millis(50));
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(child.wait().unwrap().success());
    let o = WorkloadOutput::parse(&line).unwrap_or_else(|| panic!("bad JSON line {line}"));
    assert_eq!(o.workload, "mem-touch");
    let m = o.finite_metrics();
    assert_eq!(m["touch_pages"], 1024.0);
    // It waited for the go line, and each first touch of the job's pages is a fault.
    assert!(m["wait_ns"] >= 50e6, "{m:?}");
    assert!(m["job_minflt"] >= 1024.0, "{m:?}");
}

#[test]
fn bad_arguments_exit_2_with_usage() {
    for args in [
        &["wait-go"][..],
        &["wait-go", "--job", "mem-bw"][..],
        &["wait-go", "--job", "net-rr"][..],
        &[][..],
        &["frobnicate"][..],
        &["cpu", "--sha-mib"][..],
        &["cpu", "--sha-mib", "lots"][..],
        &["cpu", "--bogus", "1"][..],
        &["mem-bw", "--array-mib", "0"][..],
        &["net-rr"][..],
        &["net-rr", "--peer", "300.1.1.1:80"][..],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    }
}

#[test]
fn binary_is_static_and_not_pie() {
    let bytes = std::fs::read(bin()).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([bytes[16], bytes[17]]), 2, "e_type must be ET_EXEC");
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes([bytes[56], bytes[57]]) as usize;
    for i in 0..phnum {
        let p_type = u32::from_le_bytes(bytes[phoff + i * 56..phoff + i * 56 + 4].try_into().unwrap());
        assert_ne!(p_type, 3, "PT_INTERP: the binary must not need a dynamic loader");
        assert_ne!(p_type, 2, "PT_DYNAMIC: the binary must not be dynamically linked");
    }
}

/// The documented footprint: the `nr` table of workload/src/sys.rs.
fn documented_syscalls() -> BTreeSet<String> {
    let src = std::fs::read_to_string(cvbench::paths::repo_root().join("workload/src/sys.rs")).unwrap();
    let table = src
        .split("pub mod nr {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("sys.rs has a `pub mod nr` table");
    let names: BTreeSet<String> = table
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split(':').next())
        .map(|n| n.to_ascii_lowercase())
        .collect();
    assert!(names.len() >= 10, "parsed too few syscalls from sys.rs: {names:?}");
    names
}

#[test]
fn footprint_table_is_listed_in_the_readme() {
    let readme = std::fs::read_to_string(cvbench::paths::repo_root().join("README.md")).unwrap();
    for s in documented_syscalls() {
        assert!(readme.contains(&format!("`{s}`")), "README footprint section does not list `{s}`");
    }
}

#[test]
fn strace_sees_only_documented_syscalls() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("SKIPPED: strace not installed (apt-get install strace)");
        return;
    }
    let allowed = documented_syscalls();
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let d = tmp.path().to_str().unwrap().to_string();
    let runs: Vec<Vec<String>> = [
        vec!["noop"],
        vec!["cpu", "--sha-mib", "1", "--sieve-n", "1000", "--matmul-n", "8"],
        vec!["mem-bw", "--array-mib", "1", "--iters", "1"],
        vec!["mem-touch", "--touch-mib", "1", "--chase-mib", "1", "--accesses", "100"],
        vec!["syscall", "--iters", "10"],
        vec!["disk", "--dir", &d, "--size-mib", "1", "--rand-ops", "2"],
        vec!["wait-go", "--job", "noop"],
        vec!["wait-go", "--job", "mem-touch", "--touch-mib", "1", "--chase-mib", "1", "--accesses", "100"],
        vec!["bogus-subcommand"],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(String::from).collect())
    .collect();
    for args in runs {
        let log = tmp.path().join("strace.log");
        let st = Command::new("strace")
            .args(["-f", "-qq", "-o"])
            .arg(&log)
            .arg(bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.code().is_some(), "strace run of {args:?} did not finish");
        let text = std::fs::read_to_string(&log).unwrap();
        for line in text.lines() {
            let name: String = line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() || name == "execve" || line.contains("+++") || line.contains("---") {
                continue;
            }
            assert!(allowed.contains(&name), "{args:?} made undocumented syscall {name}: {line}");
        }
    }
}
