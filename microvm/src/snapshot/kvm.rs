//! The in-kernel KVM state a Linux guest's snapshot keeps, saved from and restored to live
//! vCPU and VM handles: per vCPU the registers, special registers, XSAVE area, XCRs, local
//! APIC, MSRs, multiprocessing state, pending events and debug registers; per VM the PIC pair,
//! the IOAPIC, the PIT and kvmclock.
//!
//! KVM's state structs are plain C data. They are kept as [`Blob`]s: the struct's bytes as a
//! hex string of exactly its size, refused on load if the length differs (kvm-bindings' own
//! serde pads or truncates silently, which a snapshot reader must not). What KVM cannot check
//! itself is checked here: the MSR list is bounded and may only name MSRs this host's KVM
//! saves, the multiprocessing state is one KVM defines, each irqchip blob is the chip it
//! claims to be.
//!
//! Restore order follows what each part depends on (Firecracker's `restore_state`): the VM's
//! PIT, clock and irqchips before any vCPU; per vCPU the CPUID first (the caller), then
//! multiprocessing state, registers, special registers (which the MSRs and XSAVE depend on),
//! XSAVE and XCRs, debug registers, the local APIC, the MSRs (the TSC before its deadline), and
//! the pending events last.

use kvm_bindings::{
    kvm_clock_data, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_pit_state2,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, Msrs, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_MAX_MSR_ENTRIES,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::vcpu::RegsState;
use crate::vstate::{KvmVcpu, KvmVm, Vcpu};

/// Errors from reading or writing KVM state; each names the vCPU (or the VM) and the ioctl.
#[derive(Debug, thiserror::Error)]
pub enum KvmStateError {
    #[error("vCPU {id}: {op} failed")]
    Vcpu {
        id: u8,
        op: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("VM: {op} failed")]
    Vm {
        op: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot build an MSR list of {0} entries")]
    MsrList(usize),
    #[error("this host's KVM keeps an XSAVE area of {0} bytes; snapshots handle the 4096-byte area only")]
    XsaveSize(usize),
}

/// A KVM state struct every bit pattern of which is a valid value.
///
/// # Safety
/// Implement only for `#[repr(C)]` structs of integers, integer arrays and unions of such,
/// with no pointers, references or enums: [`Blob`] builds values of them from arbitrary bytes.
pub unsafe trait Pod: Default {}
// SAFETY: each is a bindgen `#[repr(C)]` struct of integers, integer arrays and unions of them.
unsafe impl Pod for kvm_sregs {}
// SAFETY: as above.
unsafe impl Pod for kvm_xsave {}
// SAFETY: as above.
unsafe impl Pod for kvm_xcrs {}
// SAFETY: as above.
unsafe impl Pod for kvm_lapic_state {}
// SAFETY: as above.
unsafe impl Pod for kvm_vcpu_events {}
// SAFETY: as above.
unsafe impl Pod for kvm_debugregs {}
// SAFETY: as above.
unsafe impl Pod for kvm_irqchip {}
// SAFETY: as above.
unsafe impl Pod for kvm_pit_state2 {}
// SAFETY: as above.
unsafe impl Pod for kvm_clock_data {}

/// A KVM state struct kept as the hex of its bytes, exactly `size_of::<T>()` of them.
#[derive(Default)]
pub struct Blob<T: Pod>(pub T);

impl<T: Pod> Blob<T> {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `T: Pod` is plain data; viewing its `size_of::<T>()` bytes is sound (padding,
        // if any, was zeroed: every value here comes from Default or from KVM, which zeroes it).
        unsafe { std::slice::from_raw_parts((&self.0 as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
    }

    /// The value whose bytes are `bytes`, which must be exactly `size_of::<T>()` long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Blob<T>> {
        if bytes.len() != std::mem::size_of::<T>() {
            return None;
        }
        // SAFETY: the length matches and `T: Pod` accepts every bit pattern; read_unaligned
        // makes no alignment assumption about `bytes`.
        Some(Blob(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }))
    }
}

impl<T: Pod> Clone for Blob<T> {
    fn clone(&self) -> Blob<T> {
        // SAFETY: reading a `T` from the bytes of a `T` (Pod: no ownership, any bit pattern).
        Blob(unsafe { std::ptr::read_unaligned(&self.0 as *const T) })
    }
}

impl<T: Pod> std::fmt::Debug for Blob<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blob<{}>({} bytes)", std::any::type_name::<T>(), std::mem::size_of::<T>())
    }
}

impl<T: Pod> PartialEq for Blob<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl<T: Pod> Serialize for Blob<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let hex: String = self.bytes().iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&hex)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Blob<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blob<T>, D::Error> {
        use serde::de::Error;
        let hex = String::deserialize(d)?;
        let want = std::mem::size_of::<T>();
        if hex.len() != 2 * want || !hex.is_ascii() {
            return Err(D::Error::custom(format!(
                "{} must be {} hex digits, found {} characters",
                std::any::type_name::<T>(),
                2 * want,
                hex.len()
            )));
        }
        let bytes = (0..want)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| D::Error::custom(format!("{}: {e}", std::any::type_name::<T>())))?;
        Blob::from_bytes(&bytes).ok_or_else(|| D::Error::custom("length"))
    }
}

