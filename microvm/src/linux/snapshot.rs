//! The Linux guest's snapshot: what it keeps, the console watch that finds the snapshot point,
//! and the checks a snapshot passes before any of it is used.
//!
//! The snapshot point is the workload's READY line (`wait-go` prints it, then blocks reading
//! its go line from the console). The VMM watches the console for that line, stops every vCPU
//! at a clean point (kicked out of KVM_RUN, last exit completed) and saves guest memory plus
//! the state: the KVM state of each vCPU and of the VM ([`crate::snapshot::kvm`]), the serial
//! UART (registers and unread input) and what the restore needs to rebuild the machine the
//! same way (memory size, vCPU count, the CPUID variant), and each virtio device's transport
//! registers, queues and own facts ([`crate::devices::virtio::state`]), saved after its worker
//! stopped. The i8042 and the boot timer keep no state a resumed guest depends on. Back ends
//! are not saved: the restore is given a disk and a network namespace again, and they must
//! match what the guest saw (the disk's size, the guest network's addresses).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::devices::serial::{ConsoleOut, SerialSnapshot};
use crate::devices::virtio::state::{DeviceSnapshot, TransportSnapshot};
use crate::linux::vcpus::PauseRequest;
use crate::snapshot::kvm::{VcpuState, VmState};
use crate::snapshot::{frame, SnapshotError, STATE_FILE};

/// The state file's kind word.
pub const KIND: &str = "linux";
/// The state format this VMM writes and reads. Bump on any change to [`LinuxSnapshot`].
pub const FORMAT_VERSION: u32 = 2;
/// The console line that marks the snapshot point.
pub const READY_LINE: &[u8] = b"READY";
/// The most vCPUs a snapshot may describe (the MP table's limit in this VMM).
pub const MAX_VCPUS: usize = 64;
/// The UART's receive FIFO.
const SERIAL_FIFO: usize = 64;
/// The largest state file read: about 20 KB per vCPU (the XSAVE area and the MSRs dominate),
/// so [`MAX_VCPUS`] of them fit with room to spare.
pub const MAX_STATE_BYTES: u64 = 4 << 20;

/// Everything but memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinuxSnapshot {
    /// The cvbench-vmm that wrote it (informational; the format version is what is checked).
    pub vmm_version: String,
    /// Guest memory in MiB: the memory file is exactly this many MiB.
    pub mem_mib: u64,
    /// The CPUID was filtered with the kvm_pvm workarounds (restore filters it the same way).
    pub pvm_workarounds: bool,
    /// The kernel command line the guest booted with (informational).
    pub cmdline: String,
    pub vm: VmState,
    /// One per vCPU, ids 0..n in order.
    pub vcpus: Vec<VcpuState>,
    pub serial: SerialSnapshot,
    /// The virtio devices in window order: at most a disk, then at most a NIC.
    pub devices: Vec<TransportSnapshot>,
    /// The guest network's addresses, when it has a NIC (its kernel configured them at boot).
    pub net: Option<GuestNetSnapshot>,
    /// Memory pages that hold data (written to the file; the rest are holes).
    pub data_pages: u64,
}

/// The addresses of the guest's /30, which live on in the guest's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestNetSnapshot {
    pub host_ip: Ipv4Addr,
    pub guest_ip: Ipv4Addr,
    pub prefix_len: u8,
}

impl LinuxSnapshot {
    /// Guest memory in bytes.
    pub fn mem_size(&self) -> u64 {
        self.mem_mib << 20
    }

