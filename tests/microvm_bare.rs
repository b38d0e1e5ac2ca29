//! The `microvm-bare` backend through the harness: each supported workload yields a complete
//! record whose metrics have the same keys as the native run's, with the VMM's counters, its
//! peak RSS and the KVM kind; network and disk workloads through forwarded I/O.
//! Needs root and /dev/kvm (else SKIPPED) and the `cvbench-vmm` binary built beside the tests
//! (`cargo build --workspace --bins`, as scripts/test does).

use std::collections::BTreeSet;

use common::record;
use cvbench::backend::BackendId;
use cvbench::record::RunRecord;
use cvbench::runner::{run, RunRequest};
use cvbench::workload::Workload;

mod common;

/// Root and a usable KVM, or a loud skip.
fn runnable() -> bool {
    cvbench_testkit::require_root_and_kvm("microvm-bare tests", || cvbench_microvm::kvm_probe().usable())
}

/// The workloads whose I/O the VMM forwards (network, disk).
fn forwards_io(workload: &str) -> bool {
    let needs = workload.parse::<Workload>().expect("a known workload").needs();
    needs.network || needs.disk
}

fn keys(r: &RunRecord) -> BTreeSet<String> {
    r.metrics.keys().cloned().collect()
}

#[test]
fn supported_workloads_give_records_shaped_like_native() {
    if !runnable() {
        return;
    }
    let cases = common::SMALL_CASES.iter().filter(|(w, ..)| !forwards_io(w));
    for (w, args, _) in cases {
        let vm = record(BackendId::MicrovmBare, w, args);
        assert_eq!(vm.error, None, "{w}: {vm:?}");
        assert!(vm.exit.expect("exit").success(), "{w}: {:?}", vm.exit);
        let ready = vm.host.launch_to_ready_ns.expect("launch→READY");
        let exit = vm.host.launch_to_exit_ns.expect("launch→exit");
        assert!(ready > 0 && ready <= exit, "{w}: ready {ready} exit {exit}");
        let native = record(BackendId::Native, w, args);
        assert_eq!(keys(&vm), keys(&native), "{w}: metric keys differ from native");
        assert!(vm.extra.get("syscalls").copied().unwrap_or(0.0) >= 3.0, "{w}: {:?}", vm.extra);
        assert!(vm.footprint.peak_rss_kib.unwrap_or(0) > 0, "{w}: {:?}", vm.footprint);
        let kind = cvbench_microvm::kvm_kind().to_string();
        assert!(vm.notes.iter().any(|n| n.contains(&kind)), "{w}: notes lack the KVM kind: {:?}", vm.notes);
        assert!(vm.host.phases.iter().any(|(p, _)| p == "vmm create_vm"), "{w}: {:?}", vm.host.phases);
    }
}

#[test]
fn network_and_disk_workloads_run_with_forwarded_io_and_match_native() {
    if !runnable() {
        return;
    }
    let cases = common::SMALL_CASES.iter().filter(|(w, ..)| forwards_io(w));
    for (w, args, _) in cases {
        let vm = record(BackendId::MicrovmBare, w, args);
        assert_eq!(vm.error, None, "{w}: {vm:?}");
        assert!(vm.exit.expect("exit").success(), "{w}: {:?}", vm.exit);
        let native = record(BackendId::Native, w, args);
        assert_eq!(keys(&vm), keys(&native), "{w}: metric keys differ from native");
        assert!(vm.extra.get("forwarded_calls").copied().unwrap_or(0.0) > 0.0, "{w}: {:?}", vm.extra);
        assert_eq!(vm.extra.get("refused_calls").copied(), Some(0.0), "{w}: {:?}", vm.notes);
    }
}

#[test]
fn the_vmm_is_jailed_by_default_and_no_jail_is_an_explicit_option() {
    if !runnable() {
        return;
    }
    let b = BackendId::MicrovmBare.backend();
    let mut req = RunRequest::new(cvbench::workload::Workload::Noop, Vec::new());
    let jailed = run(b.as_ref(), &req);
    req.options.vmm_no_jail = true;
    let open = run(b.as_ref(), &req);
    for (r, want) in [(&jailed, 1.0), (&open, 0.0)] {
        assert_eq!(r.error, None, "{r:?}");
        assert_eq!(r.extra.get("vmm_jailed").copied(), Some(want), "{:?}", r.extra);
    }
    assert!(open.notes.iter().any(|n| n.contains("NOT jailed")), "{:?}", open.notes);
}
