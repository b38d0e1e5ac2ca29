//! Boot CPU state: segments and control registers for the PVH entry (32-bit protected mode,
//! paging off) or the bzImage 64-bit entry (long mode, identity-mapped first GiB), general
//! registers, FPU, boot MSRs and the local APIC's LINT pins.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use super::{BootEntry, BOOT_STACK_ADDR, GDT_ADDR, PAGE_TABLES_ADDR, PVH_START_INFO_ADDR, ZERO_PAGE_ADDR};
use crate::arch::x86_64::gdt::{flat, gdt_entry, segment, KERNEL_CODE32, KERNEL_CODE64, KERNEL_DATA, TSS_BUSY};
use crate::arch::x86_64::paging::{PageTables, GIB, PAGE, PRESENT, WRITABLE};
use crate::arch::x86_64::regs::*;
use crate::vstate::{GuestMemoryMmap, KvmVcpu, MemoryError, Vcpu, VcpuError};

/// Errors from setting up vCPU state.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("cannot write {0} into guest memory")]
    WriteGuest(&'static str, #[source] vm_memory::GuestMemoryError),
    #[error("cannot write the boot page tables")]
    PageTables(#[from] MemoryError),
    #[error("KVM_GET_LAPIC/KVM_SET_LAPIC failed on vCPU {0}")]
    Lapic(u8, #[source] kvm_ioctls::Error),
}

/// The GDT for an entry mode: null, code, data, TSS.
pub fn gdt(entry: &BootEntry) -> [u64; 4] {
    let code = match entry {
        BootEntry::Pvh { .. } => KERNEL_CODE32,
        BootEntry::BzImage { .. } => KERNEL_CODE64,
    };
    [0, flat(code), flat(KERNEL_DATA), gdt_entry(TSS_BUSY, 0, 0x67)]
}

/// Write the GDT (and for bzImage the identity page tables) and return the boot sregs.
pub fn boot_sregs(mem: &GuestMemoryMmap, entry: &BootEntry, mut sregs: kvm_sregs) -> Result<kvm_sregs, CpuError> {
    let table = gdt(entry);
    for (i, e) in table.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_ADDR + 8 * i as u64)).map_err(|e| CpuError::WriteGuest("the GDT", e))?;
    }
    let code = segment(table[1], 1);
    let data = segment(table[2], 2);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(table[3], 3);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (table.len() * 8 - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    match entry {
        BootEntry::Pvh { .. } => {
            sregs.cr0 = CR0_PE;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        BootEntry::BzImage { .. } => {
            write_identity_page_tables(mem)?;
            sregs.cr3 = PAGE_TABLES_ADDR;
            sregs.cr4 |= CR4_PAE;
            sregs.cr0 |= CR0_PE | CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
    }
    Ok(sregs)
}

/// The first GiB mapped 1:1 with 2 MiB pages (PML4, PDPT, PD from [`PAGE_TABLES_ADDR`]).
fn write_identity_page_tables(mem: &GuestMemoryMmap) -> Result<(), CpuError> {
    let pml4 = PAGE_TABLES_ADDR;
    let tables = PageTables { pml4, pdpt: pml4 + PAGE, pd_base: pml4 + 2 * PAGE };
    tables.write_roots(mem, GIB, PRESENT | WRITABLE)?;
    tables.map_huge_range(mem, 0..GIB, PRESENT | WRITABLE, |_| false)?;
    Ok(())
}

/// General registers at the kernel entry.
pub fn boot_regs(entry: &BootEntry) -> kvm_regs {
    let mut r = kvm_regs { rflags: RFLAGS_RESERVED, ..Default::default() };
    match *entry {
        BootEntry::Pvh { entry } => {
            r.rip = entry;
            r.rbx = PVH_START_INFO_ADDR;
        }
        BootEntry::BzImage { entry } => {
            r.rip = entry;
            r.rsp = BOOT_STACK_ADDR;
            r.rbp = BOOT_STACK_ADDR;
            r.rsi = ZERO_PAGE_ADDR;
        }
    }
    r
}

/// x87 and SSE control words at reset values.
pub fn boot_fpu() -> kvm_fpu {
    reset_fpu()
}

/// MSRs a booting kernel expects in a defined state (syscall entry points cleared, fast
/// strings on, MTRRs enabled with write-back default).
pub fn boot_msrs() -> Vec<(u32, u64)> {
    vec![
        (MSR_SYSENTER_CS, 0),
        (MSR_SYSENTER_ESP, 0),
        (MSR_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_LSTAR, 0),
        (MSR_CSTAR, 0),
        (MSR_SFMASK, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_TSC, 0),
        (MSR_MISC_ENABLE, 1),               // fast strings
        (MSR_MTRR_DEF_TYPE, (1 << 11) | 6), // enabled, write-back
    ]
}

/// Set the boot MSRs one by one, returning those KVM refused (kvm_pvm rejects some); the
/// kernel copes with them at their reset values.
pub fn set_boot_msrs(vcpu: &KvmVcpu) -> Vec<u32> {
    boot_msrs()
        .into_iter()
        .filter(|&(index, value)| vcpu.set_msrs(&[(index, value)]).is_err())
        .map(|(index, _)| index)
        .collect()
}

const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

fn set_delivery_mode(regs: &mut [std::os::raw::c_char], offset: usize, mode: u32) {
    let mut b = [0u8; 4];
    for (i, x) in b.iter_mut().enumerate() {
        *x = regs[offset + i] as u8;
    }
    let v = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
    for (i, x) in v.to_le_bytes().iter().enumerate() {
        regs[offset + i] = *x as std::os::raw::c_char;
    }
}

/// LINT0 = ExtINT (the 8259 through the local APIC), LINT1 = NMI, as the MP table says.
pub fn set_lint(vcpu: &mut KvmVcpu) -> Result<(), CpuError> {
    let id = vcpu.id();
    let mut lapic = vcpu.fd().get_lapic().map_err(|e| CpuError::Lapic(id, e))?;
    set_delivery_mode(&mut lapic.regs, APIC_LVT_LINT0, APIC_MODE_EXTINT);
    set_delivery_mode(&mut lapic.regs, APIC_LVT_LINT1, APIC_MODE_NMI);
    vcpu.fd().set_lapic(&lapic).map_err(|e| CpuError::Lapic(id, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::{create_guest_memory, MemRange};

    #[test]
    fn long_mode_code_segment_has_l_set_and_db_clear() {
        let s = segment(gdt(&BootEntry::BzImage { entry: 0 })[1], 1);
        assert_eq!((s.l, s.db), (1, 0));
    }

    #[test]
    fn pvh_sregs_enter_protected_mode_without_paging() {
        let mem = create_guest_memory(&[MemRange { start: 0, size: 0x10_0000 }]).unwrap();
        let s = boot_sregs(&mem, &BootEntry::Pvh { entry: 0x100_0000 }, kvm_sregs::default()).unwrap();
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE);
        assert_eq!(s.efer, 0);
        assert_eq!(s.tr.type_, 0xb);
        let regs = boot_regs(&BootEntry::Pvh { entry: 0x100_0000 });
        assert_eq!((regs.rip, regs.rbx), (0x100_0000, PVH_START_INFO_ADDR));
    }

    #[test]
    fn bzimage_sregs_enter_long_mode_on_identity_tables() {
        let mem = create_guest_memory(&[MemRange { start: 0, size: 0x10_0000 }]).unwrap();
        let s = boot_sregs(&mem, &BootEntry::BzImage { entry: 0x10_0200 }, kvm_sregs::default()).unwrap();
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cr3, PAGE_TABLES_ADDR);
        let pde: u64 = mem.read_obj(GuestAddress(PAGE_TABLES_ADDR + 0x2000 + 8)).unwrap();
        assert_eq!(pde, (1 << 21) | 0x83);
    }

    #[test]
    fn lint_delivery_mode_replaces_only_bits_8_to_10() {
        let mut regs = [0 as std::os::raw::c_char; 0x400];
        regs[APIC_LVT_LINT0] = 0x10u8 as std::os::raw::c_char;
        regs[APIC_LVT_LINT0 + 1] = 0x07;
        set_delivery_mode(&mut regs, APIC_LVT_LINT0, APIC_MODE_NMI);
        assert_eq!(regs[APIC_LVT_LINT0 + 1], 0x04);
        assert_eq!(regs[APIC_LVT_LINT0], 0x10);
    }
}
