//! Per-thread seccomp allow-lists, compiled with `seccompiler` (rust-vmm's filter compiler,
//! the one Firecracker uses: a maintained crate with argument matching, where the runtime's
//! own compiler only knows container profiles and sits in another crate). A call outside the
//! list traps; the SIGSYS reporter writes `cvbench-vmm: seccomp: blocked system call N` and
//! the VMM exits with [`EXIT_SECCOMP`], so the failure is named and only the VMM dies.
//!
//! Filters stack across clone: a thread inherits its creator's filter and can only narrow it.
//! The Linux VMM's vCPU threads start the virtio workers when the guest activates a device,
//! so the vCPU list also holds what those workers need ([`ThreadKind::Device`] narrows it).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

use super::JailError;

/// Exit status after a call outside the allow-list (128 + SIGSYS, as if killed by it).
pub const EXIT_SECCOMP: i32 = 128 + libc::SIGSYS;

/// Which allow-list a thread gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// The bare VMM's only thread: vCPU loop, system-call service, forwarded I/O.
    BareVcpu,
    /// A Linux guest's vCPU thread (and the device workers it starts).
    Vcpu,
    /// A virtio device worker (tap or disk I/O, eventfds).
    Device,
    /// The Linux VMM's main thread once the vCPUs run: waits, kicks and reports.
    Main,
    /// [`ThreadKind::Main`] of a run that saves a snapshot: it also reads (never sets) the
    /// stopped vCPUs' and the VM's KVM state and writes the two snapshot files it opened
    /// before the jail, and reads its own page-fault counts.
    MainSnapshot,
    /// [`ThreadKind::Main`] of a restored run: it also reads its own page-fault counts.
    MainRestored,
}

/// Every thread: memory, futexes, signals, time, exit, stdio.
const COMMON: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_close,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_tgkill,
    libc::SYS_restart_syscall,
    libc::SYS_poll,
    libc::SYS_ppoll,
    // std checks a descriptor with F_GETFD when closing it (debug builds).
    libc::SYS_fcntl,
];

/// Forwarded I/O and the system-call service of the bare guest.
const BARE: &[i64] = &[
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fcntl,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_lseek,
    libc::SYS_openat2,
    libc::SYS_unlinkat,
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_setsockopt,
    libc::SYS_shutdown,
    libc::SYS_getppid,
    // The guest's getrusage(RUSAGE_SELF) is answered with the VMM's own.
    libc::SYS_getrusage,
    libc::SYS_mincore,
    libc::SYS_setitimer,
    libc::SYS_rt_sigaction,
];

/// Thread creation (the vCPU threads start device workers) and device I/O.
const THREADS: &[i64] = &[
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_prctl,
    libc::SYS_sched_getaffinity,
    libc::SYS_getrandom,
    // A later filter can only narrow: the clone3 filter below and the device threads' own.
    libc::SYS_seccomp,
];
const DEVICE_IO: &[i64] = &[
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_lseek,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
];
const MAIN: &[i64] = &[libc::SYS_rt_sigtimedwait, libc::SYS_fsync];
/// Writing the snapshot files through descriptors opened before the jail, and removing them
/// again (unlinkat relative to the snapshot directory's descriptor, the only directory the
/// jailed VMM can reach) when the guest ends before its snapshot point.
const SNAPSHOT_FILES: &[i64] = &[
    libc::SYS_pwrite64,
    libc::SYS_mincore,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_lseek,
    libc::SYS_unlinkat,
];

