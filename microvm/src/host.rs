//! What this host offers a VMM: which KVM backs `/dev/kvm` ([`KvmKind`], [`kvm_kind`]) and
//! what CPU the host itself runs on ([`HostCpu`]: bare metal or a guest of which hypervisor).
//! The one detector the VMM, the harness's manifest and `cvbench doctor` share.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Which KVM implementation backs `/dev/kvm`. Decides which guest features can work here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KvmKind {
    /// VMX/SVM hardware virtualisation (`kvm_intel`/`kvm_amd`), including nested hardware KVM.
    Hardware,
    /// `kvm_pvm`: a software nested hypervisor. Guest CPL3 code runs natively, guest CPL0 code
    /// is emulated (~2 MIPS here), so a guest kernel is impractically slow.
    SoftwarePvm,
    /// `/dev/kvm` exists but no known provider module is loaded (or it does not open).
    Unknown,
    /// No `/dev/kvm`.
    Absent,
}

impl KvmKind {
    /// Short stable name for records and `cvbench doctor`.
    pub fn name(self) -> &'static str {
        match self {
            KvmKind::Hardware => "hardware",
            KvmKind::SoftwarePvm => "kvm_pvm",
            KvmKind::Unknown => "unknown",
            KvmKind::Absent => "absent",
        }
    }

    /// One sentence for reports.
    pub fn describe(self) -> &'static str {
        match self {
            KvmKind::Hardware => "hardware KVM (kvm_intel/kvm_amd)",
            KvmKind::SoftwarePvm => {
                "software nested KVM (kvm_pvm): guest user code runs natively, guest kernel code is emulated (~2 MIPS)"
            }
            KvmKind::Unknown => "KVM of an unrecognised kind",
            KvmKind::Absent => "no usable /dev/kvm",
        }
    }

    /// Whether the VMM can create VMs here.
    pub fn usable(self) -> bool {
        matches!(self, KvmKind::Hardware | KvmKind::SoftwarePvm)
    }
}

impl std::fmt::Display for KvmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// The KVM kind of this host and, when it is not usable, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvmProbe {
    pub kind: KvmKind,
    pub why_unusable: Option<String>,
}

impl KvmProbe {
    /// `Ok(kind)` when the VMM can run here, else the reason it cannot.
    pub fn usable(&self) -> Result<KvmKind, String> {
        match &self.why_unusable {
            None => Ok(self.kind),
            Some(why) => Err(why.clone()),
        }
    }
}

/// Detect the KVM kind of this host from `/dev/kvm` and `/sys/module`.
pub fn kvm_kind() -> KvmKind {
    kvm_probe().kind
}

/// [`kvm_kind`] with the reason when KVM is not usable.
pub fn kvm_probe() -> KvmProbe {
    kvm_probe_at(Path::new("/dev/kvm"), Path::new("/sys/module"))
}

/// [`kvm_probe`] with the device node and the sysfs module directory as parameters (for tests).
pub fn kvm_probe_at(dev: &Path, sys_module: &Path) -> KvmProbe {
    let unusable = |kind, why: String| KvmProbe { kind, why_unusable: Some(why) };
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        let kind = if dev.exists() { KvmKind::Unknown } else { KvmKind::Absent };
        return unusable(kind, format!("cannot open {}: {e}", dev.display()));
    }
    let kind = if sys_module.join("kvm_pvm").exists() {
        KvmKind::SoftwarePvm
    } else if sys_module.join("kvm_intel").exists() || sys_module.join("kvm_amd").exists() {
        KvmKind::Hardware
    } else {
        return unusable(
            KvmKind::Unknown,
            format!("{} opens but no kvm_intel, kvm_amd or kvm_pvm module is loaded", dev.display()),
        );
    };
    KvmProbe { kind, why_unusable: None }
}

/// The CPU this host runs on, as CPUID shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCpu {
    /// The 12-byte hypervisor vendor of CPUID leaf 0x4000_0000 when the host is itself a
    /// guest (CPUID.1:ECX bit 31 set): `KVMKVMKVM\0\0\0`, `TCGTCGTCGTCG`, `Microsoft Hv`, ...
    pub hypervisor_vendor: Option<String>,
}

