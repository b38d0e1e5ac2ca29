//! Running the Linux guest's vCPUs: one thread each, exits dispatched to the devices, and a
//! stop path (first vCPU to see power-off, or the timeout) that kicks the others out of
//! KVM_RUN with a signal and joins them, so the VMM never leaves a vCPU thread behind.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::devices::{Devices, PowerOff};
use crate::vstate::{run_vcpu, ExitHandler, KvmVcpu, Vcpu, VcpuError, VcpuExit, VmExit};

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
}

/// How the guest run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestEnd {
    /// The guest reset or powered off (i8042 reset, triple fault or a KVM system event).
    PowerOff,
    /// The timeout passed first; the vCPUs were stopped.
    Timeout,
    /// A vCPU failed (entry failure, emulation error, ioctl error).
    Failed(String),
    /// The VMM was asked to stop ([`request_stop`]), e.g. by SIGTERM; carries the signal.
    Stopped(i32),
}

/// Ask a running [`run`] to stop the guest and return [`GuestEnd::Stopped`] with `reason`
/// (a signal number). Safe to call from any thread; SIGTERM/SIGINT do the same through the
/// process's signal owner (`cvbench_signals`, in graceful mode).
pub fn request_stop(reason: i32) {
    cvbench_signals::request_stop(reason);
}

/// Poll interval of the stop request while waiting for the guest.
const STOP_POLL: Duration = Duration::from_millis(20);

struct LinuxExits {
    devices: Arc<Mutex<Devices>>,
    power_off: PowerOff,
    stopping: Arc<AtomicBool>,
}

impl LinuxExits {
    fn devices(&self) -> std::sync::MutexGuard<'_, Devices> {
        self.devices.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ExitHandler<KvmVcpu> for LinuxExits {
    type Error = VcpuRunError;

    fn handle(&mut self, vcpu: &mut KvmVcpu, exit: VmExit) -> Result<VcpuExit, VcpuRunError> {
        match exit {
            VmExit::IoIn { port, len } => {
                let mut buf = [0u8; 8];
                let len = len.min(8);
                self.devices().pio_read(port, &mut buf[..len]);
                vcpu.complete_io_in(&buf[..len]);
            }
            VmExit::IoOut { port, data } => {
                self.devices().pio_write(port, data.as_slice());
                if self.power_off.requested() {
                    return Ok(VcpuExit::Shutdown(0));
                }
            }
            VmExit::MmioRead { addr, len } => {
                let mut buf = [0u8; 8];
                let len = len.min(8);
                self.devices().mmio_read(addr, &mut buf[..len]);
                vcpu.complete_mmio_read(&buf[..len]);
            }
            VmExit::MmioWrite { addr, data } => self.devices().mmio_write(addr, data.as_slice()),
            VmExit::Shutdown | VmExit::SystemEvent { .. } => {
                self.power_off.request();
                return Ok(VcpuExit::Shutdown(0));
            }
            VmExit::Interrupted => {
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

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The moment vCPU 0 first entered the guest.
pub type FirstRun = Arc<OnceLock<Instant>>;

/// Run all vCPUs until power-off, a failure, or `timeout`.
pub fn run(
    vcpus: Vec<KvmVcpu>,
    devices: Arc<Mutex<Devices>>,
    power_off: PowerOff,
    timeout: Option<Duration>,
    first_run: FirstRun,
) -> Result<GuestEnd, VcpuRunError> {
    register_signal_handler(SIGRTMIN(), kick_handler).map_err(VcpuRunError::Signal)?;
    let stopping = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Result<i32, String>>();
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    for mut vcpu in vcpus {
        let id = vcpu.id();
        let mut exits =
            LinuxExits { devices: devices.clone(), power_off: power_off.clone(), stopping: stopping.clone() };
        let tx = tx.clone();
        let first_run = first_run.clone();
        let handle = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || {
                if id == 0 {
                    let _ = first_run.set(Instant::now());
                }
                let r = run_vcpu(&mut vcpu, &mut exits).map_err(|e| e.to_string());
                let _ = tx.send(r);
            })
            .map_err(|e| VcpuRunError::Spawn(id, e))?;
        threads.push(handle);
    }
    drop(tx);
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut last_sample = Instant::now();
    let end = loop {
        if let Some(stop) = cvbench_signals::stop_signal() {
            break GuestEnd::Stopped(stop);
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
                let _ = t.kill(SIGRTMIN());
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
    stop_all(&stopping, threads);
    Ok(end)
}

/// Ask every vCPU thread to stop and wait for it. A kick that lands while a thread is outside
/// KVM_RUN is lost, so kicks repeat until the thread has ended.
fn stop_all(stopping: &AtomicBool, threads: Vec<JoinHandle<()>>) {
    stopping.store(true, Ordering::SeqCst);
    for t in threads {
        while !t.is_finished() {
            let _ = t.kill(SIGRTMIN());
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = t.join();
    }
}