/// The largest MSR list a snapshot may carry (KVM's own limit per call).
pub const MAX_MSRS: usize = KVM_MAX_MSR_ENTRIES;
/// The highest multiprocessing state KVM defines (`KVM_MP_STATE_AP_RESET_HOLD`).
const MAX_MP_STATE: u32 = 9;

/// One vCPU's KVM state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcpuState {
    pub id: u8,
    pub regs: RegsState,
    pub sregs: Blob<kvm_sregs>,
    pub xsave: Blob<kvm_xsave>,
    pub xcrs: Blob<kvm_xcrs>,
    pub lapic: Blob<kvm_lapic_state>,
    /// (index, value) of every MSR KVM saves that this vCPU could read.
    pub msrs: Vec<(u32, u64)>,
    pub mp_state: u32,
    pub events: Blob<kvm_vcpu_events>,
    pub debugregs: Blob<kvm_debugregs>,
}

/// The VM's in-kernel devices and clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmState {
    pub pic_master: Blob<kvm_irqchip>,
    pub pic_slave: Blob<kvm_irqchip>,
    pub ioapic: Blob<kvm_irqchip>,
    pub pit: Blob<kvm_pit_state2>,
    pub clock: Blob<kvm_clock_data>,
}

impl VcpuState {
    /// Bounds a snapshot's vCPU must keep. `host_msrs` is the list this host's KVM saves.
    pub fn check(&self, host_msrs: &[u32]) -> Result<(), String> {
        let id = self.id;
        if self.msrs.len() > MAX_MSRS {
            return Err(format!("vCPU {id} has {} MSRs (at most {MAX_MSRS})", self.msrs.len()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for &(index, _) in &self.msrs {
            if !host_msrs.contains(&index) || !seen.insert(index) {
                return Err(format!("vCPU {id}: MSR {index:#x} is not one this host's KVM saves, or is listed twice"));
            }
        }
        if self.mp_state > MAX_MP_STATE {
            return Err(format!("vCPU {id}: multiprocessing state {} is not one KVM defines", self.mp_state));
        }
        Ok(())
    }
}

impl VmState {
    /// Each irqchip blob must be the chip it is stored as.
    pub fn check(&self) -> Result<(), String> {
        for (chip, want, name) in [
            (&self.pic_master, KVM_IRQCHIP_PIC_MASTER, "PIC master"),
            (&self.pic_slave, KVM_IRQCHIP_PIC_SLAVE, "PIC slave"),
            (&self.ioapic, KVM_IRQCHIP_IOAPIC, "IOAPIC"),
        ] {
            if chip.0.chip_id != want || chip.0.pad != 0 {
                return Err(format!("the {name} state is for irqchip {} (expected {want})", chip.0.chip_id));
            }
        }
        Ok(())
    }
}

/// The MSRs this host's KVM saves and restores (KVM_GET_MSR_INDEX_LIST), read before the VMM
/// is jailed.
pub fn host_msr_list(vm: &KvmVm) -> Result<Vec<u32>, KvmStateError> {
    let list =
        vm.kvm().get_msr_index_list().map_err(|source| KvmStateError::Vm { op: "KVM_GET_MSR_INDEX_LIST", source })?;
    Ok(list.as_slice().to_vec())
}

/// Refuse a host whose XSAVE area is larger than `kvm_xsave` (KVM_CAP_XSAVE2 > 4096): the
/// fixed-size KVM_SET_XSAVE would let the kernel read past the struct.
pub fn check_xsave_size(vm: &KvmVm) -> Result<(), KvmStateError> {
    let size = vm.fd().check_extension_int(kvm_ioctls::Cap::Xsave2);
    if size > 0 && size as usize > std::mem::size_of::<kvm_xsave>() {
        return Err(KvmStateError::XsaveSize(size as usize));
    }
    Ok(())
}

/// Read the MSRs of `indices` KVM lets this vCPU read: KVM stops at the first it refuses, so
/// that one is dropped and the read goes on from the next.
fn read_msrs(vcpu: &mut KvmVcpu, indices: &[u32]) -> Result<Vec<(u32, u64)>, KvmStateError> {
    let id = vcpu.id();
    let mut out = Vec::with_capacity(indices.len());
    let mut rest = &indices[..indices.len().min(MAX_MSRS)];
    while !rest.is_empty() {
        let entries: Vec<kvm_msr_entry> =
            rest.iter().map(|&index| kvm_msr_entry { index, ..Default::default() }).collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| KvmStateError::MsrList(entries.len()))?;
        let n =
            vcpu.fd().get_msrs(&mut msrs).map_err(|source| KvmStateError::Vcpu { id, op: "KVM_GET_MSRS", source })?;
        out.extend(msrs.as_slice()[..n].iter().map(|e| (e.index, e.data)));
        rest = &rest[(n + 1).min(rest.len())..];
    }
    Ok(out)
}

/// The time-stamp counter and the LAPIC timer's deadline in it.
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;

/// Save a stopped vCPU (out of KVM_RUN, its last exit completed). Reading some state changes
/// other state, so the order matters: the multiprocessing state first (reading it lets the
/// LAPIC accept pending INIT/SIPI events), the pending events last (the other reads may add
/// to them).
pub fn save_vcpu(vcpu: &mut KvmVcpu, msr_list: &[u32]) -> Result<VcpuState, KvmStateError> {
    let id = vcpu.id();
    let e = |op| move |source| KvmStateError::Vcpu { id, op, source };
    let fd = vcpu.fd();
    let mp_state = fd.get_mp_state().map_err(e("KVM_GET_MP_STATE"))?.mp_state;
    let regs = RegsState::from(&fd.get_regs().map_err(e("KVM_GET_REGS"))?);
    let sregs = Blob(fd.get_sregs().map_err(e("KVM_GET_SREGS"))?);
    let xsave = Blob(fd.get_xsave().map_err(e("KVM_GET_XSAVE"))?);
    let xcrs = Blob(fd.get_xcrs().map_err(e("KVM_GET_XCRS"))?);
    let debugregs = Blob(fd.get_debug_regs().map_err(e("KVM_GET_DEBUGREGS"))?);
    let lapic = Blob(fd.get_lapic().map_err(e("KVM_GET_LAPIC"))?);
    let mut msrs = read_msrs(vcpu, msr_list)?;
    arm_cleared_deadline(&mut msrs);
    let events = Blob(vcpu.fd().get_vcpu_events().map_err(e("KVM_GET_VCPU_EVENTS"))?);
    Ok(VcpuState { id, regs, sregs, xsave, xcrs, lapic, msrs, mp_state, events, debugregs })
}

/// A TSC deadline of 0 (the timer just fired, or was disarmed while its interrupt was still
/// on its way) is saved as "now": restored as 0 the vCPU may never see that timer interrupt
/// and wait forever (Firecracker saw this); at the current TSC it fires once at resume, which
/// the guest's timer code takes as an early or spurious tick.
fn arm_cleared_deadline(msrs: &mut [(u32, u64)]) {
    let Some(tsc) = msrs.iter().find(|m| m.0 == MSR_IA32_TSC).map(|m| m.1) else { return };
    for m in msrs.iter_mut().filter(|m| m.0 == MSR_IA32_TSC_DEADLINE && m.1 == 0) {
        m.1 = tsc;
    }
}

/// The MSRs in restore order: the TSC first (KVM arms the deadline timer against the TSC as it
/// is when the deadline is written), the TSC deadline last, the rest as saved.
fn restore_order(msrs: &[(u32, u64)]) -> Vec<(u32, u64)> {
    let rank = |index: u32| match index {
        MSR_IA32_TSC => 0,
        MSR_IA32_TSC_DEADLINE => 2,
        _ => 1,
    };
    let mut v = msrs.to_vec();
    v.sort_by_key(|m| rank(m.0));
    v
}

/// Load `s` into a fresh vCPU whose CPUID is already set (checked with [`VcpuState::check`]
/// and [`check_xsave_size`] first). Order: registers before the pending events (setting
/// registers clears a pending exception, the events bring it back), special registers before
/// the LAPIC (they carry the APIC base), the LAPIC before the MSRs (the TSC deadline only
/// takes with the LAPIC timer in deadline mode), events last. Returns the MSRs KVM refused to set (each dropped and
/// reported, as the boot path reports the boot MSRs KVM refuses).
pub fn restore_vcpu(vcpu: &mut KvmVcpu, s: &VcpuState) -> Result<Vec<u32>, KvmStateError> {
    let id = vcpu.id();
    let e = |op| move |source| KvmStateError::Vcpu { id, op, source };
    let fd = vcpu.fd();
    fd.set_mp_state(kvm_mp_state { mp_state: s.mp_state }).map_err(e("KVM_SET_MP_STATE"))?;
    fd.set_regs(&(&s.regs).into()).map_err(e("KVM_SET_REGS"))?;
    fd.set_sregs(&s.sregs.0).map_err(e("KVM_SET_SREGS"))?;
    // SAFETY: `kvm_xsave` is the fixed 4 KiB area and check_xsave_size confirmed this host's
    // KVM reads no more than that.
    unsafe { fd.set_xsave(&s.xsave.0) }.map_err(e("KVM_SET_XSAVE"))?;
    fd.set_xcrs(&s.xcrs.0).map_err(e("KVM_SET_XCRS"))?;
    fd.set_debug_regs(&s.debugregs.0).map_err(e("KVM_SET_DEBUGREGS"))?;
    fd.set_lapic(&s.lapic.0).map_err(e("KVM_SET_LAPIC"))?;
    let refused = write_msrs(vcpu, &restore_order(&s.msrs))?;
    vcpu.fd().set_vcpu_events(&s.events.0).map_err(e("KVM_SET_VCPU_EVENTS"))?;
    Ok(refused)
}

/// Set `msrs`; KVM stops at the first it refuses, so that one is noted and the rest set.
fn write_msrs(vcpu: &mut KvmVcpu, msrs: &[(u32, u64)]) -> Result<Vec<u32>, KvmStateError> {
    let id = vcpu.id();
    let mut refused = Vec::new();
    let mut rest = msrs;
    while !rest.is_empty() {
        let entries: Vec<kvm_msr_entry> =
            rest.iter().map(|&(index, data)| kvm_msr_entry { index, data, ..Default::default() }).collect();
        let list = Msrs::from_entries(&entries).map_err(|_| KvmStateError::MsrList(entries.len()))?;
        let n = vcpu.fd().set_msrs(&list).map_err(|source| KvmStateError::Vcpu { id, op: "KVM_SET_MSRS", source })?;
        if let Some(&(index, _)) = rest.get(n) {
            refused.push(index);
        }
        rest = &rest[(n + 1).min(rest.len())..];
    }
    Ok(refused)
}

/// Save the VM's irqchips, PIT and clock (every vCPU stopped).
pub fn save_vm(vm: &KvmVm) -> Result<VmState, KvmStateError> {
    let e = |op| move |source| KvmStateError::Vm { op, source };
    let chip = |chip_id| {
        let mut c = kvm_irqchip { chip_id, ..Default::default() };
        vm.fd().get_irqchip(&mut c).map(|()| Blob(c)).map_err(e("KVM_GET_IRQCHIP"))
    };
    Ok(VmState {
        pic_master: chip(KVM_IRQCHIP_PIC_MASTER)?,
        pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE)?,
        ioapic: chip(KVM_IRQCHIP_IOAPIC)?,
        pit: Blob(vm.fd().get_pit2().map_err(e("KVM_GET_PIT2"))?),
        clock: Blob(vm.fd().get_clock().map_err(e("KVM_GET_CLOCK"))?),
    })
}

/// Load `s` into a fresh VM with its irqchip and PIT created, before any vCPU exists.
pub fn restore_vm(vm: &KvmVm, s: &VmState) -> Result<(), KvmStateError> {
    let e = |op| move |source| KvmStateError::Vm { op, source };
    vm.fd().set_pit2(&s.pit.0).map_err(e("KVM_SET_PIT2"))?;
    // Only the clock value is carried over: the flags KVM reported (e.g. KVM_CLOCK_TSC_STABLE,
    // the host realtime fields) describe the old host's clock, not a request.
    let clock = kvm_clock_data { clock: s.clock.0.clock, ..Default::default() };
    vm.fd().set_clock(&clock).map_err(e("KVM_SET_CLOCK"))?;
    for chip in [&s.pic_master, &s.pic_slave, &s.ioapic] {
        vm.fd().set_irqchip(&chip.0).map_err(e("KVM_SET_IRQCHIP"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_round_trips_through_json_as_hex() {
        let mut lapic = kvm_lapic_state::default();
        lapic.regs[0x20] = 7;
        lapic.regs[1023] = -1;
        let json = serde_json::to_string(&Blob(lapic)).unwrap();
        assert_eq!(json.len(), 2 + 2 * 1024);
        let back: Blob<kvm_lapic_state> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Blob(lapic));
    }

    #[test]
    fn a_blob_of_the_wrong_length_or_not_hex_is_refused() {
        let short = format!("\"{}\"", "00".repeat(1023));
        assert!(serde_json::from_str::<Blob<kvm_lapic_state>>(&short).is_err());
        let long = format!("\"{}\"", "00".repeat(1025));
        assert!(serde_json::from_str::<Blob<kvm_lapic_state>>(&long).is_err());
        let bad = format!("\"{}zz\"", "00".repeat(1023));
        assert!(serde_json::from_str::<Blob<kvm_lapic_state>>(&bad).is_err());
        let multibyte = format!("\"{}é\"", "00".repeat(1023));
        assert!(serde_json::from_str::<Blob<kvm_lapic_state>>(&multibyte).is_err());
    }

    fn vcpu() -> VcpuState {
        VcpuState {
            id: 0,
            regs: RegsState::default(),
            sregs: Blob::default(),
            xsave: Blob::default(),
            xcrs: Blob::default(),
            lapic: Blob::default(),
            msrs: vec![(0x10, 5), (0x174, 0)],
            mp_state: 0,
            events: Blob::default(),
            debugregs: Blob::default(),
        }
    }

    #[test]
    fn msrs_the_host_does_not_save_or_listed_twice_are_refused() {
        let host = [0x10, 0x174, 0x175];
        assert!(vcpu().check(&host).is_ok());
        let mut v = vcpu();
        v.msrs.push((0xc000_0080, 0));
        assert!(v.check(&host).unwrap_err().contains("0xc0000080"));
        let mut v = vcpu();
        v.msrs.push((0x10, 1));
        assert!(v.check(&host).is_err());
        let mut v = vcpu();
        v.msrs = (0..=MAX_MSRS as u32).map(|i| (i, 0)).collect();
        assert!(v.check(&(0..=MAX_MSRS as u32).collect::<Vec<_>>()).is_err());
    }

    #[test]
    fn the_tsc_is_restored_before_its_deadline_and_a_cleared_deadline_is_saved_as_now() {
        let saved = [(MSR_IA32_TSC_DEADLINE, 900), (0x174, 1), (MSR_IA32_TSC, 1000), (0x175, 2)];
        let order: Vec<u32> = restore_order(&saved).iter().map(|m| m.0).collect();
        assert_eq!(order, [MSR_IA32_TSC, 0x174, 0x175, MSR_IA32_TSC_DEADLINE]);
        let mut msrs = vec![(MSR_IA32_TSC, 1000), (MSR_IA32_TSC_DEADLINE, 0)];
        arm_cleared_deadline(&mut msrs);
        assert_eq!(msrs[1], (MSR_IA32_TSC_DEADLINE, 1000));
        let mut armed = vec![(MSR_IA32_TSC, 1000), (MSR_IA32_TSC_DEADLINE, 5000)];
        arm_cleared_deadline(&mut armed);
        assert_eq!(armed[1], (MSR_IA32_TSC_DEADLINE, 5000));
    }

    #[test]
    fn an_unknown_mp_state_is_refused() {
        let mut v = vcpu();
        v.mp_state = 42;
        assert!(v.check(&[0x10, 0x174]).is_err());
    }

    #[test]
    fn an_irqchip_stored_under_another_chip_is_refused() {
        let chip = |id| Blob(kvm_irqchip { chip_id: id, ..Default::default() });
        let good = VmState {
            pic_master: chip(KVM_IRQCHIP_PIC_MASTER),
            pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE),
            ioapic: chip(KVM_IRQCHIP_IOAPIC),
            pit: Blob::default(),
            clock: Blob::default(),
        };
        assert!(good.check().is_ok());
        let swapped = VmState { ioapic: chip(KVM_IRQCHIP_PIC_MASTER), ..good };
        assert!(swapped.check().is_err());
    }
}
