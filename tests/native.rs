//! The native backend through the harness: every workload produces a complete
//! record, failures are recorded with their error, and the CLI tells the truth.

use std::process::Command;
use std::time::Duration;

use cvbench::backend::{by_name, BackendId};
use cvbench::record::RunRecord;
use cvbench::runner::{run, RunRequest};

mod common;

fn native(workload: &str, args: &[&str]) -> RunRecord {
    common::record(BackendId::Native, workload, args)
}

#[test]
fn every_workload_yields_a_complete_record() {
    for (w, args, key) in common::SMALL_CASES {
        let r = native(w, args);
        assert_eq!(r.error, None, "{w}: {r:?}");
        assert_eq!(r.backend, "native");
        assert!(r.exit.unwrap().success());
        let ready = r.host.launch_to_ready_ns.unwrap();
        let exit = r.host.launch_to_exit_ns.unwrap();
        assert!(ready > 0 && ready <= exit, "{w}: ready {ready} exit {exit}");
        if !key.is_empty() {
            assert!(r.metrics.get(*key).copied().unwrap_or(-1.0) > 0.0, "{w}: missing {key}: {:?}", r.metrics);
        }
    }
}

#[test]
fn net_workloads_cross_a_veth_pair_between_run_created_namespaces() {
    if !cvbench_testkit::require_root("creating network namespaces") {
        return;
    }
    let r = native("net-rr", &["--requests", "10"]);
    assert!(r.error.is_none(), "{:?}", r.error);
    let i = r.args.iter().position(|a| a == "--peer").expect("--peer appended");
    // The same 10.200.0.0/16 /30s the containers use, never host loopback.
    assert!(r.args[i + 1].starts_with("10.200."), "{:?}", r.args);
    assert!(r.notes.iter().any(|n| n.starts_with("net: veth pair on a /30")), "{:?}", r.notes);
}

#[test]
fn footprint_is_sampled_for_idle() {
    let r = native("idle", &[]);
    assert!(r.footprint.rss_kib.unwrap_or(0) > 0, "{:?}", r.footprint);
    assert!(r.footprint.peak_rss_kib.unwrap_or(0) > 0, "{:?}", r.footprint);
}

#[test]
fn failed_run_keeps_its_error_and_exit_code() {
    let r = native("cpu", &["--sha-mib", "not-a-number"]);
    assert_eq!(r.exit.unwrap().code, Some(2));
    let e = r.error.expect("error recorded");
    assert!(e.contains("exit code 2") && e.contains("usage"), "{e}");
}

#[test]
fn timeout_kills_the_instance_and_says_so() {
    let b = by_name("native").unwrap();
    let mut req = RunRequest::new(
        cvbench::workload::Workload::MemTouch,
        vec!["--touch-mib".into(), "64".into(), "--accesses".into(), "100000000000".into()],
    );
    req.timeout = Duration::from_millis(500);
    let r = run(b.as_ref(), &req);
    let e = r.error.expect("timed out");
    assert!(e.contains("timed out"), "{e}");
}

fn cvbench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cvbench"))
}

#[test]
fn cli_run_json_prints_one_valid_record() {
    let out = cvbench()
        .args(["run", "--backend", "native", "--workload", "cpu", "--json", "--", "--sha-mib", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1);
    let r: RunRecord = serde_json::from_str(text.trim()).unwrap();
    assert_eq!((r.backend.as_str(), r.workload.as_str()), ("native", "cpu"));
    assert!(r.metrics["sha256_mib_per_s"] > 0.0);
    assert!(!r.env_id.is_empty());
}

#[test]
fn cli_rejects_unknown_backend_and_workload() {
    let out = cvbench().args(["run", "--backend", "teleport", "--workload", "noop"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("teleport"));
    let out = cvbench().args(["run", "--backend", "native", "--workload", "warp"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn doctor_reports_kvm_kind_truthfully() {
    let out = cvbench().args(["doctor", "--json"]).output().unwrap();
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kvm = checks.as_array().unwrap().iter().find(|c| c["name"] == "kvm").unwrap();
    let detail = kvm["detail"].as_str().unwrap();
    if std::path::Path::new("/sys/module/kvm_pvm").exists() && std::path::Path::new("/dev/kvm").exists() {
        assert!(detail.contains("kvm_pvm"), "{detail}");
        assert_eq!(kvm["status"], "warn");
    } else if !std::path::Path::new("/dev/kvm").exists() {
        assert_eq!(kvm["status"], "missing");
    }
}
