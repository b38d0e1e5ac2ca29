//! Booting a Linux guest: loading the kernel (vmlinux through its PVH entry, or a bzImage
//! through the 64-bit Linux boot protocol), the initramfs and command line, and the tables a
//! kernel without ACPI needs (memory map, MP table); plus the guest CPU state (`cpu`)
//! and the initramfs builder.
//!
//! Guest-physical layout (RAM starts at 0 and must end below the MMIO hole at 0xd000_0000):
//! `0x500` GDT · `0x6000` PVH start info · `0x6800` module list · `0x7000` memory map or
//! zero page · `0x9000` page tables (bzImage) · `0x20000` command line · `0x9fc00` MP table ·
//! `0x100000`.. the kernel at its link address · the initramfs at the top of RAM.

pub mod cmdline;
pub mod cpu;
pub mod flatten;
pub mod initramfs;
pub mod kernel_cache;
pub mod mptable;
pub mod restore;
pub mod snapshot;
pub mod vcpus;

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::bootparam::boot_params;
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::devices::MMIO_BASE;
use crate::vstate::GuestMemoryMmap;

pub const GDT_ADDR: u64 = 0x500;
pub const PVH_START_INFO_ADDR: u64 = 0x6000;
pub const PVH_MODLIST_ADDR: u64 = 0x6800;
pub const MEMMAP_ADDR: u64 = 0x7000;
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
pub const PAGE_TABLES_ADDR: u64 = 0x9000;
pub const BOOT_STACK_ADDR: u64 = 0x8ff0;
pub const CMDLINE_ADDR: u64 = 0x20000;
pub const CMDLINE_MAX: usize = 4096;
pub const EBDA_START: u64 = 0x9fc00;
pub const HIMEM_START: u64 = 0x10_0000;
/// Largest guest RAM this layout supports (everything below the MMIO hole).
pub const MAX_MEM: u64 = MMIO_BASE;

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;

/// Errors from loading and describing the guest.
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    #[error("cannot open kernel image {path}")]
    OpenKernel {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load kernel image {path}")]
    LoadKernel {
        path: PathBuf,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error("kernel image {0} has no PVH entry point (build it with CONFIG_PVH=y)")]
    NoPvhEntry(PathBuf),
    #[error("cannot read initramfs {path}")]
    ReadInitrd {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the initramfs ({size} bytes) does not fit in guest memory above the kernel")]
    InitrdTooLarge { size: u64 },
    #[error("guest memory of {0} MiB is outside 16..={max} MiB", max = MAX_MEM >> 20)]
    MemorySize(u64),
    #[error("the kernel command line is {0} bytes; at most {CMDLINE_MAX} fit")]
    CmdlineTooLong(usize),
    #[error("cannot write {what} into guest memory")]
    WriteGuest {
        what: &'static str,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("cannot write the MP table")]
    MpTable(#[from] mptable::MpTableError),
    #[error("cannot build the initramfs")]
    Initramfs(#[from] initramfs::InitramfsError),
    #[error(transparent)]
    Cpu(#[from] cpu::CpuError),
}

/// How the vCPU enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootEntry {
    /// 32-bit protected mode at the PVH entry, `ebx` = start info.
    Pvh { entry: u64 },
    /// 64-bit long mode at `startup_64`, `rsi` = zero page.
    BzImage { entry: u64 },
}

/// Where the kernel landed.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    pub entry: BootEntry,
    pub kernel_end: u64,
    setup_header: Option<linux_loader::bootparam::setup_header>,
}

fn is_elf(path: &Path) -> Result<bool, LinuxError> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut f = File::open(path).map_err(|source| LinuxError::OpenKernel { path: path.to_path_buf(), source })?;
    f.read_exact(&mut magic).map_err(|source| LinuxError::OpenKernel { path: path.to_path_buf(), source })?;
    Ok(&magic == b"\x7fELF")
}

/// Load `path` (a vmlinux ELF with a PVH note, or a bzImage) into guest memory.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, LinuxError> {
    let open_err = |source| LinuxError::OpenKernel { path: path.to_path_buf(), source };
    let load_err = |source| LinuxError::LoadKernel { path: path.to_path_buf(), source };
    let elf = is_elf(path)?;
    let mut file = File::open(path).map_err(open_err)?;
    if elf {
        let r = Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(load_err)?;
        let PvhBootCapability::PvhEntryPresent(entry) = r.pvh_boot_cap else {
            return Err(LinuxError::NoPvhEntry(path.to_path_buf()));
        };
        Ok(LoadedKernel { entry: BootEntry::Pvh { entry: entry.0 }, kernel_end: r.kernel_end, setup_header: None })
    } else {
        let r = BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(load_err)?;
        // startup_64 sits 0x200 bytes into the protected-mode kernel.
        Ok(LoadedKernel {
            entry: BootEntry::BzImage { entry: r.kernel_load.0 + 0x200 },
            kernel_end: r.kernel_end,
            setup_header: r.setup_header,
        })
    }
}

/// Guest RAM size check: at least 16 MiB and below the MMIO hole.
pub fn check_mem_size(mem_mib: u64) -> Result<u64, LinuxError> {
    let bytes = mem_mib << 20;
    if !(16..=(MAX_MEM >> 20)).contains(&mem_mib) {
        return Err(LinuxError::MemorySize(mem_mib));
    }
    Ok(bytes)
}

/// Copy the initramfs to the top of guest RAM (page aligned); returns (address, size).
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel_end: u64,
    path: &Path,
) -> Result<(u64, u64), LinuxError> {
    let data = std::fs::read(path).map_err(|source| LinuxError::ReadInitrd { path: path.to_path_buf(), source })?;
    let size = data.len() as u64;
    let addr = mem_size
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|a| *a >= kernel_end)
        .ok_or(LinuxError::InitrdTooLarge { size })?;
    mem.write_slice(&data, GuestAddress(addr))
        .map_err(|source| LinuxError::WriteGuest { what: "the initramfs", source })?;
    Ok((addr, size))
}

