//! Guest memory: anonymous host mappings (vm-memory's `GuestMemoryMmap`) that both guest kinds
//! register with KVM, plus the helpers the bare guest needs to zero and release ranges.
//!
//! Memory is mapped `MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE` and never pre-faulted, so the
//! first guest touch of a page faults on the host (an EPT/NPT violation on hardware KVM, a shadow
//! page-table fill under `kvm_pvm`). That is the nested-paging cost `mem-touch` measures, and it
//! keeps the VMM's RSS equal to what the guest actually used.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

pub use vm_memory::GuestMemoryMmap;

/// Errors from creating or addressing guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot map {size} bytes of guest memory at guest address {addr:#x}")]
    Create {
        addr: u64,
        size: usize,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("guest range {addr:#x}+{len:#x} is not backed by guest memory")]
    OutOfRange { addr: u64, len: u64 },
    #[error("cannot write {len} bytes at guest address {addr:#x}")]
    Write {
        addr: u64,
        len: usize,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("cannot read {len} bytes at guest address {addr:#x}")]
    Read {
        addr: u64,
        len: usize,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("cannot restore {size} bytes of guest memory from a snapshot: {what}")]
    Snapshot { size: u64, what: String },
    #[error("madvise(MADV_DONTNEED) of guest range {addr:#x}+{len:#x} failed")]
    Discard {
        addr: u64,
        len: u64,
        #[source]
        source: std::io::Error,
    },
}

/// A guest-physical range to back with memory: start address and size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRange {
    pub start: u64,
    pub size: usize,
}

/// Map anonymous, lazily faulted host memory for each range (sorted, non-overlapping).
pub fn create_guest_memory(ranges: &[MemRange]) -> Result<GuestMemoryMmap, MemoryError> {
    let pairs: Vec<(GuestAddress, usize)> = ranges.iter().map(|r| (GuestAddress(r.start), r.size)).collect();
    GuestMemoryMmap::from_ranges(&pairs).map_err(|source| MemoryError::Create {
        addr: ranges.first().map_or(0, |r| r.start),
        size: ranges.iter().map(|r| r.size).sum(),
        source,
    })
}

/// Host address of `len` bytes at guest address `addr`, all inside one region.
pub fn host_range(mem: &GuestMemoryMmap, addr: u64, len: u64) -> Result<*mut u8, MemoryError> {
    let oor = || MemoryError::OutOfRange { addr, len };
    let region = mem.find_region(GuestAddress(addr)).ok_or_else(oor)?;
    let end = addr.checked_add(len).ok_or_else(oor)?;
    let region_end = region.start_addr().0 + region.len();
    if end > region_end {
        return Err(oor());
    }
    mem.get_host_address(GuestAddress(addr)).map_err(|_| oor())
}

/// Copy `data` into guest memory at `addr`.
pub fn write_bytes(mem: &GuestMemoryMmap, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
    mem.write_slice(data, GuestAddress(addr)).map_err(|source| MemoryError::Write { addr, len: data.len(), source })
}

/// Copy guest memory at `addr` into `buf`.
pub fn read_bytes(mem: &GuestMemoryMmap, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
    mem.read_slice(buf, GuestAddress(addr)).map_err(|source| MemoryError::Read { addr, len: buf.len(), source })
}

/// Write a little-endian u64 into guest memory.
pub fn write_u64(mem: &GuestMemoryMmap, addr: u64, val: u64) -> Result<(), MemoryError> {
    write_bytes(mem, addr, &val.to_le_bytes())
}

/// Read a little-endian u64 from guest memory.
pub fn read_u64(mem: &GuestMemoryMmap, addr: u64) -> Result<u64, MemoryError> {
    let mut b = [0u8; 8];
    read_bytes(mem, addr, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Give a page-aligned guest range back to the host: its contents become zero and the next
/// guest touch faults again, exactly like fresh anonymous memory.
pub fn discard(mem: &GuestMemoryMmap, addr: u64, len: u64) -> Result<(), MemoryError> {
    if len == 0 {
        return Ok(());
    }
    let host = host_range(mem, addr, len)?;
    let file_backed = mem.find_region(GuestAddress(addr)).is_some_and(|r| r.file_offset().is_some());
    if file_backed {
        // Memory restored from a snapshot file: MADV_DONTNEED would bring the file's bytes
        // back, so put fresh anonymous zero pages over the range instead (KVM follows the
        // new mapping through its MMU notifier, as it does for any remap).
        // SAFETY: `host..host+len` lies inside one live private mapping owned by `mem`
        // (checked by `host_range`), page aligned; MAP_FIXED replaces exactly that range with
        // zero-fill memory of the same protection. No Rust reference into it is held.
        let p = unsafe {
            libc::mmap(
                host.cast(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(MemoryError::Discard { addr, len, source: std::io::Error::last_os_error() });
        }
        return Ok(());
    }
    // SAFETY: `host..host+len` lies inside one live anonymous mapping owned by `mem` (checked by
    // `host_range`); MADV_DONTNEED only replaces its pages with zero-fill-on-demand pages and
    // does not unmap it. No Rust reference into guest memory is held across this call.
    let rc = unsafe { libc::madvise(host.cast(), len as usize, libc::MADV_DONTNEED) };
    if rc != 0 {
        return Err(MemoryError::Discard { addr, len, source: std::io::Error::last_os_error() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discard_zeroes_a_written_page() {
        let mem = create_guest_memory(&[MemRange { start: 0, size: 0x4000 }]).unwrap();
        write_u64(&mem, 0x1008, 0xdead_beef).unwrap();
        discard(&mem, 0x1000, 0x1000).unwrap();
        assert_eq!(read_u64(&mem, 0x1008).unwrap(), 0);
    }

    #[test]
    fn host_range_rejects_a_range_past_the_end() {
        let mem = create_guest_memory(&[MemRange { start: 0, size: 0x2000 }]).unwrap();
        assert!(host_range(&mem, 0x1000, 0x1000).is_ok());
        assert!(matches!(host_range(&mem, 0x1800, 0x1000), Err(MemoryError::OutOfRange { .. })));
    }
}
