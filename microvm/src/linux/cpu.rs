//! Boot CPU state: segments and control registers for the PVH entry (32-bit protected mode,
//! paging off) or the bzImage 64-bit entry (long mode, identity-mapped first GiB), general
//! registers, FPU, boot MSRs and the local APIC's LINT pins.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use super::{BootEntry, BOOT_STACK_ADDR, GDT_ADDR, PAGE_TABLES_ADDR, PVH_START_INFO_ADDR, ZERO_PAGE_ADDR};
use crate::vstate::{GuestMemoryMmap, KvmVcpu, Vcpu, VcpuError};

/// Errors from setting up vCPU state.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("cannot write {0} into guest memory")]
    WriteGuest(&'static str, #[source] vm_memory::GuestMemoryError),
    #[error("KVM_GET_LAPIC/KVM_SET_LAPIC failed on vCPU {0}")]
    Lapic(u8, #[source] kvm_ioctls::Error),
}

const CR0_PE: u64 = 1;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// A GDT descriptor from access/flags (`0xF0FF` mask: G, D/B, L, AVL and the access byte).
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (u64::from(flags), u64::from(base), u64::from(limit));
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// The KVM segment (hidden part included) a selector into `entry` loads.
pub fn segment(entry: u64, index: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry >> 32) & 0x000f_0000) | (entry & 0xffff);
    let g = ((entry >> 55) & 1) as u8;
    let limit = if g == 1 { (raw_limit << 12) | 0xfff } else { raw_limit };
    kvm_segment {
        base,
        limit: limit as u32,
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

/// The GDT for an entry mode: null, code, data, TSS.
pub fn gdt(entry: &BootEntry) -> [u64; 4] {
    let code = match entry {
        BootEntry::Pvh { .. } => 0xc09b,     // 32-bit code
        BootEntry::BzImage { .. } => 0xa09b, // 64-bit code
    };
    [0, gdt_entry(code, 0, 0xf_ffff), gdt_entry(0xc093, 0, 0xf_ffff), gdt_entry(0x008b, 0, 0x67)]
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

/// PML4 → PDPT → PD with 512 × 2 MiB pages: the first GiB mapped 1:1.
fn write_identity_page_tables(mem: &GuestMemoryMmap) -> Result<(), CpuError> {
    let pml4 = PAGE_TABLES_ADDR;
    let pdpt = pml4 + 0x1000;
    let pd = pdpt + 0x1000;
    let w = |addr: u64, v: u64| {
        mem.write_obj(v, GuestAddress(addr)).map_err(|e| CpuError::WriteGuest("the boot page tables", e))
    };
    w(pml4, pdpt | 0x3)?;
    w(pdpt, pd | 0x3)?;
    for i in 0..512u64 {
        w(pd + i * 8, (i << 21) | 0x83)?;
    }
    Ok(())
}

/// General registers at the kernel entry.
pub fn boot_regs(entry: &BootEntry) -> kvm_regs {
    let mut r = kvm_regs { rflags: 0x2, ..Default::default() };
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
    kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() }
}

/// MSRs a booting kernel expects in a defined state (syscall entry points cleared, fast
/// strings on, MTRRs enabled with write-back default).
pub fn boot_msrs() -> Vec<(u32, u64)> {
    vec![
        (0x174, 0),             // IA32_SYSENTER_CS
        (0x175, 0),             // IA32_SYSENTER_ESP
        (0x176, 0),             // IA32_SYSENTER_EIP
        (0xc000_0081, 0),       // STAR
        (0xc000_0082, 0),       // LSTAR
        (0xc000_0083, 0),       // CSTAR
        (0xc000_0084, 0),       // SYSCALL_MASK
        (0xc000_0102, 0),       // KERNEL_GS_BASE
        (0x10, 0),              // TSC
        (0x1a0, 1),             // MISC_ENABLE: fast strings
        (0x2ff, (1 << 11) | 6), // MTRRdefType: enabled, write-back
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
    fn flat_32_bit_code_segment_decodes_back() {
        let s = segment(gdt_entry(0xc09b, 0, 0xf_ffff), 1);
        assert_eq!((s.base, s.limit, s.selector), (0, 0xffff_ffff, 8));
        assert_eq!((s.type_, s.s, s.present, s.db, s.l, s.g), (0xb, 1, 1, 1, 0, 1));
    }

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
