//! What kind of CPU the harness runs on: bare metal, a virtual machine on hardware
//! virtualisation, or an **emulated** CPU (QEMU's TCG, as inside `scripts/testhost`). Read from
//! CPUID: the hypervisor-present bit (leaf 1, ECX bit 31) and the hypervisor vendor signature
//! (leaf 0x4000_0000). On an emulated CPU every timing is slower by orders of magnitude and in
//! different proportions, so records made there say their timings are not representative.

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
pub const TCG_SIGNATURE: &str = "TCGTCGTCGTCG";

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

/// Read CPUID on this machine.
#[cfg(target_arch = "x86_64")]
pub fn host_cpu() -> HostCpu {
    use std::arch::x86_64::__cpuid;
    // CPUID exists on every x86-64 CPU and has no side effects (a safe intrinsic).
    let leaf1 = __cpuid(1);
    if leaf1.ecx & (1 << 31) == 0 {
        return HostCpu::from_signature(None);
    }
    // Leaf 0x4000_0000 is reserved for hypervisors when the bit is set.
    let hv = __cpuid(0x4000_0000);
    let bytes: Vec<u8> = [hv.ebx, hv.ecx, hv.edx].iter().flat_map(|r| r.to_le_bytes()).collect();
    let sig = String::from_utf8_lossy(&bytes).trim_end_matches('\0').to_string();
    HostCpu::from_signature(Some(sig))
}

/// Read CPUID on this machine (not x86-64: nothing to read).
#[cfg(not(target_arch = "x86_64"))]
pub fn host_cpu() -> HostCpu {
    HostCpu::from_signature(None)
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
    fn this_host_is_classified_consistently_with_the_testhost_marker() {
        // scripts/testhost sets CVBENCH_TESTHOST=1 and boots an emulated CPU; elsewhere the marker
        // is absent. Either way the CPUID reading must agree with it.
        let c = host_cpu();
        if std::env::var_os("CVBENCH_TESTHOST").is_some() {
            assert!(c.emulated, "inside the test host CPUID must say TCG, got {c:?}");
        }
    }
}
