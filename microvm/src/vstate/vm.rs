//! The VM half of the hypervisor seam: the [`Vm`] trait, its kvm-ioctls implementation
//! [`KvmVm`].

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::memory::GuestMemoryMmap;
use super::vcpu::KvmVcpu;

/// Errors from creating or configuring a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm")]
    OpenKvm(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0} is not the supported version 12")]
    ApiVersion(i32),
    #[error("KVM_CREATE_VM failed")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_USER_MEMORY_REGION failed for slot {slot} at guest address {addr:#x}")]
    SetUserMemoryRegion {
        slot: u32,
        addr: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM_SET_TSS_ADDR failed")]
    SetTssAddress(#[source] kvm_ioctls::Error),
    #[error("KVM_CREATE_IRQCHIP failed")]
    CreateIrqchip(#[source] kvm_ioctls::Error),
    #[error("KVM_CREATE_PIT2 failed")]
    CreatePit(#[source] kvm_ioctls::Error),
    #[error("KVM_CREATE_VCPU failed for vCPU {0}")]
    CreateVcpu(u8, #[source] kvm_ioctls::Error),
    #[error("KVM_GET_SUPPORTED_CPUID failed")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    #[error("KVM_IRQFD failed for GSI {0}")]
    RegisterIrqfd(u32, #[source] kvm_ioctls::Error),
    #[error("KVM_IOEVENTFD failed for address {0:#x}")]
    RegisterIoevent(u64, #[source] kvm_ioctls::Error),
    #[error("KVM_IRQ_LINE failed for IRQ {0}")]
    SetIrqLine(u32, #[source] kvm_ioctls::Error),
}

/// VM-wide options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmOptions {
    /// Create the in-kernel irqchip (PIC + IOAPIC + LAPICs) and PIT, as a Linux guest needs.
    /// The bare guest runs with interrupts off and needs neither.
    pub irqchip: bool,
}

/// What a VMM needs from a VM. Implemented by [`KvmVm`]; tests implement it with fakes.
pub trait Vm {
    type Vcpu;
    /// Make guest memory visible to the guest, one slot per region. The VM keeps a handle to
    /// `mem`, so the host mappings outlive every use KVM makes of them.
    fn register_memory(&mut self, mem: &GuestMemoryMmap) -> Result<(), VmError>;
    /// Create vCPU `id`.
    fn create_vcpu(&self, id: u8) -> Result<Self::Vcpu, VmError>;
    /// The CPUID entries KVM supports on this host (to be filtered for the guest).
    fn supported_cpuid(&self) -> Result<CpuId, VmError>;
    /// Signal an interrupt line through an eventfd (needs the in-kernel irqchip).
    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), VmError>;
    /// Turn guest writes to an MMIO address into eventfd signals instead of exits.
    fn register_ioevent(&self, fd: &EventFd, mmio_addr: u64) -> Result<(), VmError>;
    /// Raise or lower an interrupt line of the in-kernel irqchip.
    fn set_irq_line(&self, irq: u32, active: bool) -> Result<(), VmError>;
}

/// Where KVM may put the 3 pages of real-mode TSS it needs on Intel (below 4 GiB, unused).
pub const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// A VM backed by `/dev/kvm`.
pub struct KvmVm {
    kvm: Kvm,
    fd: VmFd,
    memory: Option<GuestMemoryMmap>,
    /// KVM's supported CPUID, asked once per VM: every vCPU starts from the same table, and
    /// the ioctl runs the host's `cpuid` for every leaf (each one a trap when this host is
    /// itself a VM). It cannot change while the `/dev/kvm` handle pins the module.
    supported_cpuid: std::sync::OnceLock<CpuId>,
}

impl KvmVm {
    /// Open `/dev/kvm` and create a VM, with the in-kernel irqchip and PIT if asked for.
    pub fn new(opts: VmOptions) -> Result<KvmVm, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let version = kvm.get_api_version();
        if version != 12 {
            return Err(VmError::ApiVersion(version));
        }
        let fd = kvm.create_vm().map_err(VmError::CreateVm)?;
        let vm = KvmVm { kvm, fd, memory: None, supported_cpuid: std::sync::OnceLock::new() };
        if opts.irqchip {
            vm.create_irqchip()?;
            let pit = kvm_pit_config { flags: kvm_bindings::KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
            vm.fd.create_pit2(pit).map_err(VmError::CreatePit)?;
        }
        Ok(vm)
    }

    /// Create the in-kernel irqchip (PIC, IOAPIC, one LAPIC per vCPU) without a PIT. Call before
    /// creating vCPUs.
    pub fn create_irqchip(&self) -> Result<(), VmError> {
        self.fd.set_tss_address(KVM_TSS_ADDRESS).map_err(VmError::SetTssAddress)?;
        self.fd.create_irq_chip().map_err(VmError::CreateIrqchip)
    }

    /// The system handle (`/dev/kvm`), for capability checks.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// The raw VM handle, for what the seam does not cover yet.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }
}

impl Vm for KvmVm {
    type Vcpu = KvmVcpu;

    fn register_memory(&mut self, mem: &GuestMemoryMmap) -> Result<(), VmError> {
        for (slot, region) in mem.iter().enumerate() {
            let addr = region.start_addr().0;
            let host = mem.get_host_address(region.start_addr()).map_err(|_| VmError::SetUserMemoryRegion {
                slot: slot as u32,
                addr,
                source: kvm_ioctls::Error::new(libc::EFAULT),
            })?;
            let desc = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: addr,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: `host..host+len` is a live mapping owned by `mem`; a clone of `mem` is kept
            // in `self.memory` below, so the mapping outlives the VM's use of it.
            unsafe { self.fd.set_user_memory_region(desc) }.map_err(|source| VmError::SetUserMemoryRegion {
                slot: slot as u32,
                addr,
                source,
            })?;
        }
        self.memory = Some(mem.clone());
        Ok(())
    }

    fn create_vcpu(&self, id: u8) -> Result<KvmVcpu, VmError> {
        let fd = self.fd.create_vcpu(u64::from(id)).map_err(|e| VmError::CreateVcpu(id, e))?;
        let want = kvm_bindings::KVM_SYNC_X86_REGS | kvm_bindings::KVM_SYNC_X86_SREGS;
        let caps = self.fd.check_extension_int(Cap::SyncRegs) as u32;
        Ok(KvmVcpu::new(id, fd, caps & want == want))
    }

    fn supported_cpuid(&self) -> Result<CpuId, VmError> {
        if let Some(c) = self.supported_cpuid.get() {
            return Ok(c.clone());
        }
        let c = self.kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(VmError::SupportedCpuid)?;
        Ok(self.supported_cpuid.get_or_init(|| c).clone())
    }

    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd.register_irqfd(fd, gsi).map_err(|e| VmError::RegisterIrqfd(gsi, e))
    }

    fn register_ioevent(&self, fd: &EventFd, mmio_addr: u64) -> Result<(), VmError> {
        self.fd
            .register_ioevent(fd, &IoEventAddress::Mmio(mmio_addr), kvm_ioctls::NoDatamatch)
            .map_err(|e| VmError::RegisterIoevent(mmio_addr, e))
    }

    fn set_irq_line(&self, irq: u32, active: bool) -> Result<(), VmError> {
        self.fd.set_irq_line(irq, active).map_err(|e| VmError::SetIrqLine(irq, e))
    }
}
