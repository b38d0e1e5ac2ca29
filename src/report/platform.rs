//! Which figures a platform shapes rather than the isolation measured: a VM's figures under a
//! software KVM (kvm_pvm: every exit and all guest-kernel code go through an emulator), and
//! every figure on an emulated CPU (QEMU TCG). The report marks such a figure in its table
//! cell, its chart and the summary with one symbol per cause, and says here what it means;
//! the Environment section also says when "native" is itself a virtual machine.

use crate::backend::BackendId;
use crate::env::{KvmKind, Manifest};
use crate::record::RunRecord;

/// The record `extra` key of the host's steal time (% of the unit's wall time) while a unit ran.
pub const STEAL_EXTRA: &str = "steal_pct";

/// Why a figure is not a fact about the isolation mechanism alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mark {
    /// A VM's figure under kvm_pvm.
    SoftwareKvm,
    /// Any figure measured on an emulated CPU.
    EmulatedCpu,
}

impl Mark {
    pub fn symbol(self) -> &'static str {
        match self {
            Mark::SoftwareKvm => "†",
            Mark::EmulatedCpu => "‡",
        }
    }

    /// A short name for chart legends.
    pub fn short(self) -> &'static str {
        match self {
            Mark::SoftwareKvm => "software KVM",
            Mark::EmulatedCpu => "emulated CPU",
        }
    }

    /// What the mark means, for the report's key.
    pub fn meaning(self) -> &'static str {
        match self {
            Mark::SoftwareKvm => {
                "measured under software nested KVM (kvm_pvm): guest user code runs natively, but every VM exit \
                 and all guest-kernel code go through the host's emulator, so exit, system-call, fault and I/O \
                 costs are this host's, not hardware KVM's"
            }
            Mark::EmulatedCpu => {
                "measured on an emulated CPU (QEMU TCG): timings are not representative of any hardware; only \
                 ratios within the same run carry meaning"
            }
        }
    }
}

/// The platform facts of one result set that decide the marks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Platform {
    pub kvm: Option<KvmKind>,
    /// CPUID's hypervisor vendor when the harness itself ran in a VM.
    pub hypervisor: Option<String>,
    pub emulated: bool,
}

impl Platform {
    pub fn from_manifest(m: &Manifest) -> Platform {
        Platform {
            kvm: Some(m.kvm),
            hypervisor: m.host_cpu.as_ref().and_then(|c| c.hypervisor.clone()),
            emulated: m.host_cpu.as_ref().is_some_and(|c| c.emulated),
        }
    }

    /// The marks a backend's figures carry, in symbol order.
    pub fn marks(&self, backend: &str) -> Vec<Mark> {
        let under_kvm = backend.parse::<BackendId>().is_ok_and(|b| b.kind().under_kvm());
        let mut v = Vec::new();
        if under_kvm && self.kvm == Some(KvmKind::SoftwarePvm) {
            v.push(Mark::SoftwareKvm);
        }
        if self.emulated {
            v.push(Mark::EmulatedCpu);
        }
        v
    }

    /// The symbols to append to a figure of `backend` (`""`, `" †"`, `" †‡"`).
    pub fn suffix(&self, backend: &str) -> String {
        let m = self.marks(backend);
        if m.is_empty() {
            String::new()
        } else {
            format!(" {}", m.iter().map(|m| m.symbol()).collect::<String>())
        }
    }

    /// A backend's name as a chart legend shows it: `microvm-bare † software KVM`.
    pub fn label(&self, backend: &str) -> String {
        let m = self.marks(backend);
        let words: Vec<String> = m.iter().map(|m| format!("{} {}", m.symbol(), m.short())).collect();
        if words.is_empty() {
            backend.to_string()
        } else {
            format!("{backend} {}", words.join(" "))
        }
    }

    /// The symbols alone after the name, for tight labels: `microvm-bare †`.
    pub fn short_label(&self, backend: &str) -> String {
        format!("{backend}{}", self.suffix(backend))
    }

