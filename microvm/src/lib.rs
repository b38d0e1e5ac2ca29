//! cvbench's micro-VM monitor: the shared KVM core (`vstate`: memory, VM, vCPUs, the one vCPU
//! kick), the x86-64 CPU state both guests build on (`arch`), and the guest kinds on top —
//! `bare` (the workload ELF at CPL3, system calls serviced or forwarded by the VMM) and the
//! Linux guest (`builder`, `linux`, `devices` on a port-I/O and MMIO bus). Around them: what
//! the host offers (`host`: KVM kind, host CPU), the VMM's self-jail (`jail`), and the typed
//! run report the harness reads back (`stats`).
//!
//! Layering (no circles): `vstate` and `host` are leaves; `arch` uses `vstate::memory`;
//! `snapshot` uses `vstate`; `bare`, `devices`, `linux` use those; `builder` uses all of the Linux side; `jail` is used
//! by both guest kinds and uses neither.

pub mod arch;
pub mod bare;
pub mod builder;
pub mod devices;
pub mod host;
pub mod jail;
pub mod linux;
pub mod snapshot;
pub mod stats;
pub mod vstate;

pub use host::{kvm_kind, kvm_probe, HostCpu, KvmKind};
