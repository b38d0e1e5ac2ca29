//! The bare guest's address space: where the system structures, the program, the heap and the
//! stack live, and the 4-level page tables that map them (guest virtual = guest physical).
//!
//! ```text
//! 0x0000_0000  not present (null-pointer accesses fault)
//! 0x0000_1000  PML4, PDPT, PT for the first 2 MiB (4 KiB pages)
//! 0x0000_4000  GDT, IDT, TSS + I/O bitmap (3 pages), the CPL0 stubs page, a 24 KiB
//!              exception stack
//! 0x0001_0000  page directories, one per GiB of guest memory
//! 0x0020_0000  the ELF's PT_LOAD segments (at their link addresses)
//! heap_start   mmap region (2 MiB aligned, up to the stack guard)
//! stack_guard  2 MiB not present
//! stack_bottom 8 MiB user stack, growing down from the top of guest memory
//! ```
//!
//! Above the first 2 MiB everything is mapped with 2 MiB pages, user-accessible and writable,
//! so the guest never takes a page fault for valid memory: the first-touch cost it sees is the
//! host's (nested/shadow paging filling in the lazily allocated host page), which is the cost
//! of hardware virtualisation the bare VM isolates.

use super::elf::ElfImage;
use crate::arch::x86_64::paging::{PageTables, GIB, PRESENT, USER, WRITABLE};
pub use crate::arch::x86_64::paging::{HUGE, PAGE};
use crate::vstate::memory::{GuestMemoryMmap, MemoryError};

pub const PML4: u64 = 0x1000;
pub const PDPT: u64 = 0x2000;
pub const PT0: u64 = 0x3000;
pub const GDT: u64 = 0x4000;
pub const IDT: u64 = 0x5000;
pub const TSS: u64 = 0x6000;
/// The page holding the syscall entry stub and the exception stubs (CPL0 code).
pub const STUBS: u64 = 0x9000;
/// Top of the CPL0 stack exceptions are delivered on (TSS.RSP0).
pub const KSTACK_TOP: u64 = 0x1_0000;
pub const KSTACK_BOTTOM: u64 = 0xa000;
pub const PD_BASE: u64 = 0x1_0000;
/// The lowest address an ELF segment may use.
pub const USER_MIN: u64 = HUGE;
/// Size of the user stack mapping.
pub const STACK_SIZE: u64 = 8 << 20;
/// Most guest memory supported (page directories must fit below `USER_MIN`).
pub const MAX_MEM: u64 = 64 * GIB;

/// Where the bare guest's page tables live.
const TABLES: PageTables = PageTables { pml4: PML4, pdpt: PDPT, pd_base: PD_BASE };

/// Errors from planning or writing the address space.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("guest memory of {0} MiB is not a multiple of 2 MiB between 32 MiB and 64 GiB")]
    MemSize(u64),
    #[error("ELF segment range {lo:#x}..{hi:#x} must lie between {min:#x} and {max:#x}")]
    ElfPlacement { lo: u64, hi: u64, min: u64, max: u64 },
    #[error("no room for a heap: program ends at {elf_end:#x}, stack guard starts at {guard:#x}")]
    NoHeap { elf_end: u64, guard: u64 },
    #[error("writing page tables")]
    Write(#[from] MemoryError),
}

/// The address plan for one guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub mem_size: u64,
    pub heap_start: u64,
    pub heap_end: u64,
    pub stack_guard: u64,
    pub stack_bottom: u64,
    pub stack_top: u64,
}

impl Layout {
    /// Plan `mem_size` bytes of guest memory around the program `elf`.
    pub fn plan(mem_size: u64, elf: &ElfImage) -> Result<Layout, LayoutError> {
        if !mem_size.is_multiple_of(HUGE) || !(32 << 20..=MAX_MEM).contains(&mem_size) {
            return Err(LayoutError::MemSize(mem_size >> 20));
        }
        let stack_top = mem_size;
        let stack_bottom = stack_top - STACK_SIZE;
        let stack_guard = stack_bottom - HUGE;
        let (lo, hi) = elf.span();
        if lo < USER_MIN || hi > stack_guard {
            return Err(LayoutError::ElfPlacement { lo, hi, min: USER_MIN, max: stack_guard });
        }
        let heap_start = hi.next_multiple_of(HUGE);
        if heap_start >= stack_guard {
            return Err(LayoutError::NoHeap { elf_end: hi, guard: stack_guard });
        }
        Ok(Layout { mem_size, heap_start, heap_end: stack_guard, stack_guard, stack_bottom, stack_top })
    }

    /// The layout a snapshot names by its memory size and heap start, checked against the
    /// rules [`Layout::plan`] follows (the rest is derived, so it cannot disagree).
    pub fn restore(mem_size: u64, heap_start: u64) -> Result<Layout, LayoutError> {
        if !mem_size.is_multiple_of(HUGE) || !(32 << 20..=MAX_MEM).contains(&mem_size) {
            return Err(LayoutError::MemSize(mem_size >> 20));
        }
        let stack_top = mem_size;
        let stack_bottom = stack_top - STACK_SIZE;
        let stack_guard = stack_bottom - HUGE;
        // The program occupies at least one huge page from USER_MIN, so the heap starts above it.
        if !heap_start.is_multiple_of(HUGE) || heap_start <= USER_MIN || heap_start >= stack_guard {
            return Err(LayoutError::NoHeap { elf_end: heap_start, guard: stack_guard });
        }
        Ok(Layout { mem_size, heap_start, heap_end: stack_guard, stack_guard, stack_bottom, stack_top })
    }

