//! What kind of CPU the harness runs on, as the manifest and the records state it: bare metal, a
//! virtual machine on hardware virtualisation, or an **emulated** CPU (QEMU's TCG, as inside
//! `scripts/testhost`), from the VMM crate's CPUID probe (`cvbench_microvm::host::host_cpu`). On an
//! emulated CPU every timing is slower by orders of magnitude and in different proportions, so
//! records made there say their timings are not representative.

use serde::{Deserialize, Serialize};

/// The host CPU as CPUID describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCpu {
    /// The 12-byte hypervisor vendor signature (`KVMKVMKVM`, `TCGTCGTCGTCG`, `Microsoft Hv`, …),
    /// or `None` on bare metal.
    pub hypervisor: Option<String>,
    /// True when the CPU itself is emulated (TCG): timings are not representative.
    pub emulated: bool,
}

/// The vendor signature QEMU's TCG emulator reports.
pub const TCG_SIGNATURE: &str = cvbench_microvm::host::TCG_VENDOR;

impl HostCpu {
    /// Classify a hypervisor vendor signature.
    pub fn from_signature(hypervisor: Option<String>) -> HostCpu {
        let emulated = hypervisor.as_deref() == Some(TCG_SIGNATURE);
        HostCpu { hypervisor, emulated }
    }

    /// One line for the doctor, the manifest and the report.
    pub fn describe(&self) -> String {
        match (&self.hypervisor, self.emulated) {
            (_, true) => format!(
                "emulated CPU (CPUID hypervisor vendor {TCG_SIGNATURE}: QEMU TCG, e.g. the cvbench test host): \
                 functional results only, timings are NOT representative of any hardware"
            ),
            (Some(h), false) => format!("virtual machine on hardware virtualisation (hypervisor vendor {h:?})"),
            (None, false) => "bare metal (no hypervisor reported by CPUID)".into(),
        }
    }
}

/// This machine's CPU, from the VMM crate's CPUID probe (one reader of CPUID for the VMM, the
/// doctor, the manifest and the records).
pub fn host_cpu() -> HostCpu {
    let cpuid = cvbench_microvm::host::host_cpu().hypervisor_vendor;
    HostCpu::from_signature(cpuid.or_else(|| {
        let sys = std::fs::read_to_string("/sys/hypervisor/type").ok();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        hypervisor_without_cpuid(sys.as_deref(), &cpuinfo)
    }))
}

/// When CPUID names no hypervisor vendor, what the kernel says instead: `/sys/hypervisor/type`
/// (Xen guests), else the `hypervisor` flag in `/proc/cpuinfo` (a vendor that hides its name).
pub fn hypervisor_without_cpuid(sys_hypervisor_type: Option<&str>, cpuinfo: &str) -> Option<String> {
    if let Some(t) = sys_hypervisor_type.map(str::trim).filter(|t| !t.is_empty()) {
        return Some(format!("{t} (/sys/hypervisor/type)"));
    }
    let flagged = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split(':').nth(1).is_some_and(|f| f.split_whitespace().any(|w| w == "hypervisor")));
    flagged.then(|| "unnamed (hypervisor flag in /proc/cpuinfo)".to_string())
}

/// The note every record made on an emulated CPU carries.
pub fn not_representative_note(cpu: &HostCpu) -> Option<String> {
    cpu.emulated.then(|| {
        "host: emulated CPU (QEMU TCG): this record's timings are not representative of any hardware; \
         only functional results and ratios between runs made in the same test-host boot carry meaning"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcg_signature_means_emulated() {
        let c = HostCpu::from_signature(Some(TCG_SIGNATURE.into()));
        assert!(c.emulated);
        assert!(c.describe().contains("NOT representative"));
        assert!(not_representative_note(&c).is_some());
    }

    #[test]
    fn kvm_guest_and_bare_metal_are_not_emulated() {
        assert!(!HostCpu::from_signature(Some("KVMKVMKVM".into())).emulated);
        assert!(!HostCpu::from_signature(None).emulated);
        assert_eq!(not_representative_note(&HostCpu::from_signature(None)), None);
    }

    #[test]
    fn without_cpuid_the_kernel_names_the_hypervisor() {
        assert_eq!(hypervisor_without_cpuid(Some("xen\n"), "").as_deref(), Some("xen (/sys/hypervisor/type)"));
        let flags = "processor\t: 0\nflags\t\t: fpu vme hypervisor lahf_lm\n";
        assert!(hypervisor_without_cpuid(None, flags).unwrap().contains("hypervisor flag"));
        assert_eq!(hypervisor_without_cpuid(None, "flags\t\t: fpu vme lahf_lm\n"), None);
        assert_eq!(hypervisor_without_cpuid(Some(""), "flags : fpu\n"), None);
    }

    #[test]
    fn this_host_is_classified_consistently_with_the_testhost_marker() {
        // scripts/testhost sets CVBENCH_TESTHOST=1 and boots an emulated CPU; elsewhere the marker
        // is absent. Either way the CPUID reading must agree with it.
        let c = host_cpu();
        if std::env::var_os("CVBENCH_TESTHOST").is_some() {
            assert!(c.emulated, "inside the test host CPUID must say TCG, got {c:?}");
        }
    }
}
