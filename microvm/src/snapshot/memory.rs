//! Guest memory to and from a snapshot's memory file. The file is as long as guest memory and
//! sparse: only pages that hold a non-zero byte are written, so its size on disk is what the
//! guest used. Restore either maps it `MAP_PRIVATE` (lazy: each page is read from the file,
//! through the shared page cache, on the guest's first touch, and copied only when written)
//! or reads its data extents into fresh anonymous memory (eager: every used page is paid for
//! before the guest runs).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};
use vm_memory::mmap::{GuestRegionMmap, MmapRegion};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

use crate::vstate::memory::{create_guest_memory, host_range, MemRange};
use crate::vstate::MemoryError;

const PAGE: usize = 4096;

/// How restored memory is brought in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// `MAP_PRIVATE` of the file: pages fault in from the page cache on first touch.
    #[default]
    Lazy,
    /// Read the file's data into anonymous memory before the guest runs.
    Eager,
}

impl Load {
    pub const fn name(self) -> &'static str {
        match self {
            Load::Lazy => "lazy",
            Load::Eager => "eager",
        }
    }
}

impl std::str::FromStr for Load {
    type Err = String;
    fn from_str(s: &str) -> Result<Load, String> {
        match s {
            "lazy" => Ok(Load::Lazy),
            "eager" => Ok(Load::Eager),
            other => Err(format!("{other:?} is not a memory load mode (lazy, eager)")),
        }
    }
}

/// What writing memory produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Pages written (those holding a non-zero byte).
    pub data_pages: u64,
}

