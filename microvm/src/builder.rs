//! Building and booting a Linux micro-VM from a [`Config`]: one linear
//! [`build_and_boot`] that creates the VM, loads the guest, attaches the devices, starts the
//! vCPUs and reports how the run ended.

use std::fs::File;
use std::io::{LineWriter, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::cpuid;
use crate::bare::snapshot::SnapshotOut;
use crate::devices::virtio::blk::Block;
use crate::devices::virtio::mmio::QUEUE_NOTIFY_OFFSET;
use crate::devices::virtio::net::{mac_from_seed, open_tap, Net, TapConfig};
use crate::devices::virtio::{VirtioDevice, VirtioError};
use crate::devices::{
    virtio_window, BootTimer, BootTimes, Bus, BusError, Devices, MmioTransport, PowerOff, Serial, BOOT_TIMER_ADDR,
    BOOT_TIMER_SIZE, I8042, I8042_PORT, I8042_PORTS, SERIAL_IRQ, SERIAL_PORT, VIRTIO_FIRST_IRQ, VIRTIO_MMIO_SIZE,
};
use crate::host::KvmKind;
use crate::linux::cmdline::{CmdlineSpec, GuestNet};
use crate::linux::snapshot::{GuestNetSnapshot, LinuxSnapshot, ReadyWatch};
use crate::linux::vcpus::VcpuRunError;
use crate::linux::vcpus::{PauseRequest, RunControl};
use crate::linux::{self, cpu, mptable, LinuxError};
use crate::snapshot::kvm::{self as kvm_state, KvmStateError, VcpuState, VmState};
use crate::snapshot::SnapshotError;
use crate::stats::{GuestEnd, LinuxStats, RestoreInfo, SnapshotInfo};
use crate::vstate::{
    create_guest_memory, GuestMemoryMmap, KvmVcpu, KvmVm, MemRange, MemoryError, StopRequest, Vcpu, VcpuError, Vm,
    VmError, VmOptions,
};

/// A Linux micro-VM to run. The CLI, the backend and the tests all build this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// vmlinux (PVH entry) or bzImage.
    pub kernel: PathBuf,
    /// Uncompressed newc cpio.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Appended to the generated kernel command line (e.g. `quiet`).
    #[serde(default)]
    pub cmdline_extra: String,
    /// Arguments for the guest `/init`.
    #[serde(default)]
    pub init_args: Vec<String>,
    #[serde(default = "default_mem_mib")]
    pub mem_mib: u64,
    #[serde(default = "default_vcpus")]
    pub vcpus: u8,
    #[serde(default)]
    pub net: Option<NetConfig>,
    #[serde(default)]
    pub blk: Option<BlkConfig>,
    /// Serial console output file; stdout when absent.
    #[serde(default)]
    pub console: Option<PathBuf>,
    /// Stop the guest after this long.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Apply the kvm_pvm workarounds; detected from the host when absent.
    #[serde(default)]
    pub pvm_workarounds: Option<bool>,
    /// Jail the VMM before the guest runs; off only for debugging (`--no-jail`).
    #[serde(default = "default_jail")]
    pub jail: bool,
    /// Save the guest into this existing directory when its workload prints READY (`wait-go`)
    /// and end the run there; fail, leaving nothing there, if the guest ends first.
    #[serde(default)]
    pub snapshot_to: Option<PathBuf>,
    /// Forward the VMM's stdin to the guest console (the workload's stdin): how `wait-go`
    /// gets its go line. End of file arrives as the tty's end-of-file character.
    #[serde(default)]
    pub console_input: bool,
}

fn default_jail() -> bool {
    true
}

fn default_mem_mib() -> u64 {
    128
}
fn default_vcpus() -> u8 {
    1
}

/// A tap inside an existing network namespace; host and guest ends of the VM's /30.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    pub netns: PathBuf,
    pub tap: String,
    pub host_ip: Ipv4Addr,
    pub guest_ip: Ipv4Addr,
    #[serde(default = "default_prefix")]
    pub prefix_len: u8,
}

fn default_prefix() -> u8 {
    30
}

/// A raw disk image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlkConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