/// Write the NUL-terminated command line at [`CMDLINE_ADDR`].
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<(), LinuxError> {
    if cmdline.len() + 1 > CMDLINE_MAX {
        return Err(LinuxError::CmdlineTooLong(cmdline.len()));
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_ADDR))
        .map_err(|source| LinuxError::WriteGuest { what: "the command line", source })
}

/// The guest's memory map: low RAM, the EBDA/BIOS hole, RAM from 1 MiB to the end.
pub fn memory_map(mem_size: u64) -> Vec<(u64, u64, u32)> {
    vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
        (HIMEM_START, mem_size - HIMEM_START, E820_RAM),
    ]
}

/// Describe the boot to the kernel: PVH start info or the bzImage zero page.
pub fn write_boot_info(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    mem_size: u64,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
) -> Result<(), LinuxError> {
    let wr = |what, source| LinuxError::WriteGuest { what, source };
    match kernel.entry {
        BootEntry::Pvh { .. } => {
            let map = memory_map(mem_size);
            for (i, &(addr, size, type_)) in map.iter().enumerate() {
                let e = hvm_memmap_table_entry { addr, size, type_, reserved: 0 };
                let at = MEMMAP_ADDR + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
                mem.write_obj(e, GuestAddress(at)).map_err(|e| wr("the PVH memory map", e))?;
            }
            let mut info = hvm_start_info {
                magic: XEN_HVM_START_MAGIC,
                version: 1,
                cmdline_paddr: CMDLINE_ADDR,
                memmap_paddr: MEMMAP_ADDR,
                memmap_entries: map.len() as u32,
                ..Default::default()
            };
            if let Some((paddr, size)) = initrd {
                let module = hvm_modlist_entry { paddr, size, ..Default::default() };
                mem.write_obj(module, GuestAddress(PVH_MODLIST_ADDR)).map_err(|e| wr("the PVH module list", e))?;
                info.nr_modules = 1;
                info.modlist_paddr = PVH_MODLIST_ADDR;
            }
            mem.write_obj(info, GuestAddress(PVH_START_INFO_ADDR)).map_err(|e| wr("the PVH start info", e))
        }
        BootEntry::BzImage { .. } => {
            let mut params = boot_params::default();
            if let Some(hdr) = kernel.setup_header {
                params.hdr = hdr;
            }
            params.hdr.type_of_loader = 0xff;
            params.hdr.boot_flag = 0xaa55;
            params.hdr.header = 0x5372_6448; // "HdrS"
            params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
            params.hdr.cmdline_size = cmdline_len as u32 + 1;
            params.hdr.kernel_alignment = 0x0100_0000;
            if let Some((addr, size)) = initrd {
                params.hdr.ramdisk_image = addr as u32;
                params.hdr.ramdisk_size = size as u32;
            }
            let map = memory_map(mem_size);
            for (i, &(addr, size, type_)) in map.iter().enumerate() {
                params.e820_table[i].addr = addr;
                params.e820_table[i].size = size;
                params.e820_table[i].r#type = type_;
            }
            params.e820_entries = map.len() as u8;
            mem.write_obj(params, GuestAddress(ZERO_PAGE_ADDR)).map_err(|e| wr("the zero page", e))
        }
    }
}

