//! A loader for static, non-PIE x86-64 ELF executables (`ET_EXEC`, no interpreter): parses the
//! header and the `PT_LOAD` segments the bare guest maps at their link addresses.

/// Errors from parsing an ELF image; each names what is wrong with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    #[error("file is too short for an ELF header ({0} bytes)")]
    TooShort(usize),
    #[error("not an ELF file (bad magic)")]
    BadMagic,
    #[error("not a 64-bit little-endian x86-64 ELF (class {class}, data {data}, machine {machine})")]
    WrongArch { class: u8, data: u8, machine: u16 },
    #[error("ELF type {0} is not ET_EXEC: the bare VM runs static non-PIE executables only")]
    NotExec(u16),
    #[error("ELF has a PT_INTERP segment: dynamically linked executables are not supported")]
    Dynamic,
    #[error("program header table at {off:#x} ({num} x {size} bytes) lies outside the file")]
    BadPhdrs { off: u64, num: u16, size: u16 },
    #[error("segment {index} file range {off:#x}+{filesz:#x} lies outside the file")]
    SegmentOutsideFile { index: usize, off: u64, filesz: u64 },
    #[error("segment {index} has file size {filesz:#x} larger than memory size {memsz:#x}")]
    SegmentSizes { index: usize, filesz: u64, memsz: u64 },
    #[error("segment {index} at {vaddr:#x}+{memsz:#x} overflows the address space")]
    SegmentOverflow { index: usize, vaddr: u64, memsz: u64 },
    #[error("ELF has no PT_LOAD segment")]
    NoLoad,
}

const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;
const PHDR_SIZE: u16 = 56;

/// One `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub offset: u64,
    pub filesz: u64,
    pub memsz: u64,
    /// PF_X/PF_W/PF_R bits.
    pub flags: u32,
}

/// What the loader needs from an executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfImage {
    pub entry: u64,
    pub segments: Vec<Segment>,
    /// Where the program headers are visible in memory (auxv AT_PHDR), if they are loaded.
    pub phdr_vaddr: Option<u64>,
    pub phnum: u16,
}

impl ElfImage {
    /// Lowest and one-past-highest virtual address of the loaded segments.
    pub fn span(&self) -> (u64, u64) {
        let lo = self.segments.iter().map(|s| s.vaddr).min().unwrap_or(0);
        let hi = self.segments.iter().map(|s| s.vaddr + s.memsz).max().unwrap_or(0);
        (lo, hi)
    }
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap_or([0; 4]))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap_or([0; 8]))
}

/// Parse a static x86-64 executable.
pub fn parse(file: &[u8]) -> Result<ElfImage, ElfError> {
    if file.len() < 64 {
        return Err(ElfError::TooShort(file.len()));
    }
    if &file[..4] != b"\x7fELF" {
        return Err(ElfError::BadMagic);
    }
    let (class, data, machine) = (file[4], file[5], u16_at(file, 18));
    if class != 2 || data != 1 || machine != EM_X86_64 {
        return Err(ElfError::WrongArch { class, data, machine });
    }
    let etype = u16_at(file, 16);
    if etype != ET_EXEC {
        return Err(ElfError::NotExec(etype));
    }
    let entry = u64_at(file, 24);
    let phoff = u64_at(file, 32);
    let phentsize = u16_at(file, 54);
    let phnum = u16_at(file, 56);
    let bad_phdrs = ElfError::BadPhdrs { off: phoff, num: phnum, size: phentsize };
    let table_len = u64::from(phnum) * u64::from(phentsize);
    let fits = |off: u64, len: u64| matches!(off.checked_add(len), Some(end) if end <= file.len() as u64);
    if phentsize != PHDR_SIZE || !fits(phoff, table_len) {
        return Err(bad_phdrs);
    }
    let mut segments = Vec::new();
    let mut phdr_vaddr = None;
    for index in 0..usize::from(phnum) {
        let p = phoff as usize + index * usize::from(PHDR_SIZE);
        let ptype = u32_at(file, p);
        let seg = Segment {
            flags: u32_at(file, p + 4),
            offset: u64_at(file, p + 8),
            vaddr: u64_at(file, p + 16),
            filesz: u64_at(file, p + 32),
            memsz: u64_at(file, p + 40),
        };
        match ptype {
            PT_INTERP => return Err(ElfError::Dynamic),
            PT_PHDR => phdr_vaddr = Some(seg.vaddr),
            PT_LOAD => {
                if !fits(seg.offset, seg.filesz) {
                    return Err(ElfError::SegmentOutsideFile { index, off: seg.offset, filesz: seg.filesz });
                }
                if seg.filesz > seg.memsz {
                    return Err(ElfError::SegmentSizes { index, filesz: seg.filesz, memsz: seg.memsz });
                }
                if seg.vaddr.checked_add(seg.memsz).is_none() {
                    return Err(ElfError::SegmentOverflow { index, vaddr: seg.vaddr, memsz: seg.memsz });
                }
                segments.push(seg);
            }
            _ => {}
        }
    }
    if segments.is_empty() {
        return Err(ElfError::NoLoad);
    }
    // Without PT_PHDR, the headers are still visible if the first segment maps file offset 0.
    if phdr_vaddr.is_none() {
        phdr_vaddr = segments
            .iter()
            .find(|s| s.offset <= phoff && phoff + table_len <= s.offset + s.filesz)
            .map(|s| s.vaddr + (phoff - s.offset));
    }
    Ok(ElfImage { entry, segments, phdr_vaddr, phnum })
}

