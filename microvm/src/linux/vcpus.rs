//! Running the Linux guest's vCPUs: one thread each, exits dispatched to the device buses, and
//! a stop path (first vCPU to see power-off, the timeout, or a [`StopRequest`]) that kicks the
//! others out of KVM_RUN with their [`VcpuKick`] and joins them, so the VMM never leaves a
//! vCPU thread behind.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::devices::{Devices, PowerOff};
use crate::jail::{self, ThreadKind};
use crate::stats::GuestEnd;
use crate::vstate::{
    install_kick_handler, run_vcpu, ExitHandler, KvmVcpu, StopRequest, Vcpu, VcpuError, VcpuExit, VcpuKick, VmExit,
};

/// Why a vCPU stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum VcpuRunError {
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("vCPU {id}: {what} (rip {rip:#x})")]
    Guest { id: u8, what: String, rip: u64 },
    #[error("cannot start the thread of vCPU {0}")]
    Spawn(u8, #[source] std::io::Error),
    #[error("cannot install the vCPU kick signal handler")]
    Signal(#[source] vmm_sys_util::errno::Error),
    #[error("cannot install the main thread's seccomp filter")]
    Jail(#[source] crate::jail::JailError),
}

/// Poll interval of the stop request while waiting for the guest.
const STOP_POLL: Duration = Duration::from_millis(20);

struct LinuxExits {
    devices: Arc<Devices>,
    power_off: PowerOff,
    stopping: Arc<AtomicBool>,
}

impl ExitHandler<KvmVcpu> for LinuxExits {
    type Error = VcpuRunError;

    fn handle(&mut self, vcpu: &mut KvmVcpu, exit: VmExit) -> Result<VcpuExit, VcpuRunError> {
        match exit {
            VmExit::IoIn { port, len } => {
                let mut buf = [0u8; 8];
                let len = len.min(8);
                self.devices.pio.read(u64::from(port), &mut buf[..len]);
                vcpu.complete_io_in(&buf[..len]);
            }
            VmExit::IoOut { port, data } => {
                self.devices.pio.write(u64::from(port), data.as_slice());
                if self.power_off.requested() {
                    return Ok(VcpuExit::Shutdown(0));
                }
            }
            VmExit::MmioRead { addr, len } => {
                let mut buf = [0u8; 8];
                let len = len.min(8);
                self.devices.mmio.read(addr, &mut buf[..len]);
                vcpu.complete_mmio_read(&buf[..len]);
            }
            VmExit::MmioWrite { addr, data } => self.devices.mmio.write(addr, data.as_slice()),
            VmExit::Shutdown | VmExit::SystemEvent { .. } => {
                self.power_off.request();
                return Ok(VcpuExit::Shutdown(0));
            }
            VmExit::Interrupted => {
                // Clear the kick before looking at why, so a kick landing after the check
                // sets it again and the next KVM_RUN returns at once.
                vcpu.set_immediate_exit(false);
                if debug_enabled() {
                    let rip = vcpu.regs().map_or(0, |r| r.rip);
                    eprintln!("cvbench-vmm: vCPU {} interrupted at rip {rip:#x}", vcpu.id());
                }
                if self.stopping.load(Ordering::SeqCst) || self.power_off.requested() {
                    return Ok(VcpuExit::Shutdown(0));
                }
            }
            VmExit::Hlt => {}
            VmExit::FailEntry { reason } => {
                return Err(guest_err(vcpu, format!("VM entry failed, hardware reason {reason:#x}")))
            }
            VmExit::InternalError => return Err(guest_err(vcpu, "KVM internal error (emulation failure)".into())),
            VmExit::Other(what) => return Err(guest_err(vcpu, format!("unexpected exit: {what}"))),
        }
        Ok(VcpuExit::Continue)
    }
}

fn guest_err(vcpu: &KvmVcpu, what: String) -> VcpuRunError {
    let rip = vcpu.regs().map_or(0, |r| r.rip);
    VcpuRunError::Guest { id: vcpu.id(), what, rip }
}

/// `CVBENCH_VMM_DEBUG` set: sample and print each vCPU's RIP every few seconds (to see where
/// a slow or stuck guest spends its time).
fn debug_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("CVBENCH_VMM_DEBUG").is_some())
}

const DEBUG_SAMPLE: Duration = Duration::from_secs(5);

/// Set when the guest reached its snapshot point: the run stops its vCPUs at a clean point
/// (each out of KVM_RUN through its kick, its last exit completed) and hands them back.
#[derive(Clone, Debug, Default)]
pub struct PauseRequest(Arc<AtomicBool>);

