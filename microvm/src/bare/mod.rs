//! The bare guest: the static workload ELF runs directly in guest user mode (CPL3) with no
//! guest kernel; its system calls exit to the VMM, which services them (see `syscalls`).
//!
//! Entry point: [`run`] with a [`BareConfig`]. The `cvbench-vmm bare` binary is a thin CLI over
//! it, so the harness measures the whole VMM process like a container's.
//!
//! # One path for hardware KVM and kvm_pvm
//! The guest starts in 64-bit CPL3 (segments, paging and EFER set with KVM_SET_SREGS; no
//! real-mode or firmware path). `syscall` enters a one-instruction CPL0 stub (`out imm8, al`)
//! through LSTAR; the VMM services the call and resumes the program itself: RIP=RCX,
//! RFLAGS=R11, RAX=result and the user CS/SS, written through the shared `kvm_run` page when
//! KVM_CAP_SYNC_REGS is offered (else KVM_SET_REGS/KVM_SET_SREGS). Everything here is plain
//! architectural x86-64 that hardware KVM runs as is; the choices are what `kvm_pvm` (software
//! nested KVM, guest CPL0 emulated) also accepts, measured on this machine:
//! - `sysretq` shut the guest down under kvm_pvm (probe), hence the VMM-side return;
//!   `iretq` worked but was no faster.
//! - kvm_pvm did not run CPL0 code from a supervisor-only page (probe), so the system pages are
//!   user-accessible; SMEP stays off so hardware KVM runs them too.
//! - kvm_pvm raised #GP on the stub's `out` until the TSS carried an I/O bitmap opening the stub
//!   ports (hardware ignores the bitmap at CPL0).
//!
//! Setting `CVBENCH_VMM_NO_SYNC_REGS=1` forces the ioctl path (KVM_GET/SET_REGS, KVM_SET_SREGS
//! per call), to compare the two on a given host.
//!
//! The system calls serviced are the workload's whole footprint (see `syscalls`). Network and
//! file calls are forwarded to the host only when the run grants them (`net`: TCP to the run's
//! one peer from a private network namespace; `files`: regular files beneath one run
//! directory; see `forward`), refused with -EPERM and counted when they reach for anything
//! else; without a grant they get `-ENOSYS` and a warning on stderr, like any other call.
//!
//! Guest exceptions are delivered through a 32-entry IDT to per-vector stubs that exit on their
//! own port; the VMM reads the CPU-pushed frame and reports vector, RIP and CR2.

pub mod control;
pub mod cpu;
pub mod elf;
pub mod files;
mod forward;
pub mod heap;
pub mod layout;
pub mod net;
mod runner;
pub mod snapshot;
pub mod stack;
pub mod syscalls;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use runner::{restore, run};

pub use crate::stats::{BareStats, GuestEnd};

/// Errors of a bare-guest run. Guest faults, timeouts and unexpected exits are errors too:
/// the run ends with a message that says what happened where.
#[derive(Debug, thiserror::Error)]
pub enum BareError {
    #[error("cannot read ELF {path}")]
    ReadElf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ELF {path} cannot run in the bare VM")]
    Elf {
        path: PathBuf,
        #[source]
        source: elf::ElfError,
    },
    #[error("guest address-space layout")]
    Layout(#[from] layout::LayoutError),
    #[error("initial stack")]
    Stack(#[from] stack::StackError),
    #[error("guest memory")]
    Memory(#[from] crate::vstate::MemoryError),
    #[error("VM set-up")]
    Vm(#[from] crate::vstate::VmError),
    #[error("vCPU")]
    Vcpu(#[from] crate::vstate::VcpuError),
    #[error("VMM control thread")]
    Control(#[from] control::ControlError),
    #[error("the VMM's network namespace")]
    Net(#[from] net::NetError),
    #[error("the guest's run directory")]
    Files(#[from] files::FilesError),
    #[error("jailing the VMM")]
    Jail(#[from] crate::jail::JailError),
    #[error(
        "guest fault: exception {vector} ({name}) at RIP {rip:#x}{}{}",
        fault_addr.map(|a| format!(", fault address {a:#x}")).unwrap_or_default(),
        error_code.map(|c| format!(", error code {c:#x}")).unwrap_or_default()
    )]
    GuestFault { vector: u8, name: &'static str, rip: u64, fault_addr: Option<u64>, error_code: Option<u64> },
    #[error("guest shut down (triple fault) at RIP {rip:#x}")]
    TripleFault { rip: u64 },
    #[error("guest stopped unexpectedly ({what}) at RIP {rip:#x}")]
    UnexpectedExit { what: String, rip: u64 },
    #[error("guest ran past its timeout of {0:?} and was stopped")]
    Timeout(Duration),
    #[error("snapshot")]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error("cannot take a snapshot: {0}")]
    SnapshotState(String),
    #[error("a snapshot cannot be taken of a run with forwarded files or network (the restored guest could not get them back)")]
    SnapshotGrants,
}

/// One bare-guest run. The CLI, the harness backend and the tests all build this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BareConfig {
    /// The static ET_EXEC executable to run.
    pub elf: PathBuf,
    /// The full argument vector, `argv[0]` included.
    pub argv: Vec<String>,
    /// The environment strings (`KEY=VALUE`).
    #[serde(default)]
    pub env: Vec<String>,
    /// Guest memory in MiB (a multiple of 2, at least 32).
    #[serde(default = "default_mem_mib")]
    pub mem_mib: u32,
    /// Stop the guest after this long.
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// After the guest ends, measure the VMM's peak RSS and how much guest memory is resident
    /// (costs a pass over the guest mapping, so only when the numbers are wanted).
    #[serde(default)]
    pub measure_memory: bool,
    /// Forward file calls: the guest may open regular files beneath this directory only.
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    /// No guest file may grow past this many MiB.
    #[serde(default = "default_max_file_mib")]
    pub max_file_mib: u64,
    /// Forward TCP to the run's peer, from a private network namespace wired to the peer's.
    #[serde(default)]
    pub net: Option<net::NetConfig>,
    /// Jail the VMM before the guest runs (namespaces, empty root, no capabilities,
    /// no_new_privs, seccomp); off only for debugging (`--no-jail`).
    #[serde(default = "default_jail")]
    pub jail: bool,
    /// Test hook: once jailed, make one system call outside the allow-list (the VMM must die
    /// of its own filter with a clear message).
    #[serde(default)]
    pub selftest_forbidden_syscall: bool,
    /// Save the guest into this existing directory (files `memory` and `state`) when it
    /// blocks reading stdin, and end the run there. A run that ends first writes nothing
    /// and fails.
    #[serde(default)]
    pub snapshot_to: Option<PathBuf>,
}

/// Restore a bare guest from a snapshot directory and run it on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreConfig {
    /// The directory holding `memory` and `state`.
    pub snapshot: PathBuf,
    /// Map the memory file lazily (`MAP_PRIVATE`) or read it in first.
    #[serde(default)]
    pub load: crate::snapshot::memory::Load,
    /// When given, the snapshot's memory size must be this many MiB.
    #[serde(default)]
    pub mem_mib: Option<u32>,
    #[serde(default)]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub measure_memory: bool,
    #[serde(default = "default_jail")]
    pub jail: bool,
}

fn default_jail() -> bool {
    true
}

pub fn default_mem_mib() -> u32 {
    512
}

pub fn default_max_file_mib() -> u64 {
    1024
}

/// Result of a completed run: how it ended plus what it cost.
#[derive(Clone, Debug, PartialEq)]
pub struct BareOutcome {
    pub end: GuestEnd,
    pub stats: BareStats,
}
