//! Starting the micro-VMs (bare, and the Linux guest where it runs) from a snapshot through
//! the harness: a restored instance's record carries the restore phases, the job's metrics, the
//! snapshot's size and the VMM's faults after the restore; a cold start of the same waiting
//! workload records its boot instead; N instances restored from one snapshot all run; a workload with no waiting form is refused
//! before anything starts. Needs root and /dev/kvm (else SKIPPED) and `cvbench-vmm` built.

use std::time::Duration;

use cvbench::backend::restore::{self, Guest, RestoreError};
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
    record_on(BackendId::MicrovmBare, workload, args)
}

fn record_on(backend: BackendId, workload: Workload, args: &[String]) -> RunRecord {
    runner::record_of(backend, &RunRequest::new(workload, args.to_vec()))
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
    let snap = restore::take_snapshot(Guest::Bare, Workload::MemTouch, &args, T).expect("snapshot");
    assert!(snap.info.memory_disk_bytes < snap.info.memory_bytes, "the memory file is sparse: {:?}", snap.info);
    for load in [Load::Lazy, Load::Eager] {
        let vm = restore::launch_restored(Guest::Bare, &snap.path(), load, T).expect("restored");
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
    let vm = restore::launch_cold(Guest::Bare, Workload::Noop, &[], T).expect("booted");
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
    let snap = restore::take_snapshot(Guest::Bare, Workload::Noop, &[], T).expect("snapshot");
    let vms: Vec<_> =
        (0..3).map(|_| restore::launch_restored(Guest::Bare, &snap.path(), Load::Lazy, T).expect("restored")).collect();
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
    assert!(matches!(
        restore::take_snapshot(Guest::Bare, Workload::Idle, &[], T),
        Err(RestoreError::NoWaitingForm(Workload::Idle))
    ));
}

/// The Linux guest through the same harness: cold (boot → READY → go → exit) and restored
/// (restore → go → exit, lazy and eager), each recorded as the microvm backend. Only where the
/// guest's user space runs (hardware KVM: the test host); a loud SKIPPED under kvm_pvm.
#[test]
fn the_linux_guest_starts_cold_and_from_its_snapshot_through_the_harness() {
    if !runnable() {
        return;
    }
    if cvbench_microvm::kvm_kind() == cvbench_microvm::KvmKind::SoftwarePvm {
        cvbench_testkit::skip(
            cvbench_testkit::Need::Kvm,
            "Linux-guest restore-start: /dev/kvm is kvm_pvm, where the guest's user space cannot make system \
             calls; this runs in the test host",
        );
        return;
    }
    let linux_t = Duration::from_secs(600);
    let args = touch_args();
    let vm = restore::launch_cold(Guest::Linux, Workload::MemTouch, &args, linux_t).expect("booted");
    let rec = vm.go(record_on(BackendId::Microvm, Workload::MemTouch, &args), None);
    assert_eq!(rec.error, None, "cold: {:?}", rec.notes);
    assert_eq!(rec.backend, "microvm");
    assert!(rec.host.phases.iter().any(|(n, _)| n == "boot_to_ready"), "{:?}", rec.host.phases);
    assert_eq!(rec.metrics["touch_pages"], 1024.0);

    let snap = restore::take_snapshot(Guest::Linux, Workload::MemTouch, &args, linux_t).expect("snapshot");
    assert!(snap.info.memory_disk_bytes < snap.info.memory_bytes, "the memory file is sparse: {:?}", snap.info);
    for load in [Load::Lazy, Load::Eager] {
        let vm = restore::launch_restored(Guest::Linux, &snap.path(), load, linux_t).expect("restored");
        let rec = vm.go(record_on(BackendId::Microvm, Workload::MemTouch, &args), Some(&snap));
        assert_eq!(rec.error, None, "{load:?}: {:?}", rec.notes);
        assert_eq!(rec.backend, "microvm");
        let phases: Vec<&str> = rec.host.phases.iter().map(|(n, _)| n.as_str()).collect();
        for p in ["restore", "go_to_first_output", "first_output_to_exit"] {
            assert!(phases.contains(&p), "{load:?}: no phase {p} in {phases:?}");
        }
        assert_eq!(rec.metrics["touch_pages"], 1024.0);
        assert!(rec.extra["restore_vmm_ns"] > 0.0, "{:?}", rec.extra);
        assert!(rec.extra["minflt_after_restore"] >= 1.0, "{:?}", rec.extra);
    }
}