impl PauseRequest {
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How a run is bounded and watched, besides its vCPUs and devices.
pub struct RunControl<'a> {
    pub timeout: Option<Duration>,
    pub first_run: FirstRun,
    /// Ends the run early (SIGTERM/SIGINT).
    pub stop: &'a StopRequest,
    /// Pauses the run for a snapshot (then it ends [`GuestEnd::Snapshotted`]).
    pub pause: Option<PauseRequest>,
    pub jailed: bool,
    /// The main thread's allow-list once the vCPUs run.
    pub main_kind: ThreadKind,
}

/// The moment vCPU 0 first entered the guest.
pub type FirstRun = Arc<OnceLock<Instant>>;

/// A vCPU thread and the kick that stops it. The thread hands its vCPU back when it ends, so
/// the vCPU's kvm_run mapping (the kick's target) lives until the thread is joined.
struct VcpuThread {
    handle: JoinHandle<KvmVcpu>,
    kick: Arc<VcpuKick>,
}

/// Run all vCPUs until power-off, a failure, the timeout, a stop or a pause request. The
/// vCPUs come back stopped (for a snapshot after a pause).
pub fn run(
    vcpus: Vec<KvmVcpu>,
    devices: Arc<Devices>,
    power_off: PowerOff,
    ctl: RunControl<'_>,
) -> Result<(GuestEnd, Vec<KvmVcpu>), VcpuRunError> {
    let RunControl { timeout, first_run, stop, pause, jailed, main_kind } = ctl;
    install_kick_handler().map_err(VcpuRunError::Signal)?;
    let stopping = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Result<i32, String>>();
    let mut threads: Vec<VcpuThread> = Vec::new();
    for mut vcpu in vcpus {
        let id = vcpu.id();
        let mut exits =
            LinuxExits { devices: devices.clone(), power_off: power_off.clone(), stopping: stopping.clone() };
        let tx = tx.clone();
        let first_run = first_run.clone();
        let kick = Arc::new(VcpuKick::new());
        let thread_kick = kick.clone();
        let handle = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || {
                // SAFETY: the vCPU is handed back when this thread ends and dropped only after
                // `stop_all` joined the thread and disarmed the kick, so the kvm_run mapping and
                // the thread id stay valid while the kick is armed.
                unsafe { thread_kick.arm(vcpu.immediate_exit_flag(), Some(libc::pthread_self())) };
                if jailed {
                    if let Err(e) = jail::install(ThreadKind::Vcpu) {
                        let _ = tx.send(Err(format!("vCPU {id}: {}", e)));
                        return vcpu;
                    }
                }
                if id == 0 {
                    let _ = first_run.set(Instant::now());
                }
                let r = run_vcpu(&mut vcpu, &mut exits).map_err(|e| e.to_string());
                let _ = tx.send(r);
                vcpu
            })
            .map_err(|e| VcpuRunError::Spawn(id, e))?;
        threads.push(VcpuThread { handle, kick });
    }
    drop(tx);
    if jailed {
        if let Err(e) = jail::install(main_kind) {
            stop_all(&stopping, threads);
            return Err(VcpuRunError::Jail(e));
        }
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut last_sample = Instant::now();
    let end = loop {
        if let Some(sig) = stop.requested() {
            break GuestEnd::Signalled(sig);
        }
        if pause.as_ref().is_some_and(PauseRequest::requested) {
            break GuestEnd::Snapshotted;
        }
        let wait = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) => left.min(STOP_POLL),
                None => break GuestEnd::Timeout,
            },
            None => STOP_POLL,
        };
        if debug_enabled() && last_sample.elapsed() >= DEBUG_SAMPLE {
            last_sample = Instant::now();
            for t in &threads {
                t.kick.interrupt();
            }
        }
        match rx.recv_timeout(wait) {
            Ok(Ok(_)) => break GuestEnd::PowerOff,
            Ok(Err(e)) => break GuestEnd::Failed(e),
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break GuestEnd::Failed("all vCPU threads ended without a result".into())
            }
        }
    };
    let vcpus = stop_all(&stopping, threads);
    Ok((end, vcpus))
}

/// Ask every vCPU thread to stop, kick it and wait for it. The kick's immediate_exit makes a
/// KVM_RUN that has not started yet return at once, so one kick per thread suffices. A
/// kicked KVM_RUN first completes the exit the thread last handled, so each vCPU handed back
/// is at an instruction boundary with nothing pending in user space.
fn stop_all(stopping: &AtomicBool, threads: Vec<VcpuThread>) -> Vec<KvmVcpu> {
    stopping.store(true, Ordering::SeqCst);
    for t in &threads {
        t.kick.kick();
    }
    let mut vcpus = Vec::new();
    for t in threads {
        let vcpu = t.handle.join();
        t.kick.disarm();
        vcpus.extend(vcpu.ok());
    }
    vcpus
}
