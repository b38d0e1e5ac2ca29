//! One bare-guest run, start to finish: load the ELF into fresh guest memory, build the address
//! space and CPU state, then drive the vCPU, turning syscall exits into service calls and
//! exception exits into [`BareError::GuestFault`].

use std::sync::Arc;
use std::time::Instant;

use kvm_bindings::kvm_sregs;

use super::control::{self, Control, Stop};
use super::cpu::{self, EXCEPTION_PORT_BASE, EXCEPTION_VECTORS, SYSCALL_PORT};
use super::files::RunDir;
use super::layout::{write_page_tables, Layout};
use super::snapshot::{self, BareSnapshot, SnapshotOut};
use super::syscalls::{Action, Forward, Service, SYS_READ};
use super::{elf, stack, BareConfig, BareError, BareOutcome, BareStats, GuestEnd, RestoreConfig};
use crate::arch::x86_64::cpuid;
use crate::host::KvmKind;
use crate::snapshot::vcpu::{FpuState, RegsState};
use crate::snapshot::SnapshotError;
use crate::stats::RestoreInfo;
use crate::vstate::memory::{create_guest_memory, read_u64, write_bytes, MemRange};
use crate::vstate::{run_vcpu, ExitHandler, KvmVm, Vcpu, VcpuExit, Vm, VmExit, VmOptions};

/// Records named phase durations.
struct Phases {
    last: Instant,
    list: Vec<(String, u64)>,
}

impl Phases {
    fn new() -> Phases {
        Phases { last: Instant::now(), list: Vec::new() }
    }

    fn lap(&mut self, name: &str) {
        let now = Instant::now();
        self.list.push((name.to_string(), (now - self.last).as_nanos() as u64));
        self.last = now;
    }
}

fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    // SAFETY: `b` is writable for 16 bytes. On failure the bytes stay zero, which only weakens
    // the guest's AT_RANDOM seed (the workload does not read it).
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    b
}

