//! Starting the bare VM from a snapshot through the harness: a restored instance's record
//! carries the restore phases, the job's metrics, the snapshot's size and the VMM's faults
//! after the restore; a cold start of the same waiting workload records its boot instead; N
//! instances restored from one snapshot all run; a workload with no waiting form is refused
//! before anything starts. Needs root and /dev/kvm (else SKIPPED) and `cvbench-vmm` built.

use std::time::Duration;

use cvbench::backend::restore::{self, RestoreError};
use cvbench::backend::BackendId;
use cvbench::record::RunRecord;
use cvbench::runner::{self, RunRequest};
use cvbench::workload::Workload;
use cvbench_microvm::snapshot::memory::Load;

/// Root and a usable KVM, or a loud skip.
fn runnable() -> bool {
    cvbench_testkit::require_root_and_kvm("restore-start tests", || cvbench_microvm::kvm_probe().usable())
}

/// The unit's record as the harness starts it, for `WaitingVm::go` to fill.
fn record(workload: Workload, args: &[String]) -> RunRecord {
    runner::record_of(BackendId::MicrovmBare, &RunRequest::new(workload, args.to_vec()))
}

const T: Duration = Duration::from_secs(60);

fn touch_args() -> Vec<String> {
    ["--touch-mib", "4", "--chase-mib", "1", "--accesses", "100"].map(String::from).to_vec()
}

#[test]
fn a_restored_instance_records_restore_phases_job_faults_and_snapshot_size() {
    if !runnable() {
        return;
    }
    let args = touch_args();
    let snap = restore::take_snapshot(Workload::MemTouch, &args, T).expect("snapshot");
    assert!(snap.info.memory_disk_bytes < snap.info.memory_bytes, "the memory file is sparse: {:?}", snap.info);
    for load in [Load::Lazy, Load::Eager] {
        let vm = restore::launch_restored(&snap.path(), load, T).expect("restored");
        let rec = vm.go(record(Workload::MemTouch, &args), Some(&snap));
        assert_eq!(rec.error, None, "{load:?}");
        let phases: Vec<&str> = rec.host.phases.iter().map(|(n, _)| n.as_str()).collect();
        for p in ["restore", "go_to_first_output", "first_output_to_exit", "vmm_restore_memory"] {
            assert!(phases.contains(&p), "{load:?}: no phase {p} in {phases:?}");
        }
        assert_eq!(rec.metrics["touch_pages"], 1024.0);
        // The first touches fault in the VMM's memory, but how many faults that is depends on
        // the host's paging: one per 4 KiB page under kvm_pvm's shadow paging (1024 here),
        // far fewer under hardware KVM with transparent huge pages (the test host counted 1).
        assert!(rec.metrics["job_minflt"] >= 1.0, "{:?}", rec.metrics);
        assert!(rec.extra["minflt_after_restore"] >= 1.0, "{:?}", rec.extra);
        assert!(rec.extra["snapshot_memory_disk_kib"] > 0.0);
    }
}

#[test]
fn a_cold_start_of_the_waiting_workload_records_its_boot() {
    if !runnable() {
        return;
    }
    let vm = restore::launch_cold(Workload::Noop, &[], T).expect("booted");
    let rec = vm.go(record(Workload::Noop, &[]), None);
    assert_eq!(rec.error, None);
    assert!(rec.host.phases.iter().any(|(n, _)| n == "boot_to_ready"), "{:?}", rec.host.phases);
    assert!(!rec.extra.contains_key("minflt_after_restore"));
}

#[test]
fn instances_restored_from_one_snapshot_all_run() {
    if !runnable() {
        return;
    }
    let snap = restore::take_snapshot(Workload::Noop, &[], T).expect("snapshot");
    let vms: Vec<_> =
        (0..3).map(|_| restore::launch_restored(&snap.path(), Load::Lazy, T).expect("restored")).collect();
    for vm in &vms {
        let pid = vm.pid().expect("running");
        assert!(cvbench::footprint::private_kib(pid).is_some_and(|k| k > 0));
    }
    for vm in vms {
        assert_eq!(vm.go(record(Workload::Noop, &[]), Some(&snap)).error, None);
    }
}

#[test]
fn a_workload_without_a_waiting_form_is_refused_before_anything_starts() {
    assert!(matches!(restore::take_snapshot(Workload::Idle, &[], T), Err(RestoreError::NoWaitingForm(Workload::Idle))));
}