/// Errors from building or running the VM.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Cmdline(#[from] linux::cmdline::CmdlineError),
    #[error("KVM is not usable here: {0}")]
    NoKvm(String),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Linux(#[from] LinuxError),
    #[error(transparent)]
    Virtio(#[from] VirtioError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error(transparent)]
    Run(#[from] VcpuRunError),
    #[error("cannot register a device on the bus")]
    Bus(#[from] BusError),
    #[error("jailing the VMM")]
    Jail(#[from] crate::jail::JailError),
    #[error("cannot create an eventfd for {0}")]
    EventFd(&'static str, #[source] std::io::Error),
    #[error("cannot open the console file {path}")]
    Console {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("saving or restoring the KVM state")]
    KvmState(#[from] KvmStateError),
    #[error("snapshot {path}: {what}")]
    RestoreDevices { path: PathBuf, what: String },
    #[error("snapshot {path}: the serial state is invalid: {what}")]
    SerialState { path: PathBuf, what: String },
    #[error("cannot start the console input thread")]
    ConsoleInput(#[source] std::io::Error),
}

/// What happened, with the VMM's own timings (all measured from `start`).
#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub end: GuestEnd,
    pub boot: BootTimes,
    /// VMM start → vCPU 0's first KVM_RUN.
    pub first_kvm_run: Option<Duration>,
    /// VMM start → the run ended.
    pub total: Duration,
    pub kvm_kind: KvmKind,
    pub cmdline: String,
    /// MSRs KVM refused at boot (kvm_pvm rejects some), and other remarks.
    pub notes: Vec<String>,
    /// Whether the VMM ran jailed.
    pub jailed: bool,
    /// The snapshot this run saved (`snapshot_to`).
    pub snapshot: Option<SnapshotInfo>,
    /// How this run was restored (`linux-restore`).
    pub restore: Option<RestoreInfo>,
}

impl RunOutcome {
    /// The run as the typed record `--stats-json` writes.
    pub fn stats(&self) -> LinuxStats {
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        LinuxStats {
            kvm_kind: self.kvm_kind,
            end: self.end.clone(),
            exit_status: self.boot.exit_status,
            kernel_init_ms: ms(self.boot.kernel_init),
            user_init_ms: ms(self.boot.user_init),
            first_kvm_run_ms: ms(self.first_kvm_run),
            total_ms: self.total.as_secs_f64() * 1000.0,
            cmdline: self.cmdline.clone(),
            notes: self.notes.clone(),
            jailed: self.jailed,
            seccomp_allowed_syscalls: self.jailed.then(|| {
                use crate::jail::{seccomp::allowed_count, ThreadKind};
                [ThreadKind::Main, ThreadKind::Vcpu, ThreadKind::Device].map(allowed_count).to_vec()
            }),
            snapshot: self.snapshot.clone(),
            restore: self.restore.clone(),
        }
    }
}

/// Build the VM described by `cfg` and run it to its end, timing from now.
pub fn build_and_boot(cfg: &Config) -> Result<RunOutcome, BuildError> {
    build_and_boot_from(cfg, Instant::now(), &StopRequest::new())
}

/// [`build_and_boot`], timing from `start` (the binary passes its own start instant); `stop`
/// ends the run early (the binary requests it on SIGTERM/SIGINT).
pub fn build_and_boot_from(cfg: &Config, start: Instant, stop: &StopRequest) -> Result<RunOutcome, BuildError> {
    let kind = crate::host::kvm_probe().usable().map_err(BuildError::NoKvm)?;
    let pvm = cfg.pvm_workarounds.unwrap_or(kind == KvmKind::SoftwarePvm);
    let mem_size = linux::check_mem_size(cfg.mem_mib)?;
    // Made before the jail hides the file system; removed again unless a snapshot is written.
    let snapshot_out = cfg.snapshot_to.as_deref().map(|d| SnapshotOut::create(d, mem_size)).transpose()?;
    let mut vm = KvmVm::new(VmOptions { irqchip: true })?;
    let msr_list = match snapshot_out {
        Some(_) => {
            kvm_state::check_xsave_size(&vm)?;
            kvm_state::host_msr_list(&vm)?
        }
        None => Vec::new(),
    };
    let mem = create_guest_memory(&[MemRange { start: 0, size: mem_size as usize }])?;
    trace(start, "VM created, guest memory mapped");
    vm.register_memory(&mem)?;
    trace(start, "guest memory registered");

    let kernel = linux::load_kernel(&mem, &cfg.kernel)?;
    trace(start, "kernel loaded");
    let initrd = match &cfg.initrd {
        Some(p) => Some(linux::load_initrd(&mem, mem_size, kernel.kernel_end, p)?),
        None => None,
    };
    trace(start, "initramfs loaded");

    let workers_stop = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(|e| BuildError::EventFd("stop", e))?);
    let power_off = PowerOff::default();
    let boot_timer = BootTimer::new(start);
    let pause = snapshot_out.as_ref().map(|_| PauseRequest::default());
    let serial = Arc::new(Mutex::new(attach_serial(&vm, cfg.console.as_ref(), pause.clone())?));
    let mut virtio = Vec::new();
    for device in open_devices(cfg.blk.as_ref(), cfg.net.as_ref(), mac_from_seed(std::process::id()))? {
        let fds = virtio_fds(&vm, virtio.len(), &workers_stop)?;
        virtio.push(Arc::new(Mutex::new(MmioTransport::new(device, mem.clone(), fds.0, fds.1, fds.2))));
    }

    let cmdline = linux::cmdline::build(&CmdlineSpec {
        extra: cfg.cmdline_extra.clone(),
        pvm_workarounds: pvm,
        virtio: (0..virtio.len()).map(|i| (virtio_window(i), VIRTIO_FIRST_IRQ + i as u32)).collect(),
        net: cfg.net.as_ref().map(|n| GuestNet { guest_ip: n.guest_ip, host_ip: n.host_ip, prefix_len: n.prefix_len }),
        init_args: cfg.init_args.clone(),
        reboot: linux::cmdline::Reboot::Keyboard,
    })?;
    linux::write_cmdline(&mem, &cmdline)?;
    linux::write_boot_info(&mem, &kernel, mem_size, cmdline.len(), initrd)?;
    mptable::write(&mem, cfg.vcpus).map_err(LinuxError::from)?;

    let devices = Arc::new(attach_buses(&serial, I8042::new(power_off.clone()), &boot_timer, &virtio)?);
    let mut notes = Vec::new();
    let vcpus = (0..cfg.vcpus.max(1))
        .map(|id| attach_vcpu(&vm, &mem, id, cfg.vcpus.max(1), &kernel, pvm, &mut notes))
        .collect::<Result<Vec<_>, _>>()?;

    trace(start, "devices and vCPUs ready");
    // Everything is open (KVM, tap, disk, console): jail the process before any guest code
    // runs and before the vCPU threads exist, so they inherit it.
    if cfg.jail {
        crate::jail::seccomp::install_sigsys_reporter()?;
        crate::jail::enter()?;
        trace(start, "jailed");
    }
    if cfg.console_input {
        spawn_console_input(serial.clone(), cfg.jail)?;
    }
    let first_run = Arc::new(OnceLock::new());
    let main_kind =
        if snapshot_out.is_some() { crate::jail::ThreadKind::MainSnapshot } else { crate::jail::ThreadKind::Main };
    let ctl = RunControl {
        timeout: cfg.timeout_ms.map(Duration::from_millis),
        first_run: first_run.clone(),
        stop,
        pause,
        jailed: cfg.jail,
        main_kind,
    };
    let (end, mut vcpus) = linux::vcpus::run(vcpus, devices, power_off, ctl)?;
    let _ = workers_stop.write(1); // device workers exit
    serial.lock().unwrap_or_else(|e| e.into_inner()).flush();
    let snapshot = match (snapshot_out, &end) {
        (Some(out), GuestEnd::Snapshotted) => {
            // The workers hand back their queues before guest memory is written: nothing
            // changes the rings after this.
            let devices = virtio
                .iter()
                .map(|t| t.lock().unwrap_or_else(|e| e.into_inner()).save())
                .collect::<Result<Vec<_>, _>>()?;
            let (vm_state, vcpu_states) = save_kvm_state(&vm, &mut vcpus, &msr_list, cfg.vcpus.max(1))?;
            let snap = LinuxSnapshot {
                vmm_version: env!("CARGO_PKG_VERSION").to_string(),
                mem_mib: cfg.mem_mib,
                pvm_workarounds: pvm,
                cmdline: cmdline.clone(),
                vm: vm_state,
                vcpus: vcpu_states,
                serial: serial.lock().unwrap_or_else(|e| e.into_inner()).snapshot(),
                devices,
                net: cfg.net.as_ref().map(|n| GuestNetSnapshot {
                    host_ip: n.host_ip,
                    guest_ip: n.guest_ip,
                    prefix_len: n.prefix_len,
                }),
                data_pages: 0,
            };
            trace(start, "state saved");
            let (kind, version) = (linux::snapshot::KIND, linux::snapshot::FORMAT_VERSION);
            Some(out.write_framed(&mem, mem_size, kind, version, |data_pages| LinuxSnapshot { data_pages, ..snap })?)
        }
        (Some(_), end) => {
            let dir = cfg.snapshot_to.clone().unwrap_or_default();
            let end = match end {
                GuestEnd::PowerOff => "powered off".to_string(),
                GuestEnd::Timeout => "ran into the timeout".to_string(),
                GuestEnd::Signalled(sig) => format!("was stopped by signal {sig}"),
                GuestEnd::Failed(why) => format!("failed ({why})"),
                GuestEnd::Exited(code) => format!("exited with status {code}"),
                GuestEnd::Snapshotted => "was saved".to_string(),
            };
            return Err(SnapshotError::NoReady { dir, end }.into());
        }
        (None, _) => None,
    };
    for t in &virtio {
        let t = t.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = t.activate_error() {
            notes.push(format!("{} failed to activate: {e}", t.device_name()));
        }
    }
    Ok(RunOutcome {
        end,
        boot: boot_timer.times(),
        first_kvm_run: first_run.get().map(|t| t.duration_since(start)),
        total: start.elapsed(),
        kvm_kind: kind,
        cmdline,
        notes,
        jailed: cfg.jail,
        snapshot,
        restore: None,
    })
}

/// The KVM state of the VM and of its `want_vcpus` vCPUs, stopped at the snapshot point.
fn save_kvm_state(
    vm: &KvmVm,
    vcpus: &mut [KvmVcpu],
    msr_list: &[u32],
    want_vcpus: u8,
) -> Result<(VmState, Vec<VcpuState>), BuildError> {
    if vcpus.len() != usize::from(want_vcpus) {
        return Err(VcpuRunError::Guest { id: 0, what: "a vCPU thread ended abnormally".into(), rip: 0 }.into());
    }
    vcpus.sort_by_key(|v| v.id());
    let saved = vcpus.iter_mut().map(|v| kvm_state::save_vcpu(v, msr_list)).collect::<Result<Vec<_>, _>>()?;
    Ok((kvm_state::save_vm(vm)?, saved))
}

/// A thread that feeds the VMM's stdin to the guest console, as fast as the UART's FIFO
/// drains; at end of file it sends the tty's end-of-file character (^D), so a guest reading
/// its stdin sees the end too. It installs the device workers' allow-list when jailed.
pub(crate) fn spawn_console_input(serial: Arc<Mutex<Serial>>, jailed: bool) -> Result<(), BuildError> {
    const EOT: u8 = 0x04;
    std::thread::Builder::new()
        .name("console-in".into())
        .spawn(move || {
            if jailed && crate::jail::install(crate::jail::ThreadKind::Device).is_err() {
                return;
            }
            let mut buf = [0u8; 256];
            loop {
                let n = match std::io::Read::read(&mut std::io::stdin().lock(), &mut buf) {
                    Ok(0) | Err(_) => 0,
                    Ok(n) => n,
                };
                let mut pending: &[u8] = if n == 0 { &[EOT] } else { &buf[..n] };
                while !pending.is_empty() {
                    let took = serial.lock().unwrap_or_else(|e| e.into_inner()).enqueue_input(pending);
                    pending = &pending[took..];
                    if !pending.is_empty() {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                if n == 0 {
                    return;
                }
            }
        })
        .map(drop)
        .map_err(BuildError::ConsoleInput)
}

/// With `CVBENCH_VMM_DEBUG` set, print how long each build step took since `start`.
pub(crate) fn trace(start: Instant, step: &str) {
    if std::env::var_os("CVBENCH_VMM_DEBUG").is_some() {
        eprintln!("cvbench-vmm: {:8.3} ms  {step}", start.elapsed().as_secs_f64() * 1000.0);
    }
}

/// COM1 with its irqfd on IRQ 4, writing to `console` (or stdout); with `pause`, the console
/// is watched for the snapshot point.
fn attach_serial(vm: &KvmVm, console: Option<&PathBuf>, pause: Option<PauseRequest>) -> Result<Serial, BuildError> {
    let (irq, out) = serial_parts(vm, console)?;
    let out = match pause {
        Some(p) => Box::new(ReadyWatch::new(out, p)),
        None => out,
    };
    Ok(Serial::new(irq, out))
}

/// COM1's irqfd (registered on IRQ 4) and its console sink.
pub(crate) fn serial_parts(
    vm: &KvmVm,
    console: Option<&PathBuf>,
) -> Result<(EventFd, crate::devices::serial::ConsoleOut), BuildError> {
    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| BuildError::EventFd("serial", e))?;
    vm.register_irqfd(&irq, SERIAL_IRQ)?;
    let out: Box<dyn Write + Send> = match console {
        Some(path) => {
            let f = File::create(path).map_err(|source| BuildError::Console { path: path.clone(), source })?;
            Box::new(LineWriter::new(f))
        }
        None => Box::new(LineWriter::new(std::io::stdout())),
    };
    Ok((irq, out))
}

/// The virtio devices of a VM in window order (the disk, then the NIC), their back ends
/// opened: the disk image, and a tap made in the given namespace. `mac` is the NIC's address.
pub(crate) fn open_devices(
    blk: Option<&BlkConfig>,
    net: Option<&NetConfig>,
    mac: [u8; 6],
) -> Result<Vec<Box<dyn VirtioDevice>>, BuildError> {
    let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
    if let Some(b) = blk {
        devices.push(Box::new(Block::open(&b.path, b.read_only)?));
    }
    if let Some(n) = net {
        let tap = open_tap(&TapConfig {
            netns: n.netns.clone(),
            name: n.tap.clone(),
            host_ip: n.host_ip,
            prefix_len: n.prefix_len,
        })?;
        devices.push(Box::new(Net::new(tap, mac)));
    }
    Ok(devices)
}

/// The eventfds of virtio-mmio window `n`: the irqfd on its IRQ, the ioeventfd on its
/// QueueNotify register, and the VM's shared stop eventfd.
pub(crate) fn virtio_fds(
    vm: &KvmVm,
    n: usize,
    stop: &Arc<EventFd>,
) -> Result<(EventFd, EventFd, Arc<EventFd>), BuildError> {
    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| BuildError::EventFd("virtio irq", e))?;
    vm.register_irqfd(&irq, VIRTIO_FIRST_IRQ + n as u32)?;
    let notify = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| BuildError::EventFd("virtio notify", e))?;
    vm.register_ioevent(&notify, virtio_window(n) + QUEUE_NOTIFY_OFFSET)?;
    Ok((irq, notify, stop.clone()))
}

/// Put every device on its bus: serial and i8042 on port I/O, boot timer and virtio on MMIO.
pub(crate) fn attach_buses(
    serial: &Arc<Mutex<Serial>>,
    i8042: I8042,
    boot_timer: &BootTimer,
    virtio: &[Arc<Mutex<MmioTransport>>],
) -> Result<Devices, BuildError> {
    let mut pio = Bus::new(0xff);
    pio.register(u64::from(SERIAL_PORT), 8, serial.clone())?;
    pio.register(u64::from(I8042_PORT), I8042_PORTS, Arc::new(Mutex::new(i8042)))?;
    let mut mmio = Bus::new(0);
    mmio.register(BOOT_TIMER_ADDR, BOOT_TIMER_SIZE, Arc::new(Mutex::new(boot_timer.clone())))?;
    for (n, t) in virtio.iter().enumerate() {
        mmio.register(virtio_window(n), VIRTIO_MMIO_SIZE, t.clone())?;
    }
    Ok(Devices { pio, mmio })
}

/// vCPU `id` with filtered CPUID, boot MSRs, LINT pins and, for the BSP, the entry state.
fn attach_vcpu(
    vm: &KvmVm,
    mem: &GuestMemoryMmap,
    id: u8,
    count: u8,
    kernel: &linux::LoadedKernel,
    pvm: bool,
    notes: &mut Vec<String>,
) -> Result<KvmVcpu, BuildError> {
    let mut vcpu = vm.create_vcpu(id)?;
    let spec = cpuid::CpuidSpec { vcpu_id: id, vcpus: count, pvm };
    vcpu.set_cpuid(&cpuid::filter(&vm.supported_cpuid()?, spec))?;
    let refused = cpu::set_boot_msrs(&vcpu);
    if !refused.is_empty() && id == 0 {
        notes.push(format!("KVM refused boot MSRs {refused:#x?}; left at reset values"));
    }
    cpu::set_lint(&mut vcpu).map_err(LinuxError::from)?;
    if id == 0 {
        let sregs = cpu::boot_sregs(mem, &kernel.entry, vcpu.sregs()?).map_err(LinuxError::from)?;
        vcpu.set_sregs(&sregs)?;
        vcpu.set_regs(&cpu::boot_regs(&kernel.entry))?;
        vcpu.set_fpu(&cpu::boot_fpu())?;
    }
    Ok(vcpu)
}
