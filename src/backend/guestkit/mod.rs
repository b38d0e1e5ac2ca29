//! The guest kit: what every backend that boots our guest kernel (or runs the workload in a VM)
//! shares, kept apart from any one backend. The `microvm` and `qemu` backends boot the same
//! kernel (`kernel`), the same initramfs (`initrd`), with the same peer server and addresses
//! (`peer`) and the same ext4 scratch disk (`disk`); `microvm`, `microvm-bare` and the tests
//! hand `cvbench-vmm` its typed config the same way (`vmm`). The doctor and the labs ask
//! `kernel` whether the guest kernel is built.

pub mod disk;
pub mod guest;
pub mod initrd;
pub mod kernel;
pub mod peer;
pub mod vmm;

pub use kernel::guest_kernel;

/// Guest RAM of a Linux guest, the same for our VMM and the QEMU peer. 256 MiB: the full
/// profile's `mem-touch` maps 96 MiB of buffers on top of the kernel and the initramfs (held in
/// RAM); RAM is touched lazily, so an idle guest's footprint does not grow with it.
pub(crate) const DEFAULT_MEM_MIB: u32 = 256;
