//! The Linux micro-VM (`microvm`: our VMM) and its QEMU peer (`qemu -M microvm`) run the
//! workload end to end through the harness: every workload in our VMM, and noop, cpu, net-rr and
//! disk in QEMU (same kernel, initramfs, command line and devices: virtio-net to the peer server in
//! the run's own namespace, a virtio-blk ext4 disk). Each record must succeed with the workload's
//! metrics, READY timed on the host and the guest's exit status as the record's.
//!
//! Needs root and a `/dev/kvm` with hardware semantics: under kvm_pvm a Linux guest's user space
//! cannot make system calls, so these tests skip there (loudly) and run in the test host
//! (`scripts/testhost`), where a skip is a failure.

use std::time::Duration;

use cvbench::backend::by_name;
use cvbench::record::RunRecord;
use cvbench::runner::{run, RunRequest};
use cvbench_testkit::{skip, Need};

/// Small arguments per workload (the test host is an emulated CPU: keep every run short).
fn args(workload: &str) -> &'static [&'static str] {
    match workload {
        "cpu" => &["--sha-mib", "1", "--sieve-n", "100000", "--matmul-n", "32"],
        "mem-bw" => &["--array-mib", "4", "--iters", "1"],
        "mem-touch" => &["--touch-mib", "8", "--chase-mib", "4", "--accesses", "100000"],
        "syscall" => &["--iters", "500"],
        "net-stream" => &["--mib", "4"],
        "net-rr" => &["--requests", "100"],
        "disk" => &["--size-mib", "4", "--rand-ops", "16"],
        "idle" => &[],
        _ => &[],
    }
}

fn can_run(backend: &str) -> bool {
    if !cvbench_testkit::require_root(&format!("the {backend} backend (tap devices, namespaces)")) {
        return false;
    }
    let kind = cvbench::env::kvm_kind();
    if kind != cvbench::env::KvmKind::Hardware {
        skip(
            Need::Kvm,
            &format!("{backend}: a Linux guest's user space runs only on hardware KVM; here: {}", kind.describe()),
        );
        return false;
    }
    match by_name(backend).map(|b| b.check()) {
        Ok(Ok(())) => true,
        Ok(Err(why)) => panic!("{backend} cannot run on a hardware-KVM host: {why}"),
        Err(e) => panic!("{backend} is not registered: {e}"),
    }
}

fn record(backend: &str, workload: &str) -> RunRecord {
    let b = by_name(backend).expect("backend");
    let mut req = RunRequest::new(
        workload.parse().expect("a known workload"),
        args(workload).iter().map(|s| s.to_string()).collect(),
    );
    req.sample_footprint = true;
    req.timeout = Duration::from_secs(240);
    if workload == "idle" {
        req.hold = Duration::from_millis(500);
    }
    run(b.as_ref(), &req)
}

fn assert_ran(backend: &str, workload: &str) -> RunRecord {
    let r = record(backend, workload);
    assert!(r.error.is_none(), "{backend} {workload}: {:?}\nnotes: {:#?}", r.error, r.notes);
    assert!(r.host.launch_to_ready_ns.is_some(), "{backend} {workload}: READY was not timed on the host");
    if workload != "idle" {
        let exit = r.exit.expect("exit info");
        assert_eq!(exit.code, Some(0), "{backend} {workload}: guest exit status");
    }
    if !matches!(workload, "noop" | "idle") {
        assert!(!r.metrics.is_empty(), "{backend} {workload}: no metrics");
    }
    println!(
        "{backend} {workload}: ready {:.1} ms, exit {:.1} ms, metrics {:?}",
        r.host.launch_to_ready_ns.unwrap_or(0) as f64 / 1e6,
        r.host.launch_to_exit_ns.unwrap_or(0) as f64 / 1e6,
        r.metrics
    );
    r
}

#[test]
fn microvm_runs_every_workload() {
    if !can_run("microvm") {
        return;
    }
    for w in ["noop", "cpu", "mem-bw", "mem-touch", "syscall", "net-stream", "net-rr", "disk"] {
        assert_ran("microvm", w);
    }
}

#[test]
fn microvm_idle_footprint_is_read_from_the_host() {
    if !can_run("microvm") {
        return;
    }
    let r = record("microvm", "idle");
    assert!(r.host.launch_to_ready_ns.is_some(), "idle never became READY: {:?} {:#?}", r.error, r.notes);
    assert!(r.footprint.rss_kib.unwrap_or(0) > 0, "no RSS sampled for the VMM: {:?}", r.footprint);
}

#[test]
fn microvm_reports_a_failing_workload_status() {
    if !can_run("microvm") {
        return;
    }
    let b = by_name("microvm").expect("backend");
    let mut req = RunRequest::new(cvbench::workload::Workload::Cpu, vec!["--no-such-flag".into()]);
    req.timeout = Duration::from_secs(240);
    let r = run(b.as_ref(), &req);
    assert_eq!(
        r.exit.and_then(|e| e.code),
        Some(2),
        "bad arguments must end with the workload's usage status 2: {r:?}"
    );
    assert!(r.error.is_some());
}

#[test]
fn qemu_runs_noop_cpu_net_rr_and_disk() {
    if !can_run("qemu") {
        return;
    }
    for w in ["noop", "cpu", "net-rr", "disk"] {
        assert_ran("qemu", w);
    }
}

#[test]
fn microvm_cold_start_pulls_flattens_and_boots_the_image() {
    if !can_run("microvm") {
        return;
    }
    // The real path: the private registry (docker-registry on 127.0.0.1), our pull into an
    // empty store, the layers flattened into an initramfs, our VMM booting it to READY.
    // 4 MiB instead of the bench's 64 MiB of noise: the test host's CPU is emulated.
    let big = 4 << 20;
    cvbench::bench::image_ctx::set_big_bytes(big);
    let b = by_name("microvm").expect("backend");
    let mut req = RunRequest::new(cvbench::workload::Workload::Noop, vec![]);
    req.scenario = "cold-start".into();
    let r = cvbench::bench::cold_start::unit(b.as_ref(), &req);
    let dir = cvbench::bench::image_ctx::get().map(|c| c.dir.clone());
    cvbench::bench::image_ctx::shutdown();
    eprintln!("microvm cold start phases (ns): {:?}", r.host.phases);
    assert!(r.error.is_none(), "cold start failed: {:?} {:#?}", r.error, r.notes);
    let names: Vec<&str> = r.host.phases.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["pull", "unpack", "prepare", "start"]);
    assert!(r.host.phases.iter().all(|(_, v)| *v > 0), "{:?}", r.host.phases);
    let total: u64 = r.host.phases.iter().map(|(_, v)| v).sum();
    assert_eq!(r.host.launch_to_ready_ns, Some(total));
    let note = r.notes.iter().find(|n| n.starts_with("microvm: prepare")).expect("flatten note");
    // The big layer went into the guest's initramfs.
    let file_bytes: u64 = note
        .split(" file bytes")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no file bytes in {note}"));
    assert!(file_bytes >= big as u64, "{note}");
    if let Ok(d) = dir {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}
