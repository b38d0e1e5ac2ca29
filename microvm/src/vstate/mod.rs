//! KVM state shared by both guest kinds (Linux and bare): guest memory, the VM and its vCPUs,
//! behind a small `Vm`/`Vcpu` seam so guest set-up logic is testable without `/dev/kvm`, and
//! the one mechanism that stops a running vCPU (`kick`).

pub mod kick;
pub mod memory;
pub mod vcpu;
pub mod vm;

pub use kick::{install_kick_handler, kick_signal, StopRequest, VcpuKick};
pub use memory::{create_guest_memory, GuestMemoryMmap, MemRange, MemoryError};
pub use vcpu::{run_vcpu, ExitData, ExitHandler, KvmVcpu, Vcpu, VcpuError, VcpuExit, VmExit};
pub use vm::{KvmVm, Vm, VmError, VmOptions};