    /// Check every size and table against the bounds the VMM itself keeps; `host_msrs` is the
    /// MSR list this host's KVM saves.
    pub fn check(&self, host_msrs: &[u32]) -> Result<(), String> {
        crate::linux::check_mem_size(self.mem_mib).map_err(|e| e.to_string())?;
        if self.vcpus.is_empty() || self.vcpus.len() > MAX_VCPUS {
            return Err(format!("{} vCPUs (1..={MAX_VCPUS})", self.vcpus.len()));
        }
        for (i, v) in self.vcpus.iter().enumerate() {
            if usize::from(v.id) != i {
                return Err(format!("vCPU {i} is stored with id {}", v.id));
            }
            v.check(host_msrs)?;
        }
        self.vm.check()?;
        if self.serial.in_buffer.len() > SERIAL_FIFO {
            return Err(format!(
                "{} bytes of pending serial input (the FIFO holds {SERIAL_FIFO})",
                self.serial.in_buffer.len()
            ));
        }
        let kinds: Vec<&str> = self.devices.iter().map(|d| d.device.name()).collect();
        if !matches!(kinds[..], [] | ["virtio-blk"] | ["virtio-net"] | ["virtio-blk", "virtio-net"]) {
            return Err(format!("virtio devices {kinds:?} (at most a disk, then at most a NIC)"));
        }
        let has_nic = self.devices.iter().any(|d| matches!(d.device, DeviceSnapshot::Net { .. }));
        if has_nic != self.net.is_some() {
            return Err("a NIC without the guest network's addresses, or addresses without a NIC".into());
        }
        if self.net.is_some_and(|n| n.prefix_len == 0 || n.prefix_len > 30) {
            return Err("a guest network prefix outside /1../30".into());
        }
        if self.data_pages > self.mem_size() / 4096 {
            return Err(format!("{} data pages do not fit in {} MiB", self.data_pages, self.mem_mib));
        }
        if self.cmdline.len() > crate::linux::CMDLINE_MAX {
            return Err(format!("a command line of {} bytes", self.cmdline.len()));
        }
        Ok(())
    }
}

/// Read the state file in `dir` and check it against this host's MSR list.
pub fn read(dir: &Path, host_msrs: &[u32]) -> Result<LinuxSnapshot, SnapshotError> {
    let path = dir.join(STATE_FILE);
    let snap: LinuxSnapshot = frame::read_bounded(&path, KIND, FORMAT_VERSION, MAX_STATE_BYTES)?;
    snap.check(host_msrs).map_err(|what| SnapshotError::Invalid { path, what })?;
    Ok(snap)
}

/// Open the memory file in `dir`: exactly the state's memory size, and `want_mib` when asked.
pub fn open_memory(dir: &Path, snap: &LinuxSnapshot, want_mib: Option<u64>) -> Result<std::fs::File, SnapshotError> {
    crate::snapshot::open_memory(dir, snap.mem_size(), want_mib)
}

/// The console sink of a run that takes a snapshot: passes every byte on and requests the
/// pause when a line is exactly [`READY_LINE`] (a trailing CR, from the tty's newline
/// mapping, is ignored).
pub struct ReadyWatch {
    inner: ConsoleOut,
    line: Vec<u8>,
    pause: PauseRequest,
}

impl ReadyWatch {
    pub fn new(inner: ConsoleOut, pause: PauseRequest) -> ReadyWatch {
        ReadyWatch { inner, line: Vec::new(), pause }
    }
}