const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (0xae << 8) | nr
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;
const KVM_RUN: u64 = ioc(0, 0x80, 0);
const KVM_GET_REGS: u64 = ioc(IOC_READ, 0x81, std::mem::size_of::<kvm_bindings::kvm_regs>());
const KVM_SET_REGS: u64 = ioc(IOC_WRITE, 0x82, std::mem::size_of::<kvm_bindings::kvm_regs>());
const KVM_GET_SREGS: u64 = ioc(IOC_READ, 0x83, std::mem::size_of::<kvm_bindings::kvm_sregs>());
const KVM_SET_SREGS: u64 = ioc(IOC_WRITE, 0x84, std::mem::size_of::<kvm_bindings::kvm_sregs>());
const KVM_GET_FPU: u64 = ioc(IOC_READ, 0x8c, std::mem::size_of::<kvm_bindings::kvm_fpu>());
const KVM_IRQ_LINE: u64 = ioc(IOC_WRITE, 0x61, std::mem::size_of::<kvm_bindings::kvm_irq_level>());
const KVM_GET_XSAVE: u64 = ioc(IOC_READ, 0xa4, std::mem::size_of::<kvm_bindings::kvm_xsave>());
const KVM_GET_XCRS: u64 = ioc(IOC_READ, 0xa6, std::mem::size_of::<kvm_bindings::kvm_xcrs>());
const KVM_GET_LAPIC: u64 = ioc(IOC_READ, 0x8e, std::mem::size_of::<kvm_bindings::kvm_lapic_state>());
const KVM_GET_MSRS: u64 = ioc(IOC_READ | IOC_WRITE, 0x88, std::mem::size_of::<kvm_bindings::kvm_msrs>());
const KVM_GET_MP_STATE: u64 = ioc(IOC_READ, 0x98, std::mem::size_of::<kvm_bindings::kvm_mp_state>());
const KVM_GET_VCPU_EVENTS: u64 = ioc(IOC_READ, 0x9f, std::mem::size_of::<kvm_bindings::kvm_vcpu_events>());
const KVM_GET_DEBUGREGS: u64 = ioc(IOC_READ, 0xa1, std::mem::size_of::<kvm_bindings::kvm_debugregs>());
const KVM_GET_IRQCHIP: u64 = ioc(IOC_READ | IOC_WRITE, 0x62, std::mem::size_of::<kvm_bindings::kvm_irqchip>());
const KVM_GET_PIT2: u64 = ioc(IOC_READ, 0x9f, std::mem::size_of::<kvm_bindings::kvm_pit_state2>());
const KVM_GET_CLOCK: u64 = ioc(IOC_READ, 0x7c, std::mem::size_of::<kvm_bindings::kvm_clock_data>());

/// The state reads of a snapshot: every KVM_GET_* [`crate::snapshot::kvm`] makes, no setter.
fn snapshot_ioctls() -> &'static [u64] {
    &[
        KVM_GET_REGS,
        KVM_GET_SREGS,
        KVM_GET_XSAVE,
        KVM_GET_XCRS,
        KVM_GET_LAPIC,
        KVM_GET_MSRS,
        KVM_GET_MP_STATE,
        KVM_GET_VCPU_EVENTS,
        KVM_GET_DEBUGREGS,
        KVM_GET_IRQCHIP,
        KVM_GET_PIT2,
        KVM_GET_CLOCK,
    ]
}

/// The KVM ioctls a running vCPU makes (KVM_RUN, register access for the syscall path and
/// fault reports, the irq line for devices; KVM_GET_FPU when the bare VM takes a snapshot).
fn vcpu_ioctls() -> &'static [u64] {
    &[KVM_RUN, KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS, KVM_GET_FPU, KVM_IRQ_LINE]
}

/// The system calls of `kind`, and the ioctl requests it may make (empty: no ioctl).
pub fn allowed(kind: ThreadKind) -> (Vec<i64>, &'static [u64]) {
    let mut v: Vec<i64> = COMMON.to_vec();
    let ioctls: &'static [u64] = match kind {
        ThreadKind::BareVcpu => {
            v.extend(BARE);
            vcpu_ioctls()
        }
        ThreadKind::Vcpu => {
            v.extend(THREADS);
            v.extend(DEVICE_IO);
            vcpu_ioctls()
        }
        ThreadKind::Device => {
            v.extend(DEVICE_IO);
            &[]
        }
        ThreadKind::Main => {
            v.extend(MAIN);
            &[]
        }
        ThreadKind::MainSnapshot => {
            v.extend(MAIN);
            v.extend(SNAPSHOT_FILES);
            v.push(libc::SYS_getrusage);
            snapshot_ioctls()
        }
        ThreadKind::MainRestored => {
            v.extend(MAIN);
            v.push(libc::SYS_getrusage);
            &[]
        }
    };
    v.sort_unstable();
    v.dedup();
    (v, ioctls)
}

/// How many system calls `kind` may make (ioctl counted once), for the record.
pub fn allowed_count(kind: ThreadKind) -> usize {
    let (v, ioctls) = allowed(kind);
    v.len() + usize::from(!ioctls.is_empty())
}

