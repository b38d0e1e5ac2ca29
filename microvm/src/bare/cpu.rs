//! The bare guest's CPU state: GDT, TSS and IDT in guest memory, the CPL0 stubs (syscall entry
//! and exception entries, each a single `out` that exits to the VMM), the syscall MSRs, and the
//! registers that start the vCPU in 64-bit mode at CPL3 on the ELF entry point.
//!
//! The stubs are `out imm8, al`, which clobbers no register, so the VMM sees the caller's
//! registers untouched. kvm_pvm's CPL0 emulator checks port access against the TSS I/O bitmap
//! even at CPL0 (hardware does not), so the TSS carries an all-ports-allowed bitmap. The VMM returns to user mode itself (RIP=RCX,
//! RFLAGS=R11, user CS/SS) with KVM_SET_REGS/KVM_SET_SREGS instead of `sysretq`, which shut the
//! guest down under `kvm_pvm`; the same path works on hardware KVM (SMEP is left off so CPL0
//! may execute the user-accessible stubs page).

use kvm_bindings::{kvm_regs, kvm_sregs};

use super::layout::{GDT, IDT, KSTACK_TOP, STUBS, TSS};
use crate::arch::x86_64::gdt::{flat, segment, tss64, KERNEL_CODE64, KERNEL_DATA, USER_CODE64, USER_DATA};
use crate::arch::x86_64::regs::*;
use crate::vstate::memory::{write_bytes, write_u64, GuestMemoryMmap, MemoryError};
use crate::vstate::{Vcpu, VcpuError};

/// Port the syscall stub writes to.
pub const SYSCALL_PORT: u16 = 0xe0;
/// Exception `v` (0..32) exits through port `EXCEPTION_PORT_BASE + v`.
pub const EXCEPTION_PORT_BASE: u16 = 0xc0;
pub const EXCEPTION_VECTORS: u16 = 32;
const EXCEPTION_STUBS: u64 = STUBS + 0x100;

pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
pub const USER_DS: u16 = 0x18 | 3;
pub const USER_CS: u16 = 0x20 | 3;
pub const TSS_SEL: u16 = 0x28;

/// Vectors for which the CPU pushes an error code.
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Architectural name of an exception vector.
pub fn vector_name(vector: u8) -> &'static str {
    match vector {
        0 => "#DE divide error",
        1 => "#DB debug",
        2 => "NMI",
        3 => "#BP breakpoint",
        4 => "#OF overflow",
        5 => "#BR bound range",
        6 => "#UD invalid opcode",
        7 => "#NM device not available",
        8 => "#DF double fault",
        10 => "#TS invalid TSS",
        11 => "#NP segment not present",
        12 => "#SS stack fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        16 => "#MF x87 floating point",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        19 => "#XM SIMD floating point",
        20 => "#VE virtualization",
        21 => "#CP control protection",
        _ => "reserved vector",
    }
}

/// The TSS: 104 bytes, then an I/O permission bitmap for every port and its terminating 0xff
/// byte. CPL0 code needs no bitmap on hardware, but kvm_pvm's CPL0 emulator consults it and
/// raised #GP on `out` without one; only the stub ports are opened, so other port I/O from the
/// guest program still faults as it would in a process. (With IOPL 0 the same bitmap also lets
/// CPL3 code write the stub ports directly; that only lets the program fake a system call or
/// its own crash, nothing outside the VM.)
const TSS_IOMAP: u64 = 104;
pub const TSS_LIMIT: u64 = TSS_IOMAP + 0x2000;

/// The TSS bytes: RSP0 for exception delivery and an I/O bitmap that opens only the stub ports.
pub fn tss_image() -> Vec<u8> {
    let mut tss = vec![0xffu8; TSS_LIMIT as usize + 1];
    tss[..TSS_IOMAP as usize].fill(0);
    tss[4..12].copy_from_slice(&KSTACK_TOP.to_le_bytes()); // RSP0
    tss[102..104].copy_from_slice(&(TSS_IOMAP as u16).to_le_bytes());
    for port in EXCEPTION_PORT_BASE..EXCEPTION_PORT_BASE + EXCEPTION_VECTORS {
        tss[TSS_IOMAP as usize + usize::from(port / 8)] &= !(1 << (port % 8));
    }
    tss[TSS_IOMAP as usize + usize::from(SYSCALL_PORT / 8)] &= !(1 << (SYSCALL_PORT % 8));
    tss
}