/// Build a minimal static ELF with one RX segment holding `code` at `vaddr` (entry = vaddr).
/// Used by tests to make guests that fault, call unknown system calls or spin.
pub fn build_test_elf(vaddr: u64, code: &[u8]) -> Vec<u8> {
    let hdr_len = 64 + u64::from(PHDR_SIZE);
    let mut f = vec![0u8; hdr_len as usize];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2;
    f[5] = 1;
    f[6] = 1;
    f[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
    f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&(vaddr + hdr_len).to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes());
    f[52..54].copy_from_slice(&64u16.to_le_bytes());
    f[54..56].copy_from_slice(&PHDR_SIZE.to_le_bytes());
    f[56..58].copy_from_slice(&1u16.to_le_bytes());
    let total = hdr_len + code.len() as u64;
    let p = 64;
    f[p..p + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
    f[p + 4..p + 8].copy_from_slice(&5u32.to_le_bytes());
    f[p + 16..p + 24].copy_from_slice(&vaddr.to_le_bytes());
    f[p + 24..p + 32].copy_from_slice(&vaddr.to_le_bytes());
    f[p + 32..p + 40].copy_from_slice(&total.to_le_bytes());
    f[p + 40..p + 48].copy_from_slice(&total.to_le_bytes());
    f[p + 48..p + 56].copy_from_slice(&0x1000u64.to_le_bytes());
    f.extend_from_slice(code);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_entry_and_the_load_segment_of_a_built_elf() {
        let elf = build_test_elf(0x40_0000, &[0xf4]);
        let img = parse(&elf).unwrap();
        assert_eq!(img.entry, 0x40_0078);
        assert_eq!(img.segments.len(), 1);
        assert_eq!(img.segments[0].filesz, 0x79);
        assert_eq!(img.phdr_vaddr, Some(0x40_0040));
        assert_eq!(img.span(), (0x40_0000, 0x40_0079));
    }

    #[test]
    fn parse_rejects_pie_executables() {
        let mut elf = build_test_elf(0x40_0000, &[0xf4]);
        elf[16] = 3; // ET_DYN
        assert_eq!(parse(&elf), Err(ElfError::NotExec(3)));
    }

    #[test]
    fn parse_rejects_a_segment_past_the_end_of_the_file() {
        let mut elf = build_test_elf(0x40_0000, &[0xf4]);
        elf[64 + 32..64 + 40].copy_from_slice(&0x10_0000u64.to_le_bytes());
        assert!(matches!(parse(&elf), Err(ElfError::SegmentOutsideFile { index: 0, .. })));
    }

    #[test]
    fn parse_rejects_non_elf_bytes() {
        assert_eq!(parse(&[0u8; 80]), Err(ElfError::BadMagic));
        assert_eq!(parse(b"\x7fELF"), Err(ElfError::TooShort(4)));
    }

    #[test]
    fn parse_accepts_the_workload_binary_when_built() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../workload/target/release/cvbench-workload");
        let Ok(bytes) = std::fs::read(path) else {
            eprintln!("SKIPPED: {path} not built");
            return;
        };
        let img = parse(&bytes).unwrap();
        assert!(img.segments.len() >= 2);
        assert!(img.span().0 >= 0x20_0000);
    }
}