/// Compile the allow-list of `kind`.
pub fn filter(kind: ThreadKind) -> Result<BpfProgram, JailError> {
    let err = |e: &dyn std::fmt::Display| JailError::BuildFilter(kind, e.to_string());
    let (calls, ioctls) = allowed(kind);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = calls.into_iter().map(|nr| (nr, Vec::new())).collect();
    if kind == ThreadKind::Vcpu {
        // Threads only: clone must carry CLONE_THREAD (no new processes). clone3 passes this
        // list but a second filter answers it ENOSYS, so glibc falls back to the checkable clone.
        let c = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
            libc::CLONE_THREAD as u64,
        )
        .map_err(|e| err(&e))?;
        rules.insert(libc::SYS_clone, vec![SeccompRule::new(vec![c]).map_err(|e| err(&e))?]);
    }
    if !ioctls.is_empty() {
        let per_request = ioctls
            .iter()
            .map(|&req| {
                let c =
                    SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, req).map_err(|e| err(&e))?;
                SeccompRule::new(vec![c]).map_err(|e| err(&e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        rules.insert(libc::SYS_ioctl, per_request);
    }
    let f = SeccompFilter::new(rules, SeccompAction::Trap, SeccompAction::Allow, TargetArch::x86_64)
        .map_err(|e| err(&e))?;
    f.try_into().map_err(|e: seccompiler::BackendError| err(&e))
}

/// Install the SIGSYS reporter (once per process; before any filter) .
pub fn install_sigsys_reporter() -> Result<(), JailError> {
    // SAFETY: a zeroed sigaction is valid; the handler only formats into a stack buffer and
    // calls write(2) and _exit(2), both async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) != 0 {
            return Err(JailError::SigsysHandler(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // siginfo for SIGSYS: si_signo, si_errno, si_code, padding, then _sigsys { call_addr,
    // syscall, arch }: the system call number is the int at byte 24.
    // SAFETY: the kernel passes a valid siginfo_t (128 bytes) to an SA_SIGINFO handler.
    let nr = unsafe { info.cast::<u8>().add(24).cast::<i32>().read_unaligned() };
    const PREFIX: &[u8] = b"cvbench-vmm: seccomp: blocked system call ";
    let mut msg = [0u8; 64];
    msg[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let (mut d, mut v) = (0, nr.unsigned_abs());
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut n = PREFIX.len();
    while d > 0 {
        d -= 1;
        msg[n] = digits[d];
        n += 1;
    }
    msg[n] = b'\n';
    // SAFETY: write and _exit are async-signal-safe; `msg` is a live stack buffer.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), n + 1);
        libc::_exit(EXIT_SECCOMP);
    }
}

/// A filter answering clone3 with ENOSYS (stacked over a list that lets it through).
fn no_clone3() -> Result<BpfProgram, JailError> {
    let err = |e: &dyn std::fmt::Display| JailError::BuildFilter(ThreadKind::Vcpu, e.to_string());
    let rules = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    let f =
        SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32), TargetArch::x86_64)
            .map_err(|e| err(&e))?;
    f.try_into().map_err(|e: seccompiler::BackendError| err(&e))
}

/// Install `kind`'s filter on the calling thread (sets no_new_privs too).
pub fn install(kind: ThreadKind) -> Result<(), JailError> {
    let prog = filter(kind)?;
    seccompiler::apply_filter(&prog).map_err(|e| JailError::InstallFilter(kind, e))?;
    if kind == ThreadKind::Vcpu {
        seccompiler::apply_filter(&no_clone3()?).map_err(|e| JailError::InstallFilter(kind, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(KVM_RUN, 0xae80);
        assert_eq!(KVM_GET_REGS, 0x8090_ae81);
        assert_eq!(KVM_SET_SREGS, 0x4138_ae84);
        assert_eq!(
            [KVM_GET_LAPIC, KVM_GET_MSRS, KVM_GET_IRQCHIP, KVM_GET_CLOCK, KVM_GET_XSAVE, KVM_GET_PIT2],
            [0x8400_ae8e, 0xc008_ae88, 0xc208_ae62, 0x8030_ae7c, 0x9000_aea4, 0x8070_ae9f]
        );
        assert_eq!(
            [KVM_GET_VCPU_EVENTS, KVM_GET_MP_STATE, KVM_GET_DEBUGREGS, KVM_GET_XCRS],
            [0x8040_ae9f, 0x8004_ae98, 0x8080_aea1, 0x8188_aea6]
        );
    }

    #[test]
    fn every_kind_compiles_and_the_bare_list_excludes_process_creation() {
        for kind in [
            ThreadKind::BareVcpu,
            ThreadKind::Vcpu,
            ThreadKind::Device,
            ThreadKind::Main,
            ThreadKind::MainSnapshot,
            ThreadKind::MainRestored,
        ] {
            assert!(!filter(kind).unwrap().is_empty());
        }
        let (bare, _) = allowed(ThreadKind::BareVcpu);
        for forbidden in [libc::SYS_execve, libc::SYS_clone, libc::SYS_openat, libc::SYS_mount, libc::SYS_ptrace] {
            assert!(!bare.contains(&forbidden), "{forbidden}");
        }
    }
}
