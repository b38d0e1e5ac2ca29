//! x86-64 CPU state both guests build on: GDT descriptors and the segments they load
//! ([`gdt`]), identity-mapping page tables ([`paging`]), control-register, EFER and MSR
//! constants with reset FPU state ([`regs`]), and the guest CPUID filter ([`cpuid`]).
//! Which addresses each guest uses stays with the guest (`bare::layout`, `linux`).

pub mod cpuid;
pub mod gdt;
pub mod paging;
pub mod regs;
