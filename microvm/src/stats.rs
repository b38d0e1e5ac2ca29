//! The VMM's report of one run, for both guest kinds: how the guest ended ([`GuestEnd`]) and
//! what it cost ([`BareStats`], [`LinuxStats`]). `cvbench-vmm --stats-json` writes these and
//! the harness deserialises the same types, so the contract between the crates is typed.

use serde::{Deserialize, Serialize};

use crate::host::KvmKind;

/// How the guest ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum GuestEnd {
    /// The bare guest called exit/exit_group with this status.
    Exited(i32),
    /// Stopped by a host stop signal (SIGTERM/SIGINT) the guest had not blocked.
    Signalled(i32),
    /// The Linux guest reset or powered off (i8042 reset, triple fault or a KVM system event).
    PowerOff,
    /// The run's timeout passed first; the vCPUs were stopped.
    Timeout,
    /// A vCPU failed (entry failure, emulation error, ioctl error).
    Failed(String),
    /// The guest reached its snapshot point (the bare guest blocked reading stdin, the Linux
    /// guest's workload printed READY) and was saved instead of running on.
    Snapshotted,
}

/// Host-side timings and counters of one bare-guest run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BareStats {
    /// Ordered set-up phases and the run itself, nanoseconds each.
    pub phases: Vec<(String, u64)>,
    /// All vCPU exits seen.
    pub vm_exits: u64,
    /// System calls serviced.
    pub syscalls: u64,
    /// Nanoseconds spent in the VMM servicing system calls (from the exit to the resume).
    pub syscall_service_ns: u64,
    /// Unsupported system call numbers the guest tried.
    pub unsupported_syscalls: Vec<u64>,
    /// Which KVM ran the guest.
    pub kvm_kind: Option<KvmKind>,
    /// Whether registers travelled through the shared kvm_run page (KVM_CAP_SYNC_REGS).
    pub sync_regs: bool,
    /// Guest memory size in KiB (mapped lazily; only touched pages cost host memory).
    pub guest_mem_kib: u64,
    /// With `measure_memory`: the VMM process's peak RSS (VmHWM) in KiB.
    pub vmm_peak_rss_kib: Option<u64>,
    /// With `measure_memory`: guest memory resident on the host at the end, in KiB.
    pub guest_resident_kib: Option<u64>,
    /// Network and file calls forwarded to the host (each one VM exit).
    #[serde(default)]
    pub forwarded_calls: u64,
    /// Calls the confinement policy refused with -EPERM.
    #[serde(default)]
    pub refused_calls: u64,
    /// The first refusals, in words.
    #[serde(default)]
    pub refusals: Vec<String>,
    /// Whether the VMM ran jailed (namespaces, empty root, no capabilities, seccomp).
    #[serde(default)]
    pub jailed: bool,
    /// Size of the VMM's seccomp allow-list (ioctl counted once), when jailed.
    #[serde(default)]
    pub seccomp_allowed_syscalls: Option<usize>,
    /// The snapshot this run wrote, if it was asked to take one.
    #[serde(default)]
    pub snapshot: Option<SnapshotInfo>,
    /// How this run was restored from a snapshot, if it was.
    #[serde(default)]
    pub restore: Option<RestoreInfo>,
}

/// A snapshot written by `cvbench-vmm bare --snapshot-to DIR`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotInfo {
    pub dir: std::path::PathBuf,
    /// The memory file's length: the guest's memory size.
    pub memory_bytes: u64,
    /// What the memory file takes on disk (it is sparse: only pages holding data).
    pub memory_disk_bytes: u64,
    pub state_bytes: u64,
    pub data_pages: u64,
}

/// A run restored by `cvbench-vmm bare-restore`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreInfo {
    pub load: crate::snapshot::memory::Load,
    /// From the VMM's start until the restored guest was ready to resume, nanoseconds.
    pub restore_ns: u64,
    /// Page faults of the VMM process from the resume to the end (the guest's first touches
    /// of restored memory land here), minor and major.
    pub minflt_after_restore: u64,
    pub majflt_after_restore: u64,
    /// Page faults of the VMM process up to the resume (its own start plus the restore).
    pub minflt_restore: u64,
}

/// One Linux-guest run: its end and the boot milestones, milliseconds from VMM start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinuxStats {
    pub kvm_kind: KvmKind,
    pub end: GuestEnd,
    /// The workload's exit status as the guest's /init reported it through the boot timer.
    pub exit_status: Option<u8>,
    /// The guest kernel is about to run /init.
    pub kernel_init_ms: Option<f64>,
    /// /init runs in user space.
    pub user_init_ms: Option<f64>,
    /// vCPU 0's first KVM_RUN.
    pub first_kvm_run_ms: Option<f64>,
    /// The run ended.
    pub total_ms: f64,
    pub cmdline: String,
    /// MSRs KVM refused at boot, devices that failed to activate, other remarks.
    pub notes: Vec<String>,
    /// Whether the VMM ran jailed (namespaces, empty root, no capabilities, seccomp).
    #[serde(default)]
    pub jailed: bool,
    /// Allow-list sizes of the main, vCPU and device threads, when jailed.
    #[serde(default)]
    pub seccomp_allowed_syscalls: Option<Vec<usize>>,
    /// The snapshot this run saved (`linux --snapshot-to`).
    #[serde(default)]
    pub snapshot: Option<SnapshotInfo>,
    /// How this run was restored (`linux-restore`).
    #[serde(default)]
    pub restore: Option<RestoreInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_end_round_trips_with_its_detail() {
        for end in [GuestEnd::Exited(3), GuestEnd::Signalled(15), GuestEnd::PowerOff, GuestEnd::Failed("x".into())] {
            let json = serde_json::to_string(&end).unwrap();
            assert_eq!(serde_json::from_str::<GuestEnd>(&json).unwrap(), end);
        }
        assert_eq!(serde_json::to_string(&GuestEnd::PowerOff).unwrap(), r#"{"kind":"power_off"}"#);
    }

    #[test]
    fn bare_stats_round_trip() {
        let s = BareStats { phases: vec![("run".into(), 5)], kvm_kind: Some(KvmKind::Hardware), ..Default::default() };
        let back: BareStats = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