    /// Whether guest virtual range `addr..addr+len` is mapped and backed (user-accessible).
    pub fn is_user_range(&self, addr: u64, len: u64) -> bool {
        let Some(end) = addr.checked_add(len) else { return false };
        let in_range = |lo: u64, hi: u64| addr >= lo && end <= hi;
        in_range(USER_MIN, self.stack_guard) || in_range(self.stack_bottom, self.stack_top)
    }
}

/// Write the page tables for `layout` into guest memory and return the CR3 value.
pub fn write_page_tables(mem: &GuestMemoryMmap, layout: &Layout) -> Result<u64, LayoutError> {
    let flags = PRESENT | WRITABLE | USER;
    let cr3 = TABLES.write_roots(mem, layout.mem_size, flags)?;
    // First 2 MiB: 4 KiB pages, page 0 left out. The system pages are user-accessible because
    // kvm_pvm did not run CPL0 code from a supervisor-only page (probe); SMEP stays off, so
    // hardware KVM runs it as well.
    TABLES.map_first_small(mem, PT0, 1..512, flags)?;
    TABLES.map_huge_range(mem, HUGE..layout.mem_size, flags, |addr| addr == layout.stack_guard)?;
    Ok(cr3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::paging::PAGE_SIZE as PS;
    use crate::bare::elf::Segment;
    use crate::vstate::memory::{create_guest_memory, read_u64, MemRange};

    fn image(lo: u64, hi: u64) -> ElfImage {
        let seg = Segment { vaddr: lo, offset: 0, filesz: 0, memsz: hi - lo, flags: 5 };
        ElfImage { entry: lo, segments: vec![seg], phdr_vaddr: None, phnum: 1 }
    }

    #[test]
    fn a_restored_layout_equals_the_planned_one_and_bad_starts_are_refused() {
        let planned = Layout::plan(64 << 20, &image(0x20_0000, 0x30_0000)).unwrap();
        assert_eq!(Layout::restore(64 << 20, planned.heap_start).unwrap(), planned);
        assert!(Layout::restore(64 << 20, 0).is_err());
        assert!(Layout::restore(64 << 20, planned.heap_start + 1).is_err());
        assert!(Layout::restore(64 << 20, 64 << 20).is_err());
        assert!(Layout::restore((64 << 20) + 4096, planned.heap_start).is_err());
        assert!(Layout::restore(!(HUGE - 1), planned.heap_start).is_err());
    }

    /// Walk the guest page tables like the MMU: returns the physical address or None.
    fn translate(mem: &GuestMemoryMmap, va: u64) -> Option<u64> {
        const P: u64 = PRESENT;
        let pml4e = read_u64(mem, PML4 + ((va >> 39) & 511) * 8).unwrap();
        if pml4e & P == 0 {
            return None;
        }
        let pdpte = read_u64(mem, (pml4e & !0xfff) + ((va >> 30) & 511) * 8).unwrap();
        if pdpte & P == 0 {
            return None;
        }
        let pde = read_u64(mem, (pdpte & !0xfff) + ((va >> 21) & 511) * 8).unwrap();
        if pde & P == 0 {
            return None;
        }
        if pde & PS != 0 {
            return Some((pde & !(HUGE - 1) & !PS) + (va & (HUGE - 1)));
        }
        let pte = read_u64(mem, (pde & !0xfff) + ((va >> 12) & 511) * 8).unwrap();
        (pte & P != 0).then(|| (pte & !0xfff) + (va & 0xfff))
    }

    #[test]
    fn page_tables_identity_map_memory_except_null_page_and_stack_guard() {
        let size = 1536 << 20; // crosses a GiB boundary
        let layout = Layout::plan(size, &image(0x20_0000, 0x21_7000)).unwrap();
        let mem = create_guest_memory(&[MemRange { start: 0, size: size as usize }]).unwrap();
        assert_eq!(write_page_tables(&mem, &layout).unwrap(), PML4);
        assert_eq!(translate(&mem, 0x10), None);
        assert_eq!(translate(&mem, STUBS + 5), Some(STUBS + 5));
        assert_eq!(translate(&mem, 0x20_3b50), Some(0x20_3b50));
        assert_eq!(translate(&mem, GIB + 0x1234), Some(GIB + 0x1234));
        assert_eq!(translate(&mem, layout.stack_guard + 8), None);
        assert_eq!(translate(&mem, layout.stack_top - 8), Some(layout.stack_top - 8));
        assert_eq!(translate(&mem, size), None);
    }

    #[test]
    fn plan_puts_the_heap_between_program_and_stack_guard() {
        let l = Layout::plan(64 << 20, &image(0x20_0000, 0x21_7000)).unwrap();
        assert_eq!(l.heap_start, 0x40_0000);
        assert_eq!(l.heap_end, (64 << 20) - STACK_SIZE - HUGE);
        assert!(l.is_user_range(l.heap_start, 4096));
        assert!(!l.is_user_range(l.stack_guard, 8));
        assert!(!l.is_user_range(0, 8));
    }

    #[test]
    fn plan_rejects_a_program_linked_below_two_mib() {
        let e = Layout::plan(64 << 20, &image(0x1000, 0x2000)).unwrap_err();
        assert!(matches!(e, LayoutError::ElfPlacement { lo: 0x1000, .. }));
    }

    #[test]
    fn plan_rejects_odd_memory_sizes() {
        assert!(matches!(Layout::plan(33 << 20, &image(HUGE, HUGE + 1)), Err(LayoutError::MemSize(33))));
        assert!(matches!(Layout::plan(16 << 20, &image(HUGE, HUGE + 1)), Err(LayoutError::MemSize(16))));
    }
}