/// Whether the guest memory covers `addr` (used by tests and sanity checks).
pub fn covers(mem: &GuestMemoryMmap, addr: u64) -> bool {
    mem.address_in_range(GuestAddress(addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::{create_guest_memory, MemRange};

    fn mem(size: usize) -> GuestMemoryMmap {
        create_guest_memory(&[MemRange { start: 0, size }]).unwrap()
    }

    #[test]
    fn memory_map_leaves_the_bios_hole_reserved() {
        let map = memory_map(128 << 20);
        assert_eq!(map[0], (0, 0x9fc00, E820_RAM));
        assert_eq!(map[1].2, E820_RESERVED);
        assert_eq!(map[2], (0x10_0000, (128 << 20) - 0x10_0000, E820_RAM));
    }

    #[test]
    fn initrd_goes_page_aligned_to_the_top_of_ram() {
        let m = mem(32 << 20);
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![7u8; 5000]).unwrap();
        let (addr, size) = load_initrd(&m, 32 << 20, 0x200_0000 - 0x10_0000, f.path()).unwrap();
        assert_eq!(size, 5000);
        assert_eq!(addr % 4096, 0);
        assert!(addr + size <= 32 << 20);
    }

    #[test]
    fn initrd_that_would_overlap_the_kernel_is_rejected() {
        let m = mem(16 << 20);
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![7u8; 8 << 20]).unwrap();
        let err = load_initrd(&m, 16 << 20, 12 << 20, f.path()).unwrap_err();
        assert!(matches!(err, LinuxError::InitrdTooLarge { .. }));
    }

    #[test]
    fn pvh_start_info_points_at_cmdline_memmap_and_module() {
        let m = mem(64 << 20);
        let k =
            LoadedKernel { entry: BootEntry::Pvh { entry: 0x100_0000 }, kernel_end: 0x200_0000, setup_header: None };
        write_boot_info(&m, &k, 64 << 20, 10, Some((0x300_0000, 1234))).unwrap();
        let info: hvm_start_info = m.read_obj(GuestAddress(PVH_START_INFO_ADDR)).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(info.cmdline_paddr, CMDLINE_ADDR);
        assert_eq!(info.memmap_entries, 3);
        assert_eq!(info.nr_modules, 1);
        let module: hvm_modlist_entry = m.read_obj(GuestAddress(PVH_MODLIST_ADDR)).unwrap();
        assert_eq!((module.paddr, module.size), (0x300_0000, 1234));
    }

    #[test]
    fn check_mem_size_rejects_memory_reaching_the_mmio_hole() {
        assert!(check_mem_size(128).is_ok());
        assert!(check_mem_size(8).is_err());
        assert!(check_mem_size(4096).is_err());
    }

    #[test]
    fn overlong_cmdline_is_rejected() {
        let m = mem(1 << 20);
        let long = "x".repeat(CMDLINE_MAX);
        assert!(matches!(write_cmdline(&m, &long), Err(LinuxError::CmdlineTooLong(_))));
    }
}