    /// The symbols used by `backends` with their short names, for a chart title:
    /// `† = software KVM`; empty when none.
    pub fn title_key<'a>(&self, backends: impl IntoIterator<Item = &'a str>) -> String {
        self.used(backends).iter().map(|m| format!("{} = {}", m.symbol(), m.short())).collect::<Vec<_>>().join(", ")
    }

    /// The marks any of `backends` carries, each once.
    pub fn used<'a>(&self, backends: impl IntoIterator<Item = &'a str>) -> Vec<Mark> {
        let mut v: Vec<Mark> = backends.into_iter().flat_map(|b| self.marks(b)).collect();
        v.sort();
        v.dedup();
        v
    }

    /// The report's key to the marks used by `backends` (one line each), empty when none.
    pub fn key<'a>(&self, backends: impl IntoIterator<Item = &'a str>) -> String {
        self.used(backends).iter().map(|m| format!("{} = {}.", m.symbol(), m.meaning())).collect::<Vec<_>>().join(" ")
    }

    /// One Environment line on whether "native" is itself a virtual machine.
    pub fn native_is_vm(&self) -> String {
        match (&self.hypervisor, self.emulated) {
            (_, true) => "yes: the harness ran on an emulated CPU (QEMU TCG); native is a process in an emulated \
                          guest, so every figure, native's included, is an emulator's"
                .into(),
            (Some(h), false) => format!(
                "yes: CPUID reports hypervisor vendor {h:?}, so native is a process inside a virtual machine (its \
                 vCPUs' steal time and exits are in every figure, native's included); the ratios compare \
                 isolation inside that guest"
            ),
            (None, false) => "no hypervisor reported by CPUID (bare metal)".into(),
        }
    }
}

/// The run's steal time from the records that carry it: (median %, max %, units).
pub fn steal(records: &[RunRecord]) -> Option<(f64, f64, usize)> {
    let v: Vec<f64> = records.iter().filter_map(|r| r.extra.get(STEAL_EXTRA).copied()).collect();
    let med = crate::stats::median(&v)?;
    Some((med, v.iter().copied().fold(f64::NEG_INFINITY, f64::max), v.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pvm() -> Platform {
        Platform { kvm: Some(KvmKind::SoftwarePvm), hypervisor: Some("KVMKVMKVM".into()), emulated: false }
    }

    #[test]
    fn software_kvm_marks_only_the_backends_under_kvm() {
        let p = pvm();
        assert_eq!(p.marks("microvm-bare"), vec![Mark::SoftwareKvm]);
        assert_eq!(p.marks("qemu"), vec![Mark::SoftwareKvm]);
        assert_eq!(p.suffix("microvm"), " †");
        for b in ["native", "container", "runc", "docker", "gvisor"] {
            assert!(p.marks(b).is_empty(), "{b}");
            assert_eq!(p.label(b), b);
        }
        assert_eq!(p.label("microvm-bare"), "microvm-bare † software KVM");
        assert_eq!(p.short_label("microvm-bare"), "microvm-bare †");
        assert_eq!(p.title_key(["native", "qemu"]), "† = software KVM");
    }

    #[test]
    fn hardware_kvm_marks_nothing() {
        let p = Platform { kvm: Some(KvmKind::Hardware), ..pvm() };
        assert!(p.marks("microvm-bare").is_empty());
        assert_eq!(p.key(["microvm-bare", "native"]), "");
    }

    #[test]
    fn an_emulated_cpu_marks_every_backend_native_included() {
        let p = Platform { kvm: Some(KvmKind::Hardware), hypervisor: Some("TCGTCGTCGTCG".into()), emulated: true };
        assert_eq!(p.suffix("native"), " ‡");
        assert_eq!(p.suffix("container"), " ‡");
        let both = Platform { kvm: Some(KvmKind::SoftwarePvm), ..p };
        assert_eq!(both.suffix("microvm-bare"), " †‡");
        assert_eq!(both.used(["native", "microvm-bare"]), vec![Mark::SoftwareKvm, Mark::EmulatedCpu]);
    }

    #[test]
    fn the_key_explains_each_used_mark_once() {
        let k = pvm().key(["native", "microvm-bare", "qemu"]);
        assert_eq!(k.matches('†').count(), 1, "{k}");
        assert!(k.contains("kvm_pvm"), "{k}");
    }

    #[test]
    fn native_in_a_kvm_guest_is_said_to_be_a_vm() {
        assert!(pvm().native_is_vm().starts_with("yes"));
        assert!(pvm().native_is_vm().contains("KVMKVMKVM"));
        assert!(Platform::default().native_is_vm().starts_with("no"));
    }

    #[test]
    fn steal_is_summarised_from_the_records_that_carry_it() {
        let mut a = RunRecord::default();
        a.extra.insert(STEAL_EXTRA.into(), 2.0);
        let mut b = a.clone();
        b.extra.insert(STEAL_EXTRA.into(), 6.0);
        assert_eq!(steal(&[a, b, RunRecord::default()]), Some((4.0, 6.0, 2)));
        assert_eq!(steal(&[RunRecord::default()]), None);
    }
}
