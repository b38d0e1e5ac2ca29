//! Restoring a Linux guest saved with `linux --snapshot-to` (see [`super::snapshot`]) and
//! running it on: the guest resumes inside its workload's wait for the go line, which the
//! VMM's stdin delivers through the console.
//!
//! Everything is read and checked before the VM is created, so a bad snapshot never starts a
//! guest. Then, in dependency order: guest memory (mapped lazily or read in), the VM with its
//! irqchip and PIT, the VM's PIT, clock and irqchip state, the serial UART from its state,
//! the virtio devices from theirs (their back ends given again: the same disk, a network
//! namespace for a new tap with the guest's addresses), each vCPU (CPUID filtered as at boot,
//! then its saved state), the jail, the devices' workers restarted, and the run.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::arch::x86_64::cpuid;
use crate::builder::{
    attach_buses, open_devices, serial_parts, spawn_console_input, trace, virtio_fds, BlkConfig, BuildError, NetConfig,
    RunOutcome,
};
use crate::devices::virtio::mmio::check_restore;
use crate::devices::virtio::state::DeviceSnapshot;
use crate::devices::virtio::VirtioDevice;
use crate::devices::{BootTimer, MmioTransport, PowerOff, Serial, I8042};
use crate::linux::snapshot;
use crate::linux::vcpus::RunControl;
use crate::snapshot::kvm::{self as kvm_state, KvmStateError};
use crate::snapshot::memory::Load;
use crate::snapshot::{SnapshotError, MEMORY_FILE, STATE_FILE};
use crate::stats::RestoreInfo;
use crate::vstate::{KvmVm, StopRequest, Vcpu, Vm, VmOptions};
use vmm_sys_util::eventfd::EventFd;

/// A Linux guest to restore. The CLI and the harness build this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreConfig {
    /// The snapshot directory (`memory`, `state`).
    pub snapshot: PathBuf,
    #[serde(default)]
    pub load: Load,
    /// Refuse the snapshot unless its guest memory is this many MiB.
    #[serde(default)]
    pub mem_mib: Option<u64>,
    /// Serial console output file; stdout when absent.
    #[serde(default)]
    pub console: Option<PathBuf>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Jail the VMM before the guest resumes; off only for debugging.
    #[serde(default = "yes")]
    pub jail: bool,
    /// The disk of a guest saved with one: the same image (its size is checked).
    #[serde(default)]
    pub blk: Option<BlkConfig>,
    /// The network of a guest saved with a NIC: a namespace and tap name for a new tap, with
    /// the addresses the guest was saved with.
    #[serde(default)]
    pub net: Option<NetConfig>,
}

fn yes() -> bool {
    true
}

/// Minor and major page faults of this process so far.
fn own_faults() -> (u64, u64) {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    (ru.ru_minflt as u64, ru.ru_majflt as u64)
}