/// The vendor QEMU's TCG (its instruction emulator, no hardware virtualisation) reports.
pub const TCG_VENDOR: &str = "TCGTCGTCGTCG";

impl HostCpu {
    /// Whether the host CPU is emulated instruction by instruction (QEMU TCG), so every
    /// timing here is the emulator's, not a CPU's.
    pub fn emulated(&self) -> bool {
        self.hypervisor_vendor.as_deref() == Some(TCG_VENDOR)
    }

    /// Build from raw CPUID results: `ecx1` of leaf 1 and EBX, ECX, EDX of leaf 0x4000_0000.
    pub fn from_cpuid(ecx1: u32, vendor_regs: [u32; 3]) -> HostCpu {
        if ecx1 & (1 << 31) == 0 {
            return HostCpu { hypervisor_vendor: None };
        }
        let bytes: Vec<u8> = vendor_regs.iter().flat_map(|r| r.to_le_bytes()).collect();
        let vendor = String::from_utf8_lossy(&bytes).trim_end_matches('\0').to_string();
        HostCpu { hypervisor_vendor: Some(vendor) }
    }
}

/// Probe the host CPU with the CPUID instruction.
#[cfg(target_arch = "x86_64")]
#[allow(unused_unsafe)] // __cpuid is an unsafe fn before Rust 1.87 and safe since
pub fn host_cpu() -> HostCpu {
    // SAFETY: CPUID is available on every x86-64 CPU and only reads identification registers.
    let (leaf1, hv) = unsafe { (std::arch::x86_64::__cpuid(1), std::arch::x86_64::__cpuid(0x4000_0000)) };
    HostCpu::from_cpuid(leaf1.ecx, [hv.ebx, hv.ecx, hv.edx])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(modules: &[&str]) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("kvm");
        std::fs::write(&dev, b"").unwrap();
        for m in modules {
            std::fs::create_dir_all(dir.path().join("mod").join(m)).unwrap();
        }
        let module_dir = dir.path().join("mod");
        (dir, dev, module_dir)
    }

    #[test]
    fn kvm_kind_reports_pvm_when_the_module_is_loaded() {
        let (_d, dev, m) = fake(&["kvm_pvm", "kvm"]);
        assert_eq!(kvm_probe_at(&dev, &m).usable(), Ok(KvmKind::SoftwarePvm));
    }

    #[test]
    fn kvm_kind_reports_hardware_for_kvm_intel() {
        let (_d, dev, m) = fake(&["kvm_intel"]);
        assert_eq!(kvm_probe_at(&dev, &m).kind, KvmKind::Hardware);
    }

    #[test]
    fn kvm_kind_is_unknown_without_a_provider_module() {
        let (_d, dev, m) = fake(&["kvm"]);
        let p = kvm_probe_at(&dev, &m);
        assert_eq!(p.kind, KvmKind::Unknown);
        assert!(p.usable().is_err());
    }

    #[test]
    fn kvm_kind_is_absent_without_a_device_node() {
        let dir = tempfile::tempdir().unwrap();
        let p = kvm_probe_at(&dir.path().join("missing"), dir.path());
        assert_eq!(p.kind, KvmKind::Absent);
        assert!(p.why_unusable.unwrap().contains("missing"));
    }

    #[test]
    fn kvm_kind_serialises_as_the_manifest_names() {
        assert_eq!(serde_json::to_string(&KvmKind::SoftwarePvm).unwrap(), "\"software-pvm\"");
    }

    #[test]
    fn tcg_vendor_marks_an_emulated_cpu() {
        let regs = [u32::from_le_bytes(*b"TCGT"), u32::from_le_bytes(*b"CGTC"), u32::from_le_bytes(*b"GTCG")];
        assert!(HostCpu::from_cpuid(1 << 31, regs).emulated());
        let kvm = [u32::from_le_bytes(*b"KVMK"), u32::from_le_bytes(*b"VMKV"), u32::from_le_bytes(*b"M\0\0\0")];
        let cpu = HostCpu::from_cpuid(1 << 31, kvm);
        assert_eq!(cpu.hypervisor_vendor.as_deref(), Some("KVMKVMKVM"));
        assert!(!cpu.emulated());
        assert_eq!(HostCpu::from_cpuid(0, regs).hypervisor_vendor, None);
    }
}
