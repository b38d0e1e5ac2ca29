//! cvbench's micro-VM monitor: the shared KVM core (`vstate`) and the guest kinds built on it —
//! `bare` (the workload ELF at CPL3, system calls forwarded to the VMM) and the Linux guest.

pub mod vstate;

pub use vstate::{kvm_kind, KvmKind};