fn is_zero(page: &[u8]) -> bool {
    // Compare a word at a time; the page is 4 KiB aligned in guest memory.
    let (head, words, tail) = {
        // SAFETY: every bit pattern is a valid u64; align_to only splits at alignment bounds.
        unsafe { page.align_to::<u64>() }
    };
    head.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

/// mincore(2) of the mapping: one byte per page, bit 0 set when the page is resident.
fn resident_pages(host: *mut u8, size: u64) -> Option<Vec<u8>> {
    let mut vec = vec![0u8; (size as usize).div_ceil(PAGE)];
    // SAFETY: `host..host+size` is one live page-aligned mapping; `vec` has a byte per page.
    let rc = unsafe { libc::mincore(host.cast(), size as usize, vec.as_mut_ptr()) };
    (rc == 0).then_some(vec)
}

/// Whether the host has swap on (then a page that is not resident may still hold data), from
/// /proc/swaps: read before the VMM is jailed.
pub fn host_has_swap() -> bool {
    std::fs::read_to_string("/proc/swaps").map_or(true, |t| t.lines().count() > 1)
}

/// Write the first `size` bytes of guest memory into `file`, which the caller has already
/// sized to `size` bytes (so it can be made before the VMM is jailed): runs of non-zero pages
/// are written at their own offsets, zero pages stay holes. Pages the host never backed are
/// skipped unread unless `scan_all` (set when swap is on: a swapped-out page is not resident
/// yet holds data).
pub fn write(mem: &GuestMemoryMmap, size: u64, file: &File, scan_all: bool) -> Result<Written, std::io::Error> {
    let host = host_range(mem, 0, size).map_err(std::io::Error::other)?;
    // SAFETY: `host..host+size` is one live mapping owned by `mem` (checked by host_range). The
    // vCPU is stopped, so nothing writes it while this shared view exists.
    let all = unsafe { std::slice::from_raw_parts(host.cast_const(), size as usize) };
    let mut data_pages = 0;
    let mut run_start: Option<usize> = None;
    let pages = all.len() / PAGE;
    let resident = if scan_all { None } else { resident_pages(host, size) };
    for p in 0..=pages {
        // A page the host never backed is zero: skip it without faulting it in.
        let backed = resident.as_ref().is_none_or(|r| r.get(p).is_some_and(|b| b & 1 != 0));
        let used = p < pages && backed && !is_zero(&all[p * PAGE..(p + 1) * PAGE]);
        match (used, run_start) {
            (true, None) => run_start = Some(p),
            (false, Some(s)) => {
                file.write_all_at(&all[s * PAGE..p * PAGE], (s * PAGE) as u64)?;
                data_pages += (p - s) as u64;
                run_start = None;
            }
            _ => {}
        }
    }
    file.sync_all()?;
    Ok(Written { data_pages })
}

/// Guest memory of `size` bytes at guest address 0, restored from `file` (already checked to
/// be exactly `size` bytes long).
pub fn restore(file: File, size: u64, load: Load) -> Result<GuestMemoryMmap, MemoryError> {
    match load {
        Load::Lazy => map_private(file, size),
        Load::Eager => read_in(&file, size),
    }
}

fn map_private(file: File, size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let err = |e: String| MemoryError::Snapshot { size, what: e };
    let region = MmapRegion::build(
        Some(FileOffset::new(file, 0)),
        size as usize,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_NORESERVE,
    )
    .map_err(|e| err(format!("mmap MAP_PRIVATE: {e}")))?;
    let region = GuestRegionMmap::new(region, GuestAddress(0)).ok_or_else(|| err("region overflows".into()))?;
    GuestMemoryMmap::from_regions(vec![region]).map_err(|e| err(e.to_string()))
}

/// Next data (or hole) offset at or after `from`, through lseek(SEEK_DATA/SEEK_HOLE).
fn seek(file: &File, from: u64, whence: i32) -> Option<u64> {
    // SAFETY: lseek on a descriptor we own moves only its file offset, which nothing else uses.
    let r = unsafe { libc::lseek(file.as_raw_fd(), from as libc::off_t, whence) };
    (r >= 0).then_some(r as u64)
}

fn read_in(file: &File, size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let mem = create_guest_memory(&[MemRange { start: 0, size: size as usize }])?;
    let host = host_range(&mem, 0, size)?;
    let mut at = 0;
    // Only the data extents: holes are zero, as fresh anonymous memory already is.
    while let Some(data) = seek(file, at, libc::SEEK_DATA).filter(|&d| d < size) {
        let end = seek(file, data, libc::SEEK_HOLE).unwrap_or(size).min(size);
        // SAFETY: data..end lies inside the `size`-byte mapping owned by `mem`; no other
        // reference into it exists yet (the guest has not been created).
        let dst = unsafe { std::slice::from_raw_parts_mut(host.add(data as usize), (end - data) as usize) };
        file.read_exact_at(dst, data).map_err(|e| MemoryError::Snapshot { size, what: format!("read: {e}") })?;
        at = end;
    }
    Ok(mem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::{read_u64, write_u64};

    fn saved(size: u64) -> (tempfile::NamedTempFile, Written) {
        let mem = create_guest_memory(&[MemRange { start: 0, size: size as usize }]).unwrap();
        write_u64(&mem, 0x1008, 0xfeed).unwrap();
        write_u64(&mem, 0x5000, 7).unwrap();
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(size).unwrap();
        let w = write(&mem, size, f.as_file(), false).unwrap();
        (f, w)
    }

    #[test]
    fn only_pages_holding_data_are_written() {
        let (f, w) = saved(64 << 10);
        assert_eq!(w.data_pages, 2);
        assert_eq!(f.as_file().metadata().unwrap().len(), 64 << 10);
    }

    #[test]
    fn lazy_and_eager_restores_read_back_the_same_bytes() {
        let (f, _) = saved(64 << 10);
        for load in [Load::Lazy, Load::Eager] {
            let mem = restore(f.reopen().unwrap(), 64 << 10, load).unwrap();
            assert_eq!(read_u64(&mem, 0x1008).unwrap(), 0xfeed, "{load:?}");
            assert_eq!(read_u64(&mem, 0x5000).unwrap(), 7, "{load:?}");
            assert_eq!(read_u64(&mem, 0x3000).unwrap(), 0, "{load:?}");
        }
    }

    #[test]
    fn scanning_every_page_finds_the_same_data() {
        let mem = create_guest_memory(&[MemRange { start: 0, size: 64 << 10 }]).unwrap();
        write_u64(&mem, 0x2000, 3).unwrap();
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(64 << 10).unwrap();
        assert_eq!(write(&mem, 64 << 10, f.as_file(), true).unwrap().data_pages, 1);
    }

    #[test]
    fn discarding_lazily_restored_memory_gives_zeros_not_the_file() {
        let (f, _) = saved(64 << 10);
        let mem = restore(f.reopen().unwrap(), 64 << 10, Load::Lazy).unwrap();
        crate::vstate::memory::discard(&mem, 0x1000, 0x1000).unwrap();
        assert_eq!(read_u64(&mem, 0x1008).unwrap(), 0);
        assert_eq!(read_u64(&mem, 0x5000).unwrap(), 7);
    }

    #[test]
    fn a_lazy_restore_never_writes_the_file() {
        let (f, _) = saved(64 << 10);
        let mem = restore(f.reopen().unwrap(), 64 << 10, Load::Lazy).unwrap();
        write_u64(&mem, 0x1008, 1).unwrap();
        let again = restore(f.reopen().unwrap(), 64 << 10, Load::Lazy).unwrap();
        assert_eq!(read_u64(&again, 0x1008).unwrap(), 0xfeed);
    }
}
