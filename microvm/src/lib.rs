//! cvbench's micro-VM monitor: the shared KVM core (`vstate`) and the guest kinds built on it —
//! `bare` (the workload ELF at CPL3, system calls forwarded to the VMM) and the Linux guest.

pub mod arch;
pub mod bare;
pub mod host;
pub mod jail;
pub mod stats;
pub mod vstate;

// Linux guest (issue 4).
pub mod builder;
pub mod devices;
pub mod linux;

pub use host::{kvm_kind, kvm_probe, HostCpu, KvmKind};