/// The GDT: null, kernel code, kernel data, user data, user code, TSS (two slots).
pub fn gdt_entries() -> [u64; 7] {
    let [tss_low, tss_high] = tss64(TSS, TSS_LIMIT as u32);
    [0, flat(KERNEL_CODE64), flat(KERNEL_DATA), flat(USER_DATA), flat(USER_CODE64), tss_low, tss_high]
}

/// A 16-byte interrupt gate to `handler` on the kernel code segment.
fn idt_gate(handler: u64) -> [u8; 16] {
    let mut g = [0u8; 16];
    g[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
    g[2..4].copy_from_slice(&KERNEL_CS.to_le_bytes());
    g[5] = 0x8e; // present, DPL0, 64-bit interrupt gate
    g[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
    g[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
    g
}

const EXCEPTION_STUB_SIZE: u64 = 8;

/// `out imm8, al; ud2`: one instruction that exits to the VMM with the port naming the event.
/// It reads AL and writes nothing, so every register reaches the VMM with the guest's value.
/// The `ud2` only runs if the VMM resumed a stub by mistake, and then is reported as a fault.
fn out_stub(port: u16) -> [u8; 4] {
    [0xe6, port as u8, 0x0f, 0x0b]
}

/// The CPL0 code: the syscall entry and one entry per exception vector.
pub fn stubs_page() -> Vec<u8> {
    let mut page = vec![0xccu8; 0x1000]; // int3 filler
    page[..4].copy_from_slice(&out_stub(SYSCALL_PORT));
    for v in 0..EXCEPTION_VECTORS {
        let at = (EXCEPTION_STUBS - STUBS + u64::from(v) * EXCEPTION_STUB_SIZE) as usize;
        page[at..at + 4].copy_from_slice(&out_stub(EXCEPTION_PORT_BASE + v));
    }
    page
}

/// Write GDT, IDT, TSS and the stubs page into guest memory.
pub fn write_system_tables(mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    for (i, e) in gdt_entries().iter().enumerate() {
        write_u64(mem, GDT + i as u64 * 8, *e)?;
    }
    for v in 0..u64::from(EXCEPTION_VECTORS) {
        write_bytes(mem, IDT + v * 16, &idt_gate(EXCEPTION_STUBS + v * EXCEPTION_STUB_SIZE))?;
    }
    write_bytes(mem, TSS, &tss_image())?;
    write_bytes(mem, STUBS, &stubs_page())
}

/// Special registers for 64-bit CPL3 execution with paging rooted at `cr3`, starting from
/// the vCPU's current state `base`.
pub fn user_sregs(mut base: kvm_sregs, cr3: u64) -> kvm_sregs {
    let table = gdt_entries();
    base.cs = segment(table[usize::from(USER_CS >> 3)], USER_CS >> 3);
    let data = segment(table[usize::from(USER_DS >> 3)], USER_DS >> 3);
    base.ds = data;
    base.es = data;
    base.fs = data;
    base.gs = data;
    base.ss = data;
    base.tr = segment(table[usize::from(TSS_SEL >> 3)], TSS_SEL >> 3);
    base.gdt.base = GDT;
    base.gdt.limit = (gdt_entries().len() * 8 - 1) as u16;
    base.idt.base = IDT;
    base.idt.limit = EXCEPTION_VECTORS * 16 - 1;
    base.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    base.cr3 = cr3;
    base.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    base.efer = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
    base
}

/// The syscall MSRs: `syscall` enters the stub at CPL0 with IF, TF, DF, AC and NT cleared.
pub fn syscall_msrs() -> Vec<(u32, u64)> {
    let star = (u64::from(KERNEL_DS) << 48) | (u64::from(KERNEL_CS) << 32);
    vec![
        (MSR_STAR, star),
        (MSR_LSTAR, STUBS),
        (MSR_CSTAR, STUBS),
        (MSR_SFMASK, 0x4_7700),
        (MSR_FS_BASE, 0),
        (MSR_GS_BASE, 0),
        (MSR_KERNEL_GS_BASE, 0),
    ]
}

/// Put `vcpu` at `entry` with stack pointer `sp`, in 64-bit CPL3.
pub fn setup_vcpu<V: Vcpu + ?Sized>(vcpu: &V, cr3: u64, entry: u64, sp: u64) -> Result<kvm_sregs, VcpuError> {
    vcpu.set_msrs(&syscall_msrs())?;
    let sregs = user_sregs(vcpu.sregs()?, cr3);
    vcpu.set_sregs(&sregs)?;
    vcpu.set_fpu(&reset_fpu())?;
    let regs = kvm_regs { rip: entry, rsp: sp, rflags: RFLAGS_RESERVED | RFLAGS_IF, ..Default::default() };
    vcpu.set_regs(&regs)?;
    Ok(sregs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_has_the_standard_flat_64bit_descriptors() {
        let g = gdt_entries();
        assert_eq!(g[1], 0x00af_9b00_0000_ffff);
        assert_eq!(g[2], 0x00cf_9300_0000_ffff);
        assert_eq!(g[3], 0x00cf_f300_0000_ffff);
        assert_eq!(g[4], 0x00af_fb00_0000_ffff);
        assert_eq!(g[5], 0x0000_8b00_6000_2068);
    }

    #[test]
    fn user_segments_load_the_selectors_star_implies() {
        let s = user_sregs(kvm_sregs::default(), 0x1000);
        assert_eq!((s.cs.selector, s.ss.selector, s.tr.selector), (USER_CS, USER_DS, TSS_SEL));
        assert_eq!((s.cs.l, s.cs.dpl, s.tr.type_), (1, 3, 0xb));
    }

    #[test]
    fn star_matches_the_selectors() {
        let star = syscall_msrs()[0].1;
        assert_eq!((star >> 32) & 0xffff, u64::from(KERNEL_CS));
        // sysret's user SS is STAR[63:48] + 8, CS + 16 (kept consistent although unused).
        assert_eq!(((star >> 48) + 8) | 3, u64::from(USER_DS));
        assert_eq!(((star >> 48) + 16) | 3, u64::from(USER_CS));
    }

    #[test]
    fn stubs_exit_on_their_own_port_and_idt_gates_point_at_them() {
        let page = stubs_page();
        assert_eq!(&page[..2], &[0xe6, 0xe0]);
        assert_eq!(&page[0x100 + 14 * 8..0x100 + 14 * 8 + 2], &[0xe6, 0xc0 + 14]);
        let g = idt_gate(EXCEPTION_STUBS + 14 * EXCEPTION_STUB_SIZE);
        let off = u64::from(u16::from_le_bytes([g[0], g[1]])) | (u64::from(u16::from_le_bytes([g[6], g[7]])) << 16);
        assert_eq!(off, 0x9100 + 14 * 8);
        assert_eq!(g[5], 0x8e);
    }

    #[test]
    fn tss_io_bitmap_opens_only_the_stub_ports() {
        let tss = tss_image();
        let allowed = |port: u16| tss[TSS_IOMAP as usize + usize::from(port / 8)] & (1 << (port % 8)) == 0;
        assert!(allowed(SYSCALL_PORT) && allowed(EXCEPTION_PORT_BASE) && allowed(EXCEPTION_PORT_BASE + 31));
        assert!(!allowed(0x3f8) && !allowed(0x80) && !allowed(EXCEPTION_PORT_BASE - 1));
        assert_eq!(tss.len() as u64, TSS_LIMIT + 1);
        assert_eq!(tss[TSS_LIMIT as usize], 0xff);
        assert_eq!(u64::from_le_bytes(tss[4..12].try_into().unwrap()), KSTACK_TOP);
    }

    #[test]
    fn error_code_vectors_are_the_architectural_ones() {
        assert!(has_error_code(14) && has_error_code(13) && has_error_code(8));
        assert!(!has_error_code(6) && !has_error_code(0) && !has_error_code(3));
    }
}
