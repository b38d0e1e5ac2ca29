//! The vCPU half of the hypervisor seam: the [`Vcpu`] trait, its kvm-ioctls implementation
//! [`KvmVcpu`], the exits a VMM sees ([`VmExit`]) and the run loop that turns them into
//! [`VcpuExit`] decisions.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs, CpuId, Msrs};
use kvm_ioctls::VcpuFd;

/// Errors from vCPU ioctls.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("KVM_GET_REGS failed on vCPU {0}")]
    GetRegs(u8, #[source] kvm_ioctls::Error),
    #[error("KVM_SET_REGS failed on vCPU {0}")]
    SetRegs(u8, #[source] kvm_ioctls::Error),
    #[error("KVM_GET_SREGS failed on vCPU {0}")]
    GetSregs(u8, #[source] kvm_ioctls::Error),
    #[error("KVM_SET_SREGS failed on vCPU {0}")]
    SetSregs(u8, #[source] kvm_ioctls::Error),
    #[error("KVM_GET_FPU failed on vCPU {0}")]
    GetFpu(u8, #[source] kvm_ioctls::Error),
    #[error("KVM_SET_FPU failed on vCPU {0}")]
    SetFpu(u8, #[source] kvm_ioctls::Error),
    #[error("KVM_SET_CPUID2 failed on vCPU {0}")]
    SetCpuid(u8, #[source] kvm_ioctls::Error),
    #[error("KVM_SET_MSRS failed on vCPU {0}")]
    SetMsrs(u8, #[source] kvm_ioctls::Error),
    #[error("KVM_SET_MSRS set only {set} of {wanted} MSRs on vCPU {id}")]
    SetMsrsPartial { id: u8, set: usize, wanted: usize },
    #[error("building the MSR list for vCPU {0} failed")]
    MsrList(u8),
    #[error("KVM_RUN failed on vCPU {0}")]
    Run(u8, #[source] kvm_ioctls::Error),
}

/// Up to 8 bytes of port-I/O or MMIO data carried by an exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitData {
    bytes: [u8; 8],
    len: u8,
}

impl ExitData {
    /// Copy up to 8 bytes of `data`.
    pub fn new(data: &[u8]) -> ExitData {
        let mut d = ExitData::default();
        let n = data.len().min(8);
        d.bytes[..n].copy_from_slice(&data[..n]);
        d.len = n as u8;
        d
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A vCPU exit, with its data copied out of the shared `kvm_run` page so the handler may use
/// the vCPU freely while deciding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// `out` to `port`.
    IoOut { port: u16, data: ExitData },
    /// `in` from `port` of `len` bytes; answer with [`Vcpu::complete_io_in`] before the next run.
    IoIn { port: u16, len: usize },
    /// MMIO read; answer with [`Vcpu::complete_mmio_read`] before the next run.
    MmioRead { addr: u64, len: usize },
    /// MMIO write.
    MmioWrite { addr: u64, data: ExitData },
    /// `hlt` with interrupts unable to wake the vCPU.
    Hlt,
    /// Triple fault or a reset request.
    Shutdown,
    /// The guest asked for power-off or reset through a paravirtual path.
    SystemEvent { kind: u32 },
    /// VM entry failed; the hardware reason code.
    FailEntry { reason: u64 },
    /// KVM could not handle an exit (e.g. emulation failure).
    InternalError,
    /// KVM_RUN returned EINTR/EAGAIN: a host signal kicked the vCPU out (timeouts, stop requests).
    Interrupted,
    /// Any other exit reason, by name.
    Other(&'static str),
}

/// What the VMM decided after an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuExit {
    /// Resume the guest.
    Continue,
    /// The guest is done; the VMM exits with this code.
    Shutdown(i32),
}

/// What a VMM needs from a vCPU. Implemented by [`KvmVcpu`]; tests implement it with fakes.
pub trait Vcpu {
    fn id(&self) -> u8;
    fn regs(&self) -> Result<kvm_regs, VcpuError>;
    fn set_regs(&self, regs: &kvm_regs) -> Result<(), VcpuError>;
    fn sregs(&self) -> Result<kvm_sregs, VcpuError>;
    fn set_sregs(&self, sregs: &kvm_sregs) -> Result<(), VcpuError>;
    fn set_fpu(&self, fpu: &kvm_fpu) -> Result<(), VcpuError>;
    /// The x87/SSE state (a snapshot keeps it: the guest may hold live XMM values across a
    /// system call).
    fn fpu(&self) -> Result<kvm_fpu, VcpuError>;
    fn set_cpuid(&self, cpuid: &CpuId) -> Result<(), VcpuError>;
    /// Set MSRs given as (index, value) pairs; all must be accepted.
    fn set_msrs(&self, msrs: &[(u32, u64)]) -> Result<(), VcpuError>;
    /// Enter the guest until the next exit.
    fn run(&mut self) -> Result<VmExit, VcpuError>;
    /// Supply the data for the pending [`VmExit::IoIn`].
    fn complete_io_in(&mut self, data: &[u8]);
    /// Supply the data for the pending [`VmExit::MmioRead`].
    fn complete_mmio_read(&mut self, data: &[u8]);
    /// When set, the next [`Vcpu::run`] returns [`VmExit::Interrupted`] without entering.
    fn set_immediate_exit(&mut self, on: bool);
    /// Address of `kvm_run.immediate_exit`, for a signal handler to stop the next entry (the
    /// race-free way to kick a vCPU). Valid while the vCPU lives.
    fn immediate_exit_flag(&mut self) -> Option<std::ptr::NonNull<u8>> {
        None
    }
    /// Have registers travel through the shared `kvm_run` page (KVM_CAP_SYNC_REGS), so
    /// [`Vcpu::exit_regs`] and [`Vcpu::set_entry_state`] cost no ioctl. Returns whether it is
    /// on; without support they fall back to KVM_GET/SET_REGS and KVM_SET_SREGS.
    fn enable_sync_regs(&mut self) -> bool {
        false
    }
    /// The general registers as of the last exit.
    fn exit_regs(&mut self) -> Result<kvm_regs, VcpuError> {
        self.regs()
    }
    /// Registers (and optionally special registers) the next entry starts from.
    fn set_entry_state(&mut self, regs: &kvm_regs, sregs: Option<&kvm_sregs>) -> Result<(), VcpuError> {
        self.set_regs(regs)?;
        if let Some(s) = sregs {
            self.set_sregs(s)?;
        }
        Ok(())
    }
}

/// Decides what each exit means for one guest kind.
pub trait ExitHandler<V: Vcpu + ?Sized> {
    type Error: From<VcpuError>;
    fn handle(&mut self, vcpu: &mut V, exit: VmExit) -> Result<VcpuExit, Self::Error>;
}

/// Run `vcpu` until the handler decides the guest is done; returns the exit code.
pub fn run_vcpu<V, H>(vcpu: &mut V, handler: &mut H) -> Result<i32, H::Error>
where
    V: Vcpu + ?Sized,
    H: ExitHandler<V>,
{
    loop {
        let exit = vcpu.run()?;
        match handler.handle(vcpu, exit)? {
            VcpuExit::Continue => continue,
            VcpuExit::Shutdown(code) => return Ok(code),
        }
    }
}

/// A vCPU backed by a KVM vCPU fd.
pub struct KvmVcpu {
    id: u8,
    fd: VcpuFd,
    /// KVM offers synchronising general and special registers through `kvm_run`.
    sync_supported: bool,
    sync_on: bool,
}

impl KvmVcpu {
    pub(super) fn new(id: u8, fd: VcpuFd, sync_supported: bool) -> KvmVcpu {
        KvmVcpu { id, fd, sync_supported, sync_on: false }
    }

    /// The raw vCPU handle, for what the seam does not cover yet.
    pub fn fd(&mut self) -> &mut VcpuFd {
        &mut self.fd
    }
}

impl Vcpu for KvmVcpu {
    fn id(&self) -> u8 {
        self.id
    }

    fn regs(&self) -> Result<kvm_regs, VcpuError> {
        self.fd.get_regs().map_err(|e| VcpuError::GetRegs(self.id, e))
    }

    fn set_regs(&self, regs: &kvm_regs) -> Result<(), VcpuError> {
        self.fd.set_regs(regs).map_err(|e| VcpuError::SetRegs(self.id, e))
    }

    fn sregs(&self) -> Result<kvm_sregs, VcpuError> {
        self.fd.get_sregs().map_err(|e| VcpuError::GetSregs(self.id, e))
    }

    fn set_sregs(&self, sregs: &kvm_sregs) -> Result<(), VcpuError> {
        self.fd.set_sregs(sregs).map_err(|e| VcpuError::SetSregs(self.id, e))
    }

    fn set_fpu(&self, fpu: &kvm_fpu) -> Result<(), VcpuError> {
        self.fd.set_fpu(fpu).map_err(|e| VcpuError::SetFpu(self.id, e))
    }

    fn fpu(&self) -> Result<kvm_fpu, VcpuError> {
        self.fd.get_fpu().map_err(|e| VcpuError::GetFpu(self.id, e))
    }

    fn set_cpuid(&self, cpuid: &CpuId) -> Result<(), VcpuError> {
        self.fd.set_cpuid2(cpuid).map_err(|e| VcpuError::SetCpuid(self.id, e))
    }

    fn set_msrs(&self, msrs: &[(u32, u64)]) -> Result<(), VcpuError> {
        let entries: Vec<kvm_bindings::kvm_msr_entry> = msrs
            .iter()
            .map(|&(index, data)| kvm_bindings::kvm_msr_entry { index, data, ..Default::default() })
            .collect();
        let list = Msrs::from_entries(&entries).map_err(|_| VcpuError::MsrList(self.id))?;
        let set = self.fd.set_msrs(&list).map_err(|e| VcpuError::SetMsrs(self.id, e))?;
        if set != msrs.len() {
            return Err(VcpuError::SetMsrsPartial { id: self.id, set, wanted: msrs.len() });
        }
        Ok(())
    }

    fn run(&mut self) -> Result<VmExit, VcpuError> {
        use kvm_ioctls::VcpuExit as K;
        let exit = match self.fd.run() {
            Ok(K::IoOut(port, data)) => VmExit::IoOut { port, data: ExitData::new(data) },
            Ok(K::IoIn(port, data)) => VmExit::IoIn { port, len: data.len() },
            Ok(K::MmioRead(addr, data)) => VmExit::MmioRead { addr, len: data.len() },
            Ok(K::MmioWrite(addr, data)) => VmExit::MmioWrite { addr, data: ExitData::new(data) },
            Ok(K::Hlt) => VmExit::Hlt,
            Ok(K::Shutdown) => VmExit::Shutdown,
            Ok(K::SystemEvent(kind, _)) => VmExit::SystemEvent { kind },
            Ok(K::FailEntry(reason, _)) => VmExit::FailEntry { reason },
            Ok(K::InternalError) => VmExit::InternalError,
            Ok(K::Intr) => VmExit::Interrupted,
            Ok(K::Exception) => VmExit::Other("exception"),
            Ok(K::Debug(_)) => VmExit::Other("debug"),
            Ok(K::Unknown) => VmExit::Other("unknown"),
            Ok(_) => VmExit::Other("unhandled exit reason"),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => VmExit::Interrupted,
            Err(e) => return Err(VcpuError::Run(self.id, e)),
        };
        Ok(exit)
    }

    fn complete_io_in(&mut self, data: &[u8]) {
        let run = self.fd.get_kvm_run();
        if run.exit_reason != kvm_bindings::KVM_EXIT_IO {
            return;
        }
        // SAFETY: exit_reason says the `io` member of the union is the live one.
        let io = unsafe { run.__bindgen_anon_1.io };
        let room = io.size as usize * io.count as usize;
        let n = data.len().min(room);
        let base = (run as *mut kvm_bindings::kvm_run).cast::<u8>();
        // SAFETY: the kernel places the I/O data `data_offset` bytes into the kvm_run mapping,
        // which is mapped for the whole vCPU mmap size and holds `size * count` bytes there;
        // `n` is at most that, and `data` does not alias the mapping.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(io.data_offset as usize), n) };
    }

    fn complete_mmio_read(&mut self, data: &[u8]) {
        let run = self.fd.get_kvm_run();
        if run.exit_reason != kvm_bindings::KVM_EXIT_MMIO {
            return;
        }
        // SAFETY: exit_reason says the `mmio` member of the union is the live one.
        let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
        let n = data.len().min(mmio.len as usize).min(mmio.data.len());
        mmio.data[..n].copy_from_slice(&data[..n]);
    }

    fn set_immediate_exit(&mut self, on: bool) {
        self.fd.set_kvm_immediate_exit(u8::from(on));
    }

    fn immediate_exit_flag(&mut self) -> Option<std::ptr::NonNull<u8>> {
        Some(std::ptr::NonNull::from(&mut self.fd.get_kvm_run().immediate_exit))
    }

    fn enable_sync_regs(&mut self) -> bool {
        if self.sync_supported {
            self.fd.set_sync_valid_reg(kvm_ioctls::SyncReg::Register);
            self.sync_on = true;
        }
        self.sync_on
    }

    fn exit_regs(&mut self) -> Result<kvm_regs, VcpuError> {
        if self.sync_on {
            Ok(self.fd.sync_regs().regs)
        } else {
            self.regs()
        }
    }

    fn set_entry_state(&mut self, regs: &kvm_regs, sregs: Option<&kvm_sregs>) -> Result<(), VcpuError> {
        if !self.sync_on {
            self.set_regs(regs)?;
            if let Some(s) = sregs {
                self.set_sregs(s)?;
            }
            return Ok(());
        }
        let sync = self.fd.sync_regs_mut();
        sync.regs = *regs;
        if let Some(s) = sregs {
            sync.sregs = *s;
        }
        self.fd.set_sync_dirty_reg(kvm_ioctls::SyncReg::Register);
        if sregs.is_some() {
            self.fd.set_sync_dirty_reg(kvm_ioctls::SyncReg::SystemRegister);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vCPU that replays a fixed list of exits.
    struct Replay {
        exits: Vec<VmExit>,
    }

    impl Vcpu for Replay {
        fn id(&self) -> u8 {
            0
        }
        fn regs(&self) -> Result<kvm_regs, VcpuError> {
            Ok(kvm_regs::default())
        }
        fn set_regs(&self, _: &kvm_regs) -> Result<(), VcpuError> {
            Ok(())
        }
        fn sregs(&self) -> Result<kvm_sregs, VcpuError> {
            Ok(kvm_sregs::default())
        }
        fn set_sregs(&self, _: &kvm_sregs) -> Result<(), VcpuError> {
            Ok(())
        }
        fn set_fpu(&self, _: &kvm_fpu) -> Result<(), VcpuError> {
            Ok(())
        }
        fn fpu(&self) -> Result<kvm_fpu, VcpuError> {
            Ok(kvm_fpu::default())
        }
        fn set_cpuid(&self, _: &CpuId) -> Result<(), VcpuError> {
            Ok(())
        }
        fn set_msrs(&self, _: &[(u32, u64)]) -> Result<(), VcpuError> {
            Ok(())
        }
        fn run(&mut self) -> Result<VmExit, VcpuError> {
            Ok(self.exits.remove(0))
        }
        fn complete_io_in(&mut self, _: &[u8]) {}
        fn complete_mmio_read(&mut self, _: &[u8]) {}
        fn set_immediate_exit(&mut self, _: bool) {}
    }

    struct PortExit {
        seen: usize,
    }

    impl ExitHandler<Replay> for PortExit {
        type Error = VcpuError;
        fn handle(&mut self, _: &mut Replay, exit: VmExit) -> Result<VcpuExit, VcpuError> {
            self.seen += 1;
            Ok(match exit {
                VmExit::IoOut { port: 0x501, data } => VcpuExit::Shutdown(i32::from(data.as_slice()[0])),
                _ => VcpuExit::Continue,
            })
        }
    }

    #[test]
    fn run_vcpu_continues_until_the_handler_shuts_down() {
        let mut vcpu = Replay {
            exits: vec![
                VmExit::Hlt,
                VmExit::IoOut { port: 0x80, data: ExitData::new(&[1]) },
                VmExit::IoOut { port: 0x501, data: ExitData::new(&[7]) },
            ],
        };
        let mut h = PortExit { seen: 0 };
        assert_eq!(run_vcpu(&mut vcpu, &mut h).unwrap(), 7);
        assert_eq!(h.seen, 3);
    }

    #[test]
    fn exit_data_keeps_at_most_eight_bytes() {
        assert_eq!(ExitData::new(&[1, 2, 3]).as_slice(), &[1, 2, 3]);
        assert_eq!(ExitData::new(&[9; 12]).as_slice().len(), 8);
    }
}