/// Restore `cfg.snapshot` and run the guest to its end, timing from `start`. `ready`, when
/// given, gets one line (`restored`) as the guest is about to resume.
pub fn restore(
    cfg: &RestoreConfig,
    start: Instant,
    stop: &StopRequest,
    ready: Option<std::fs::File>,
) -> Result<RunOutcome, BuildError> {
    let kind = crate::host::kvm_probe().usable().map_err(BuildError::NoKvm)?;
    let host_msrs = kvm_ioctls::Kvm::new()
        .and_then(|k| k.get_msr_index_list())
        .map(|l| l.as_slice().to_vec())
        .map_err(|source| KvmStateError::Vm { op: "KVM_GET_MSR_INDEX_LIST", source })?;
    let snap = snapshot::read(&cfg.snapshot, &host_msrs)?;
    let memory_file = snapshot::open_memory(&cfg.snapshot, &snap, cfg.mem_mib)?;
    let devices = back_ends(cfg, &snap)?;
    trace(start, "snapshot read and checked");

    let mem = crate::snapshot::memory::restore(memory_file, snap.mem_size(), cfg.load)
        .map_err(|source| SnapshotError::Map { path: cfg.snapshot.join(MEMORY_FILE), source })?;
    trace(start, "guest memory restored");
    let mut vm = KvmVm::new(VmOptions { irqchip: true })?;
    kvm_state::check_xsave_size(&vm)?;
    vm.register_memory(&mem)?;
    kvm_state::restore_vm(&vm, &snap.vm)?;

    let (irq, out) = serial_parts(&vm, cfg.console.as_ref())?;
    let serial = Serial::from_state(&snap.serial, irq, out)
        .map_err(|what| BuildError::SerialState { path: cfg.snapshot.join(STATE_FILE), what })?;
    let serial = Arc::new(Mutex::new(serial));
    let workers_stop = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(|e| BuildError::EventFd("stop", e))?);
    let mut virtio = Vec::with_capacity(devices.len());
    for (device, state) in devices.into_iter().zip(&snap.devices) {
        let fds = virtio_fds(&vm, virtio.len(), &workers_stop)?;
        let t = MmioTransport::restore(device, mem.clone(), snap.mem_size(), fds, state)?;
        virtio.push(Arc::new(Mutex::new(t)));
    }
    let power_off = PowerOff::default();
    let boot_timer = BootTimer::new(start);
    let devices = Arc::new(attach_buses(&serial, I8042::new(power_off.clone()), &boot_timer, &virtio)?);

    let count = snap.vcpus.len() as u8;
    let supported = vm.supported_cpuid()?;
    let mut vcpus = Vec::with_capacity(snap.vcpus.len());
    let mut notes = vec![format!("restored from {} ({} load)", cfg.snapshot.display(), cfg.load.name())];
    for saved in &snap.vcpus {
        let mut vcpu = vm.create_vcpu(saved.id)?;
        let spec = cpuid::CpuidSpec { vcpu_id: saved.id, vcpus: count, pvm: snap.pvm_workarounds };
        vcpu.set_cpuid(&cpuid::filter(&supported, spec))?;
        let refused = kvm_state::restore_vcpu(&mut vcpu, saved)?;
        if !refused.is_empty() {
            notes.push(format!("vCPU {}: KVM refused saved MSRs {refused:#x?}; left at reset values", saved.id));
        }
        vcpus.push(vcpu);
    }
    trace(start, "VM and vCPU state restored");

    if cfg.jail {
        crate::jail::seccomp::install_sigsys_reporter()?;
        crate::jail::enter()?;
        trace(start, "jailed");
    }
    for t in &virtio {
        t.lock().unwrap_or_else(|e| e.into_inner()).resume()?;
    }
    spawn_console_input(serial.clone(), cfg.jail)?;
    let (minflt_restore, _) = own_faults();
    let restore_ns = start.elapsed().as_nanos() as u64;
    if let Some(mut f) = ready {
        // The caller times the restore by this line; a closed pipe only loses that.
        let _ = std::io::Write::write_all(&mut f, b"restored\n");
    }
    let before = own_faults();
    let first_run = Arc::new(OnceLock::new());
    let ctl = RunControl {
        timeout: cfg.timeout_ms.map(Duration::from_millis),
        first_run: first_run.clone(),
        stop,
        pause: None,
        jailed: cfg.jail,
        main_kind: crate::jail::ThreadKind::MainRestored,
    };
    let (end, _vcpus) = crate::linux::vcpus::run(vcpus, devices, power_off, ctl)?;
    let _ = workers_stop.write(1); // device workers exit
    let after = own_faults();
    serial.lock().unwrap_or_else(|e| e.into_inner()).flush();
    Ok(RunOutcome {
        end,
        boot: boot_timer.times(),
        first_kvm_run: first_run.get().map(|t| t.duration_since(start)),
        total: start.elapsed(),
        kvm_kind: kind,
        cmdline: snap.cmdline.clone(),
        notes,
        jailed: cfg.jail,
        snapshot: None,
        restore: Some(RestoreInfo {
            load: cfg.load,
            restore_ns,
            minflt_after_restore: after.0.saturating_sub(before.0),
            majflt_after_restore: after.1.saturating_sub(before.1),
            minflt_restore,
        }),
    })
}

/// The back ends the restore was given, opened as devices in the snapshot's window order and
/// checked against the saved devices before any VM exists: the same kinds, the disk's size and
/// read-only bit, the guest network's addresses, and each transport's state.
fn back_ends(cfg: &RestoreConfig, snap: &snapshot::LinuxSnapshot) -> Result<Vec<Box<dyn VirtioDevice>>, BuildError> {
    let refuse = |what: String| BuildError::RestoreDevices { path: cfg.snapshot.join(STATE_FILE), what };
    let saved_disk = snap.devices.iter().any(|d| matches!(d.device, DeviceSnapshot::Block { .. }));
    let saved_nic = snap.devices.iter().find_map(|d| match d.device {
        DeviceSnapshot::Net { mac } => Some(mac),
        DeviceSnapshot::Block { .. } => None,
    });
    match (saved_disk, &cfg.blk) {
        (true, None) => {
            return Err(refuse("the guest was saved with a virtio-blk disk: give the same image (--blk)".into()))
        }
        (false, Some(b)) => {
            return Err(refuse(format!("the guest was saved without a disk, but {} was given", b.path.display())))
        }
        _ => {}
    }
    match (snap.net, &cfg.net) {
        (Some(_), None) => {
            return Err(refuse("the guest was saved with a NIC: give a network namespace and tap (--net-*)".into()))
        }
        (None, Some(_)) => return Err(refuse("the guest was saved without a NIC, but a network was given".into())),
        (Some(saved), Some(n))
            if (saved.host_ip, saved.guest_ip, saved.prefix_len) != (n.host_ip, n.guest_ip, n.prefix_len) =>
        {
            return Err(refuse(format!(
                "the guest's network is {}/{} with the host at {}; the restore gave {}/{} with the host at {}",
                saved.guest_ip, saved.prefix_len, saved.host_ip, n.guest_ip, n.prefix_len, n.host_ip
            )))
        }
        _ => {}
    }
    let devices = open_devices(cfg.blk.as_ref(), cfg.net.as_ref(), saved_nic.unwrap_or_default())?;
    for (device, state) in devices.iter().zip(&snap.devices) {
        check_restore(device.as_ref(), snap.mem_size(), state).map_err(|e| refuse(e.to_string()))?;
    }
    Ok(devices)
}