/// This process's peak resident set (VmHWM), in KiB, from its `/proc/self/status` (opened
/// before the jail hid /proc).
fn peak_rss_kib(status: Option<std::fs::File>) -> Option<u64> {
    let mut status_text = String::new();
    std::io::Read::read_to_string(&mut status?, &mut status_text).ok()?;
    let status = status_text;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resident guest memory in KiB, counted with mincore(2) over the guest mapping.
fn resident_kib(mem: &crate::vstate::GuestMemoryMmap, size: u64) -> Result<u64, crate::vstate::MemoryError> {
    let host = crate::vstate::memory::host_range(mem, 0, size)?;
    let pages = size.div_ceil(4096) as usize;
    let mut vec = vec![0u8; pages];
    // SAFETY: `host..host+size` is one live mapping owned by `mem`, page aligned; `vec` has
    // one byte per page as mincore requires.
    let rc = unsafe { libc::mincore(host.cast(), size as usize, vec.as_mut_ptr()) };
    if rc != 0 {
        return Ok(0);
    }
    Ok(vec.iter().filter(|&&b| b & 1 != 0).count() as u64 * 4)
}

/// Run the guest described by `cfg` to completion (or, with `snapshot_to`, until it blocks
/// reading stdin, where it is saved).
pub fn run(cfg: &BareConfig) -> Result<BareOutcome, BareError> {
    let mut phases = Phases::new();
    if cfg.snapshot_to.is_some() && (cfg.net.is_some() || cfg.run_dir.is_some()) {
        return Err(BareError::SnapshotGrants);
    }
    let bytes = std::fs::read(&cfg.elf).map_err(|source| BareError::ReadElf { path: cfg.elf.clone(), source })?;
    let image = elf::parse(&bytes).map_err(|source| BareError::Elf { path: cfg.elf.clone(), source })?;
    let layout = Layout::plan(u64::from(cfg.mem_mib) << 20, &image)?;
    let initial_stack = stack::build(layout.stack_top, &cfg.argv, &cfg.env, &image, random16())?;
    phases.lap("parse_elf");

    // The private network namespace first: unshare moves only the calling thread, and the
    // VMM is still single-threaded here.
    if let Some(net) = &cfg.net {
        super::net::enter_private_netns(net)?;
        phases.lap("netns");
    }
    let forward = Forward {
        files: cfg.run_dir.as_deref().map(|d| RunDir::open(d, cfg.max_file_mib << 20)).transpose()?,
        peer: cfg.net.as_ref().map(|n| n.peer),
    };
    // Made before the jail hides the file system; removed again unless a snapshot is written.
    let snapshot = cfg.snapshot_to.as_deref().map(|d| SnapshotOut::create(d, layout.mem_size)).transpose()?;

    let kvm_kind = crate::host::kvm_kind();
    let mut vm = KvmVm::new(VmOptions { irqchip: false })?;
    phases.lap("create_vm");

    let mem = create_guest_memory(&[MemRange { start: 0, size: layout.mem_size as usize }])?;
    vm.register_memory(&mem)?;
    phases.lap("guest_memory");

    let cr3 = write_page_tables(&mem, &layout)?;
    cpu::write_system_tables(&mem)?;
    for seg in &image.segments {
        let file = &bytes[seg.offset as usize..(seg.offset + seg.filesz) as usize];
        write_bytes(&mem, seg.vaddr, file)?; // the rest up to memsz is fresh, zero memory
    }
    write_bytes(&mem, initial_stack.sp, &initial_stack.bytes)?;
    phases.lap("load_guest");

    let mut vcpu = vm.create_vcpu(0)?;
    let spec = cpuid::CpuidSpec { vcpu_id: 0, vcpus: 1, pvm: kvm_kind == KvmKind::SoftwarePvm };
    vcpu.set_cpuid(&cpuid::filter(&vm.supported_cpuid()?, spec))?;
    let user_sregs = cpu::setup_vcpu(&vcpu, cr3, image.entry, initial_stack.sp)?;
    let sync_regs = std::env::var_os("CVBENCH_VMM_NO_SYNC_REGS").is_none() && vcpu.enable_sync_regs();
    phases.lap("setup_vcpu");

    let control = Arc::new(Control::new()?);
    let service = Service::new(mem.clone(), layout, Arc::clone(&control), forward);
    let parts = Parts { vcpu, mem, layout, cr3, service, control, user_sregs, sync_regs, kvm_kind, snapshot };
    let opts = DriveOpts {
        timeout: cfg.timeout,
        jail: cfg.jail,
        measure_memory: cfg.measure_memory,
        selftest_forbidden_syscall: cfg.selftest_forbidden_syscall,
    };
    let mut outcome = drive(parts, &opts, phases, None)?;
    if cfg.snapshot_to.is_some() && outcome.stats.snapshot.is_none() {
        let end = match outcome.end {
            GuestEnd::Exited(code) => format!("exited with status {code}"),
            GuestEnd::Signalled(sig) => format!("was stopped by signal {sig}"),
            ref other => format!("ended ({other:?})"),
        };
        let dir = cfg.snapshot_to.clone().unwrap_or_default();
        return Err(SnapshotError::GuestEnded { dir, end }.into());
    }
    outcome.stats.kvm_kind = Some(kvm_kind);
    Ok(outcome)
}

/// Restore the bare guest saved in `cfg.snapshot` and run it to completion. Everything is
/// read and checked before the VM is created, so a bad snapshot never starts a guest.
/// `ready`, when given, gets one line (`restored`) once the guest is about to resume, so a
/// caller can time the restore and then send the go line.
pub fn restore(cfg: &RestoreConfig, ready: Option<std::fs::File>) -> Result<BareOutcome, BareError> {
    let t0 = Instant::now();
    let mut phases = Phases::new();
    let checked = snapshot::read(&cfg.snapshot)?;
    let memory_file = snapshot::open_memory(&cfg.snapshot, &checked, cfg.mem_mib)?;
    phases.lap("read_state");

    let kvm_kind = crate::host::kvm_kind();
    let mut vm = KvmVm::new(VmOptions { irqchip: false })?;
    phases.lap("create_vm");

    let layout = checked.layout;
    let mem = crate::snapshot::memory::restore(memory_file, layout.mem_size, cfg.load)
        .map_err(|source| SnapshotError::Map { path: cfg.snapshot.join(crate::snapshot::MEMORY_FILE), source })?;
    vm.register_memory(&mem)?;
    phases.lap("restore_memory");

    let snap = &checked.snap;
    let mut vcpu = vm.create_vcpu(0)?;
    let spec = cpuid::CpuidSpec { vcpu_id: 0, vcpus: 1, pvm: kvm_kind == KvmKind::SoftwarePvm };
    vcpu.set_cpuid(&cpuid::filter(&vm.supported_cpuid()?, spec))?;
    let regs = kvm_bindings::kvm_regs::from(&snap.regs);
    // The fixed part of the CPU state (MSRs, segments, paging root) is the bare VM's own and is
    // rebuilt; the saved registers and x87/SSE state go on top.
    let user_sregs = cpu::setup_vcpu(&vcpu, snap.cr3, regs.rip, regs.rsp)?;
    vcpu.set_fpu(&kvm_bindings::kvm_fpu::from(&snap.fpu))?;
    vcpu.set_regs(&regs)?;
    let sync_regs = std::env::var_os("CVBENCH_VMM_NO_SYNC_REGS").is_none() && vcpu.enable_sync_regs();
    phases.lap("restore_vcpu");

    let control = Arc::new(Control::new()?);
    let service = Service::restored(mem.clone(), layout, Arc::clone(&control), checked.heap, &snap.service);
    let parts =
        Parts { vcpu, mem, layout, cr3: snap.cr3, service, control, user_sregs, sync_regs, kvm_kind, snapshot: None };
    let opts = DriveOpts {
        timeout: cfg.timeout,
        jail: cfg.jail,
        measure_memory: cfg.measure_memory,
        selftest_forbidden_syscall: false,
    };
    let resume = Resume { regs, ready, t0, load: cfg.load };
    let mut outcome = drive(parts, &opts, phases, Some(resume))?;
    outcome.stats.kvm_kind = Some(kvm_kind);
    Ok(outcome)
}

/// A set-up VM, fresh or restored, ready for the run loop.
struct Parts {
    vcpu: crate::vstate::KvmVcpu,
    mem: crate::vstate::GuestMemoryMmap,
    layout: Layout,
    cr3: u64,
    service: Service,
    control: Arc<Control>,
    user_sregs: kvm_sregs,
    sync_regs: bool,
    kvm_kind: KvmKind,
    snapshot: Option<SnapshotOut>,
}

struct DriveOpts {
    timeout: Option<std::time::Duration>,
    jail: bool,
    measure_memory: bool,
    selftest_forbidden_syscall: bool,
}

/// A restored guest's pending system call and the restore's bookkeeping.
struct Resume {
    regs: kvm_bindings::kvm_regs,
    ready: Option<std::fs::File>,
    t0: Instant,
    load: crate::snapshot::memory::Load,
}

/// This process's (minor, major) page faults so far.
fn own_faults() -> (u64, u64) {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    (ru.ru_minflt as u64, ru.ru_majflt as u64)
}

/// Arm the stop signals and the deadline, jail the VMM, and run the vCPU until the guest ends.
fn drive(p: Parts, opts: &DriveOpts, mut phases: Phases, resume: Option<Resume>) -> Result<BareOutcome, BareError> {
    let Parts { mut vcpu, mem, layout, cr3, service, control, user_sregs, sync_regs, kvm_kind, snapshot } = p;
    let kick_flag = vcpu.immediate_exit_flag();
    // SAFETY: the flag lives in the vCPU's kvm_run mapping; `vcpu` outlives `armed`, which is
    // dropped right after the run loop. The VMM runs one guest per process.
    let armed = unsafe { control::arm(&control, kick_flag, opts.timeout)? };
    let mut handler = BareExits {
        service,
        control,
        user_sregs,
        mem,
        end: None,
        vm_exits: 0,
        service_ns: 0,
        timeout: opts.timeout.unwrap_or_default(),
        snapshot,
        taken: None,
        layout,
        cr3,
    };
    let proc_status = opts.measure_memory.then(|| std::fs::File::open("/proc/self/status").ok()).flatten();
    if opts.jail {
        crate::jail::seccomp::install_sigsys_reporter()?;
        crate::jail::enter()?;
        crate::jail::install(crate::jail::ThreadKind::BareVcpu)?;
        phases.lap("jail");
    }
    if opts.selftest_forbidden_syscall {
        let mut buf = [0u8; 64];
        // SAFETY: getcwd into a valid buffer; the filter is expected to stop it first.
        unsafe { libc::getcwd(buf.as_mut_ptr().cast(), buf.len()) };
    }
    let mut restore_info = None;
    let result = match resume {
        None => run_vcpu(&mut vcpu, &mut handler),
        Some(r) => {
            let restore_ns = r.t0.elapsed().as_nanos() as u64;
            let (minflt_restore, _) = own_faults();
            if let Some(mut f) = r.ready {
                // The caller times the restore by this line; a closed pipe only loses that.
                let _ = std::io::Write::write_all(&mut f, b"restored\n");
            }
            let before = own_faults();
            // The guest is inside its read from stdin: service that call first, then run on.
            let result = match handler.service_call(&mut vcpu, r.regs) {
                Ok(VcpuExit::Continue) => run_vcpu(&mut vcpu, &mut handler),
                Ok(VcpuExit::Shutdown(code)) => Ok(code),
                Err(e) => Err(e),
            };
            let after = own_faults();
            restore_info = Some(RestoreInfo {
                load: r.load,
                restore_ns,
                minflt_after_restore: after.0.saturating_sub(before.0),
                majflt_after_restore: after.1.saturating_sub(before.1),
                minflt_restore,
            });
            result
        }
    };
    drop(armed);
    phases.lap("run");
    let code = result?;
    let (vmm_peak_rss_kib, guest_resident_kib) = if opts.measure_memory {
        (peak_rss_kib(proc_status), resident_kib(&handler.mem, layout.mem_size).ok())
    } else {
        (None, None)
    };

    let stats = BareStats {
        phases: phases.list,
        vm_exits: handler.vm_exits,
        syscalls: handler.service.stats.total,
        syscall_service_ns: handler.service_ns,
        unsupported_syscalls: handler.service.stats.unsupported.iter().copied().collect(),
        kvm_kind: Some(kvm_kind),
        sync_regs,
        guest_mem_kib: layout.mem_size >> 10,
        vmm_peak_rss_kib,
        guest_resident_kib,
        forwarded_calls: handler.service.stats.forwarded,
        refused_calls: handler.service.stats.refused,
        refusals: std::mem::take(&mut handler.service.stats.refusals),
        jailed: opts.jail,
        seccomp_allowed_syscalls: opts
            .jail
            .then(|| crate::jail::seccomp::allowed_count(crate::jail::ThreadKind::BareVcpu)),
        snapshot: handler.taken.take(),
        restore: restore_info,
    };
    let end = handler.end.clone().unwrap_or(GuestEnd::Exited(code));
    Ok(BareOutcome { end, stats })
}

/// Exit handling for the bare guest.
struct BareExits {
    service: Service,
    control: Arc<Control>,
    user_sregs: kvm_sregs,
    mem: crate::vstate::GuestMemoryMmap,
    end: Option<GuestEnd>,
    vm_exits: u64,
    service_ns: u64,
    timeout: std::time::Duration,
    /// Where to save the guest when it blocks reading stdin, if asked.
    snapshot: Option<SnapshotOut>,
    taken: Option<crate::stats::SnapshotInfo>,
    layout: Layout,
    cr3: u64,
}

impl BareExits {
    fn stop(&mut self, stop: Stop) -> Result<VcpuExit, BareError> {
        match stop {
            Stop::TimedOut => Err(BareError::Timeout(self.timeout)),
            Stop::Signal(sig) => {
                self.end = Some(GuestEnd::Signalled(sig));
                Ok(VcpuExit::Shutdown(128 + sig))
            }
        }
    }

    fn syscall<V: Vcpu + ?Sized>(&mut self, vcpu: &mut V) -> Result<VcpuExit, BareError> {
        let regs = vcpu.exit_regs()?;
        if self.snapshot.is_some() && regs.rax == SYS_READ && self.service.is_stdin(regs.rdi as i32) {
            return self.take_snapshot(vcpu, &regs);
        }
        self.service_call(vcpu, regs)
    }

    /// Save the guest, stopped inside its read from stdin, and end the run.
    fn take_snapshot<V: Vcpu + ?Sized>(
        &mut self,
        vcpu: &mut V,
        regs: &kvm_bindings::kvm_regs,
    ) -> Result<VcpuExit, BareError> {
        let Some(out) = self.snapshot.take() else { return Ok(VcpuExit::Continue) };
        let service = self.service.save().map_err(BareError::SnapshotState)?;
        let snap = BareSnapshot {
            vmm_version: env!("CARGO_PKG_VERSION").to_string(),
            mem_size: self.layout.mem_size,
            heap_start: self.layout.heap_start,
            cr3: self.cr3,
            regs: RegsState::from(regs),
            fpu: FpuState::from(&vcpu.fpu()?),
            service,
            data_pages: 0,
        };
        self.taken = Some(out.write(&self.mem, snap)?);
        self.end = Some(GuestEnd::Snapshotted);
        Ok(VcpuExit::Shutdown(0))
    }

    /// Service the system call the guest made with `regs` and set up its return.
    fn service_call<V: Vcpu + ?Sized>(
        &mut self,
        vcpu: &mut V,
        mut regs: kvm_bindings::kvm_regs,
    ) -> Result<VcpuExit, BareError> {
        let t = Instant::now();
        let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
        match self.service.call(regs.rax, args) {
            Action::Return(v) => {
                // What sysret would do: resume at RCX with RFLAGS from R11 (RF cleared).
                regs.rax = v as u64;
                regs.rip = regs.rcx;
                regs.rflags = (regs.r11 & !(1 << 16)) | 0x2;
                vcpu.set_entry_state(&regs, Some(&self.user_sregs))?;
            }
            Action::Exit(code) => {
                self.end = Some(GuestEnd::Exited(code));
                return Ok(VcpuExit::Shutdown(code));
            }
            Action::Stop(stop) => return self.stop(stop),
        }
        self.service_ns += t.elapsed().as_nanos() as u64;
        match self.control.check(self.service.blocked()) {
            Some(stop) => self.stop(stop),
            None => Ok(VcpuExit::Continue),
        }
    }

    fn fault<V: Vcpu + ?Sized>(&mut self, vcpu: &mut V, vector: u8) -> BareError {
        let (rip, error_code) = match vcpu.regs() {
            Ok(regs) => {
                // The CPU pushed [error code], RIP, CS, RFLAGS, RSP, SS on the exception stack.
                let has_code = cpu::has_error_code(vector);
                let frame = regs.rsp + if has_code { 8 } else { 0 };
                let code = if has_code { read_u64(&self.mem, regs.rsp).ok() } else { None };
                (read_u64(&self.mem, frame).unwrap_or(regs.rip), code)
            }
            Err(_) => (0, None),
        };
        let fault_addr = if vector == 14 { vcpu.sregs().ok().map(|s| s.cr2) } else { None };
        BareError::GuestFault { vector, name: cpu::vector_name(vector), rip, fault_addr, error_code }
    }
}

impl<V: Vcpu + ?Sized> ExitHandler<V> for BareExits {
    type Error = BareError;

    fn handle(&mut self, vcpu: &mut V, exit: VmExit) -> Result<VcpuExit, BareError> {
        self.vm_exits += 1;
        let rip = || vcpu.regs().map(|r| r.rip).unwrap_or(0);
        match exit {
            VmExit::IoOut { port: SYSCALL_PORT, .. } => self.syscall(vcpu),
            VmExit::IoOut { port, .. }
                if (EXCEPTION_PORT_BASE..EXCEPTION_PORT_BASE + EXCEPTION_VECTORS).contains(&port) =>
            {
                Err(self.fault(vcpu, (port - EXCEPTION_PORT_BASE) as u8))
            }
            VmExit::Interrupted => {
                // Clear the kick before looking at the flags, so a signal landing after the
                // check sets it again and the next KVM_RUN returns at once.
                vcpu.set_immediate_exit(false);
                match self.control.check(self.service.blocked()) {
                    Some(stop) => self.stop(stop),
                    None => Ok(VcpuExit::Continue),
                }
            }
            VmExit::Shutdown => Err(BareError::TripleFault { rip: rip() }),
            other => Err(BareError::UnexpectedExit { what: format!("{other:?}"), rip: rip() }),
        }
    }
}
