//! 4-level identity-mapping page tables (guest virtual = guest physical): one PML4 entry, one
//! PDPT entry per GiB, 2 MiB pages, and optionally a 4 KiB page table for the first 2 MiB.
//! Each guest picks where the tables live and what to leave unmapped.

use std::ops::Range;

use crate::vstate::memory::{write_u64, GuestMemoryMmap, MemoryError};

pub const PAGE: u64 = 0x1000;
pub const HUGE: u64 = 0x20_0000;
pub const GIB: u64 = 1 << 30;

/// Page-table entry bits.
pub const PRESENT: u64 = 1;
pub const WRITABLE: u64 = 1 << 1;
pub const USER: u64 = 1 << 2;
pub const PAGE_SIZE: u64 = 1 << 7;

/// Where one guest's tables live: a PML4 page, a PDPT page, and consecutive page directories
/// (one page per GiB) from `pd_base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageTables {
    pub pml4: u64,
    pub pdpt: u64,
    pub pd_base: u64,
}

impl PageTables {
    /// Link PML4 → PDPT → one directory per GiB of `size` bytes, with entry bits `flags`.
    /// Returns the CR3 value.
    pub fn write_roots(&self, mem: &GuestMemoryMmap, size: u64, flags: u64) -> Result<u64, MemoryError> {
        write_u64(mem, self.pml4, self.pdpt | flags)?;
        for g in 0..size.div_ceil(GIB) {
            write_u64(mem, self.pdpt + g * 8, (self.pd_base + g * PAGE) | flags)?;
        }
        Ok(self.pml4)
    }

    /// Map the 2 MiB page at `addr` (2 MiB aligned, below 512 GiB) to itself.
    pub fn map_huge(&self, mem: &GuestMemoryMmap, addr: u64, flags: u64) -> Result<(), MemoryError> {
        write_u64(mem, self.pde(addr), addr | flags | PAGE_SIZE)
    }

    /// Map every 2 MiB page of `range` to itself except those `skip` names.
    pub fn map_huge_range(
        &self,
        mem: &GuestMemoryMmap,
        range: Range<u64>,
        flags: u64,
        skip: impl Fn(u64) -> bool,
    ) -> Result<(), MemoryError> {
        let mut addr = range.start;
        while addr < range.end {
            if !skip(addr) {
                self.map_huge(mem, addr, flags)?;
            }
            addr += HUGE;
        }
        Ok(())
    }

    /// Map the first 2 MiB with 4 KiB pages from a page table at `pt`, pages `pages` only
    /// (e.g. `1..512` leaves the null page out).
    pub fn map_first_small(
        &self,
        mem: &GuestMemoryMmap,
        pt: u64,
        pages: Range<u64>,
        flags: u64,
    ) -> Result<(), MemoryError> {
        write_u64(mem, self.pd_base, pt | flags)?;
        for page in pages {
            write_u64(mem, pt + page * 8, (page * PAGE) | flags)?;
        }
        Ok(())
    }

    fn pde(&self, addr: u64) -> u64 {
        self.pd_base + (addr / GIB) * PAGE + ((addr % GIB) / HUGE) * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::{create_guest_memory, read_u64, MemRange};

    #[test]
    fn huge_mapping_lands_in_the_directory_of_its_gib() {
        let mem = create_guest_memory(&[MemRange { start: 0, size: 0x10_0000 }]).unwrap();
        let t = PageTables { pml4: 0x1000, pdpt: 0x2000, pd_base: 0x3000 };
        assert_eq!(t.write_roots(&mem, 2 * GIB, PRESENT | WRITABLE).unwrap(), 0x1000);
        t.map_huge(&mem, GIB + HUGE, PRESENT).unwrap();
        assert_eq!(read_u64(&mem, 0x2008).unwrap(), 0x4000 | PRESENT | WRITABLE);
        assert_eq!(read_u64(&mem, 0x4008).unwrap(), (GIB + HUGE) | PRESENT | PAGE_SIZE);
    }

    #[test]
    fn skipped_pages_stay_unmapped() {
        let mem = create_guest_memory(&[MemRange { start: 0, size: 0x10_0000 }]).unwrap();
        let t = PageTables { pml4: 0x1000, pdpt: 0x2000, pd_base: 0x3000 };
        t.map_huge_range(&mem, 0..4 * HUGE, PRESENT, |a| a == 2 * HUGE).unwrap();
        assert_ne!(read_u64(&mem, 0x3008).unwrap(), 0);
        assert_eq!(read_u64(&mem, 0x3010).unwrap(), 0);
    }
}
