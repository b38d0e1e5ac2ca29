//! The guest's CPUID: what KVM supports on this host, with the topology filled in for this
//! VM's vCPUs, the hypervisor bit set and, under kvm_pvm, ARCH_CAPABILITIES hidden (its MSR
//! is not emulated there and the guest kernel faults reading it).

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

/// What the filter needs to know about the VM.
#[derive(Clone, Copy, Debug)]
pub struct CpuidSpec {
    pub vcpu_id: u8,
    pub vcpus: u8,
    pub pvm: bool,
}

const LEAF_FEATURES: u32 = 1;
const LEAF_CACHE: u32 = 4;
const LEAF_EXT_FEATURES: u32 = 7;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const EDX_ARCH_CAPABILITIES: u32 = 1 << 29;

/// Adjust one entry for `spec`.
pub fn filter_entry(e: &mut kvm_cpuid_entry2, spec: CpuidSpec) {
    let apic_id = u32::from(spec.vcpu_id);
    let count = u32::from(spec.vcpus.max(1));
    match e.function {
        LEAF_FEATURES => {
            // EBX: [31:24] initial APIC ID, [23:16] logical processors per package.
            e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | (count << 16);
            e.ecx |= ECX_HYPERVISOR;
            if count > 1 {
                e.edx |= EDX_HTT;
            } else {
                e.edx &= !EDX_HTT;
            }
        }
        LEAF_CACHE => {
            // EAX[31:26]: cores per package - 1; [25:14]: threads sharing this cache - 1.
            e.eax = (e.eax & 0x3fff) | ((count - 1) << 26);
        }
        LEAF_EXT_FEATURES if e.index == 0 && spec.pvm => {
            e.edx &= !EDX_ARCH_CAPABILITIES;
        }
        LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
            // One thread per core, all cores in one package.
            let shift = 32 - (count - 1).leading_zeros();
            match e.index {
                0 => {
                    e.eax = 0;
                    e.ebx = 1;
                    e.ecx = 1 << 8; // level type SMT
                }
                1 => {
                    e.eax = shift;
                    e.ebx = count;
                    e.ecx = (2 << 8) | 1; // level type core
                }
                _ => {
                    e.eax = 0;
                    e.ebx = 0;
                    e.ecx = e.index;
                }
            }
            e.edx = apic_id;
        }
        _ => {}
    }
}

/// Filter every entry of KVM's supported CPUID for vCPU `spec.vcpu_id`.
pub fn filter(supported: &CpuId, spec: CpuidSpec) -> CpuId {
    let mut out = supported.clone();
    for e in out.as_mut_slice() {
        filter_entry(e, spec);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: 0xffff_ffff,
            ebx: 0xffff_ffff,
            ecx: 0,
            edx: 0xffff_ffff,
            ..Default::default()
        }
    }

    #[test]
    fn leaf_1_carries_apic_id_count_and_the_hypervisor_bit() {
        let mut e = entry(1, 0);
        filter_entry(&mut e, CpuidSpec { vcpu_id: 3, vcpus: 4, pvm: false });
        assert_eq!(e.ebx >> 24, 3);
        assert_eq!((e.ebx >> 16) & 0xff, 4);
        assert_ne!(e.ecx & ECX_HYPERVISOR, 0);
    }

    #[test]
    fn arch_capabilities_is_hidden_only_under_pvm() {
        let mut hw = entry(7, 0);
        filter_entry(&mut hw, CpuidSpec { vcpu_id: 0, vcpus: 1, pvm: false });
        assert_ne!(hw.edx & EDX_ARCH_CAPABILITIES, 0);
        let mut pvm = entry(7, 0);
        filter_entry(&mut pvm, CpuidSpec { vcpu_id: 0, vcpus: 1, pvm: true });
        assert_eq!(pvm.edx & EDX_ARCH_CAPABILITIES, 0);
    }

    #[test]
    fn topology_leaf_reports_the_x2apic_id_and_core_count() {
        let mut e = entry(0xb, 1);
        filter_entry(&mut e, CpuidSpec { vcpu_id: 1, vcpus: 2, pvm: false });
        assert_eq!((e.eax, e.ebx, e.edx), (1, 2, 1));
    }
}