impl Write for ReadyWatch {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            if b == b'\n' {
                let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
                if line == READY_LINE {
                    self.pause.request();
                }
                self.line.clear();
            } else if self.line.len() <= READY_LINE.len() + 1 {
                // Longer lines are not the marker: their first bytes already say so.
                self.line.push(b);
            }
        }
        self.inner.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::kvm::Blob;
    use kvm_bindings::{kvm_irqchip, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE};

    /// A snapshot that passes its checks (the KVM blobs zeroed: KVM, not this check, judges
    /// register values).
    pub(crate) fn good() -> LinuxSnapshot {
        let chip = |id| Blob(kvm_irqchip { chip_id: id, ..Default::default() });
        let vcpu = |id| VcpuState {
            id,
            regs: Default::default(),
            sregs: Blob::default(),
            xsave: Blob::default(),
            xcrs: Blob::default(),
            lapic: Blob::default(),
            msrs: vec![(0x10, 1)],
            mp_state: 0,
            events: Blob::default(),
            debugregs: Blob::default(),
        };
        LinuxSnapshot {
            vmm_version: "test".into(),
            mem_mib: 128,
            pvm_workarounds: false,
            cmdline: "console=ttyS0".into(),
            vm: VmState {
                pic_master: chip(KVM_IRQCHIP_PIC_MASTER),
                pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE),
                ioapic: chip(KVM_IRQCHIP_IOAPIC),
                pit: Blob::default(),
                clock: Blob::default(),
            },
            vcpus: vec![vcpu(0), vcpu(1)],
            serial: SerialSnapshot::default(),
            devices: Vec::new(),
            net: None,
            data_pages: 100,
        }
    }

    fn disk() -> TransportSnapshot {
        crate::devices::virtio::state::tests::good()
    }

    fn nic() -> TransportSnapshot {
        TransportSnapshot { device: DeviceSnapshot::Net { mac: [2, 0xcb, 0, 0, 0, 1] }, ..disk() }
    }

    fn addresses() -> GuestNetSnapshot {
        GuestNetSnapshot { host_ip: Ipv4Addr::new(10, 0, 0, 1), guest_ip: Ipv4Addr::new(10, 0, 0, 2), prefix_len: 30 }
    }

    #[test]
    fn a_consistent_snapshot_passes_and_round_trips_through_its_frame() {
        let mut s = good();
        s.devices = vec![disk(), nic()];
        s.net = Some(addresses());
        assert!(s.check(&[0x10]).is_ok());
        let bytes = frame::encode(KIND, FORMAT_VERSION, &s).unwrap();
        let back: LinuxSnapshot = frame::decode(Path::new("/s/state"), KIND, FORMAT_VERSION, &bytes).unwrap();
        assert_eq!(back, s);
        assert!(bytes.len() < frame::MAX_STATE_BYTES as usize / 4, "{} bytes", bytes.len());
    }

    #[test]
    fn the_state_of_the_most_vcpus_allowed_fits_the_size_bound() {
        let mut s = good();
        // A vCPU as large as the test host's (about 120 MSRs), repeated MAX_VCPUS times.
        s.vcpus[0].msrs = (0..120).map(|i| (i, u64::MAX)).collect();
        s.vcpus = (0..MAX_VCPUS as u8).map(|id| VcpuState { id, ..s.vcpus[0].clone() }).collect();
        let bytes = frame::encode(KIND, FORMAT_VERSION, &s).unwrap();
        assert!((bytes.len() as u64) < MAX_STATE_BYTES, "{} bytes", bytes.len());
    }

    #[test]
    fn each_out_of_bounds_field_is_refused_with_a_reason() {
        type Edit = Box<dyn Fn(&mut LinuxSnapshot)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("memory too small", Box::new(|s| s.mem_mib = 8)),
            ("memory into the MMIO hole", Box::new(|s| s.mem_mib = 1 << 20)),
            ("no vCPU", Box::new(|s| s.vcpus.clear())),
            ("too many vCPUs", Box::new(|s| s.vcpus = (0..=MAX_VCPUS as u8).map(|_| s.vcpus[0].clone()).collect())),
            ("vCPU ids out of order", Box::new(|s| s.vcpus[1].id = 5)),
            ("unknown MSR", Box::new(|s| s.vcpus[0].msrs.push((0x4b56_4d00, 0)))),
            ("mp state", Box::new(|s| s.vcpus[1].mp_state = 99)),
            ("irqchip id", Box::new(|s| s.vm.pic_slave.0.chip_id = 7)),
            ("serial FIFO", Box::new(|s| s.serial.in_buffer = vec![b'x'; 65])),
            ("data pages", Box::new(|s| s.data_pages = u64::MAX)),
            ("command line", Box::new(|s| s.cmdline = "x".repeat(crate::linux::CMDLINE_MAX + 1))),
            ("two disks", Box::new(|s| s.devices = vec![disk(), disk()])),
            (
                "NIC before disk",
                Box::new(|s| {
                    s.devices = vec![nic(), disk()];
                    s.net = Some(addresses());
                }),
            ),
            ("NIC without addresses", Box::new(|s| s.devices = vec![nic()])),
            ("addresses without a NIC", Box::new(|s| s.net = Some(addresses()))),
            (
                "prefix",
                Box::new(|s| {
                    s.devices = vec![nic()];
                    s.net = Some(GuestNetSnapshot { prefix_len: 31, ..addresses() });
                }),
            ),
        ];
        for (what, edit) in cases {
            let mut s = good();
            edit(&mut s);
            assert!(s.check(&[0x10]).is_err(), "{what} was accepted");
        }
    }

    #[test]
    fn the_watch_pauses_on_the_ready_line_only() {
        let pause = PauseRequest::default();
        let mut w = ReadyWatch::new(Box::new(std::io::sink()), pause.clone());
        w.write_all(b"[    0.5] NOT READY\nREADY?\nALREADY\n").unwrap();
        assert!(!pause.requested());
        w.write_all(b"REA").unwrap();
        w.write_all(b"DY\r\n").unwrap();
        assert!(pause.requested());
    }
}
