//! The bare VM's snapshot: what it keeps, how a snapshot is checked before any of it is used,
//! and the two files it is written to.
//!
//! The snapshot point is the guest's read from stdin (`wait-go` blocking for its go line).
//! There the guest is inside a system call the VMM services, so the whole machine state is
//! the user registers at the call, the x87/SSE state, guest memory, and the VMM's tables for
//! the guest (descriptors, blocked signals, free heap ranges). Restore rebuilds the fixed CPU
//! set-up (MSRs, segments, paging root), loads the saved registers, and services the pending
//! read as if the guest had just made it. Nothing else is carried: a guest holding a
//! forwarded file or socket cannot be saved.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::heap::Heap;
use super::layout::{Layout, PML4};
use super::syscalls::SYS_READ;
use crate::snapshot::vcpu::{FpuState, RegsState};
use crate::snapshot::{frame, memory, SnapshotError, MEMORY_FILE, STATE_FILE};
use crate::stats::SnapshotInfo;
use crate::vstate::GuestMemoryMmap;

/// The state file's kind word.
pub const KIND: &str = "bare";
/// The state format this VMM writes and reads. Bump on any change to [`BareSnapshot`].
pub const FORMAT_VERSION: u32 = 1;
/// Bounds on the tables a snapshot may name.
const MAX_FDS: usize = 64;
const MAX_GUEST_FD: i32 = 1023;
const MAX_HEAP_RANGES: usize = 1 << 16;

/// One guest descriptor the snapshot keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SavedFd {
    /// The VMM's own stdin, stdout or stderr (`host` is 0, 1 or 2).
    Stdio { fd: i32, host: i32 },
    /// A signalfd over `mask`.
    Signal { fd: i32, mask: u64 },
}

impl SavedFd {
    fn fd(&self) -> i32 {
        match *self {
            SavedFd::Stdio { fd, .. } | SavedFd::Signal { fd, .. } => fd,
        }
    }
}

/// The system-call service's tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceState {
    pub fds: Vec<SavedFd>,
    pub blocked_signals: u64,
    /// Free heap ranges (start, length), in address order.
    pub heap_free: Vec<(u64, u64)>,
}

/// Everything but memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BareSnapshot {
    /// The cvbench-vmm that wrote it (informational; the format version is what is checked).
    pub vmm_version: String,
    /// Guest memory size in bytes: the memory file is exactly this long.
    pub mem_size: u64,
    /// Where the heap window starts (the rest of the layout follows from the memory size).
    pub heap_start: u64,
    /// The paging root.
    pub cr3: u64,
    /// The user registers at the pending `read` from stdin.
    pub regs: RegsState,
    pub fpu: FpuState,
    pub service: ServiceState,
    /// Memory pages that hold data (written to the file; the rest are holes).
    pub data_pages: u64,
}

/// A snapshot that passed every check, with what the checks derived.
#[derive(Debug)]
pub struct Checked {
    pub snap: BareSnapshot,
    pub layout: Layout,
    pub heap: Heap,
}

impl BareSnapshot {
    /// Check every size, offset and table entry against the bounds the VMM itself keeps.
    pub fn check(self) -> Result<Checked, String> {
        let layout = Layout::restore(self.mem_size, self.heap_start).map_err(|e| e.to_string())?;
        if self.cr3 != PML4 {
            return Err(format!("paging root {:#x} is not the bare VM's ({PML4:#x})", self.cr3));
        }
        if self.data_pages > self.mem_size / 4096 {
            return Err(format!("{} data pages do not fit in {} bytes", self.data_pages, self.mem_size));
        }
        let s = &self.service;
        if s.fds.len() > MAX_FDS {
            return Err(format!("{} descriptors (at most {MAX_FDS})", s.fds.len()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &s.fds {
            let fd = f.fd();
            if !(0..=MAX_GUEST_FD).contains(&fd) || !seen.insert(fd) {
                return Err(format!("descriptor {fd} is out of range or listed twice"));
            }
            if let SavedFd::Stdio { host, .. } = *f {
                if !(0..=2).contains(&host) {
                    return Err(format!("descriptor {fd} names host descriptor {host}, which is not stdio"));
                }
            }
        }
        if s.heap_free.len() > MAX_HEAP_RANGES {
            return Err(format!("{} free heap ranges (at most {MAX_HEAP_RANGES})", s.heap_free.len()));
        }
        let heap = Heap::from_free_ranges(layout.heap_start, layout.heap_end, &s.heap_free)?;
        let pending_fd = self.regs.rdi;
        let reads_stdin = s.fds.iter().any(|f| matches!(*f, SavedFd::Stdio { fd, host: 0 } if fd as u64 == pending_fd));
        if self.regs.rax != SYS_READ || !reads_stdin {
            return Err(format!(
                "the pending call (number {}, descriptor {pending_fd}) is not the read from stdin a snapshot is taken at",
                self.regs.rax
            ));
        }
        Ok(Checked { snap: self, layout, heap })
    }
}

/// Read the state file in `dir` and check it.
pub fn read(dir: &Path) -> Result<Checked, SnapshotError> {
    let path = dir.join(STATE_FILE);
    let snap: BareSnapshot = frame::read(&path, KIND, FORMAT_VERSION)?;
    snap.check().map_err(|what| SnapshotError::Invalid { path, what })
}

/// Open the memory file in `dir` and check it is exactly `checked`'s memory size, and that
/// size is `want_mib` when one is asked for.
pub fn open_memory(dir: &Path, checked: &Checked, want_mib: Option<u32>) -> Result<File, SnapshotError> {
    crate::snapshot::open_memory(dir, checked.snap.mem_size, want_mib.map(u64::from))
}

/// The two files of a snapshot being taken, made before the VMM is jailed (the jail hides
/// the file system, so they are written later through these descriptors). Until
/// [`SnapshotOut::write`] completes, dropping this removes both: a run that ends without a
/// snapshot leaves nothing behind.
pub struct SnapshotOut {
    dir: PathBuf,
    dirfd: File,
    memory: File,
    state: Option<File>,
    /// The files this run created, so only those are removed.
    made: Vec<&'static str>,
    /// Read every page when writing memory (the host has swap).
    scan_all: bool,
    written: bool,
}

impl SnapshotOut {
    /// Create `memory` (sized `mem_size`, all holes) and an empty `state` in the existing
    /// directory `dir`; refuse if either already exists.
    pub fn create(dir: &Path, mem_size: u64) -> Result<SnapshotOut, SnapshotError> {
        let io = |what, path: PathBuf| move |source| SnapshotError::Io { what, path, source };
        let dirfd = File::open(dir).map_err(io("open the directory of", dir.to_path_buf()))?;
        let new = |name: &str| {
            let p = dir.join(name);
            std::fs::OpenOptions::new().write(true).create_new(true).open(&p).map_err(io("create", p))
        };
        let memory = new(MEMORY_FILE)?;
        let mut out = SnapshotOut {
            dir: dir.to_path_buf(),
            dirfd,
            memory,
            state: None,
            made: vec![MEMORY_FILE],
            scan_all: memory::host_has_swap(),
            written: false,
        };
        out.state = Some(new(STATE_FILE)?);
        out.made.push(STATE_FILE);
        out.memory.set_len(mem_size).map_err(io("size", dir.join(MEMORY_FILE)))?;
        Ok(out)
    }

    /// Write guest memory, then the state (the file that makes a snapshot), both synced.
    pub fn write(self, mem: &GuestMemoryMmap, mut snap: BareSnapshot) -> Result<SnapshotInfo, SnapshotError> {
        let mem_size = snap.mem_size;
        self.write_framed(mem, mem_size, KIND, FORMAT_VERSION, |data_pages| {
            snap.data_pages = data_pages;
            snap
        })
    }

    /// Write the first `mem_size` bytes of guest memory, then the state `body` makes from the
    /// count of data pages, framed as `kind` at `version` (any guest kind's snapshot).
    pub fn write_framed<T: Serialize>(
        mut self,
        mem: &GuestMemoryMmap,
        mem_size: u64,
        kind: &str,
        version: u32,
        body: impl FnOnce(u64) -> T,
    ) -> Result<SnapshotInfo, SnapshotError> {
        use std::io::Write;
        let mpath = self.dir.join(MEMORY_FILE);
        let spath = self.dir.join(STATE_FILE);
        let written = memory::write(mem, mem_size, &self.memory, self.scan_all)
            .map_err(|source| SnapshotError::Io { what: "write", path: mpath.clone(), source })?;
        let snap = body(written.data_pages);
        let bytes = frame::encode(kind, version, &snap)
            .map_err(|e| SnapshotError::Invalid { path: spath.clone(), what: e.to_string() })?;
        let io = |source| SnapshotError::Io { what: "write", path: spath.clone(), source };
        let state = self.state.as_mut().ok_or_else(|| io(std::io::ErrorKind::NotFound.into()))?;
        state.write_all(&bytes).map_err(io)?;
        state.sync_all().map_err(io)?;
        let disk = self.memory.metadata().map(|m| m.blocks() * 512).unwrap_or(0);
        self.written = true;
        Ok(SnapshotInfo {
            dir: self.dir.clone(),
            memory_bytes: mem_size,
            memory_disk_bytes: disk,
            state_bytes: bytes.len() as u64,
            data_pages: written.data_pages,
        })
    }
}

impl Drop for SnapshotOut {
    fn drop(&mut self) {
        if self.written {
            return;
        }
        for name in self.made.iter().rev() {
            let Ok(c) = std::ffi::CString::new(*name) else { continue };
            // SAFETY: unlinkat with a directory descriptor we own and a NUL-terminated name;
            // it removes only the file this run created there.
            unsafe { libc::unlinkat(self.dirfd.as_raw_fd(), c.as_ptr(), 0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> BareSnapshot {
        let layout = Layout::restore(64 << 20, 0x40_0000).unwrap();
        BareSnapshot {
            vmm_version: "test".into(),
            mem_size: 64 << 20,
            heap_start: 0x40_0000,
            cr3: PML4,
            regs: RegsState { rax: SYS_READ, rdi: 0, ..Default::default() },
            fpu: FpuState::default(),
            service: ServiceState {
                fds: vec![SavedFd::Stdio { fd: 0, host: 0 }, SavedFd::Stdio { fd: 1, host: 1 }],
                blocked_signals: 0,
                heap_free: vec![(layout.heap_start, layout.heap_end - layout.heap_start)],
            },
            data_pages: 10,
        }
    }

    #[test]
    fn a_consistent_snapshot_passes() {
        assert!(good().check().is_ok());
    }

    #[test]
    fn each_out_of_bounds_field_is_refused_with_a_reason() {
        type Edit = Box<dyn Fn(&mut BareSnapshot)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("memory size", Box::new(|s| s.mem_size = (64 << 20) + 4096)),
            ("heap start", Box::new(|s| s.heap_start = 0x1000)),
            ("paging root", Box::new(|s| s.cr3 = 0x7000)),
            ("data pages", Box::new(|s| s.data_pages = u64::MAX)),
            ("fd range", Box::new(|s| s.service.fds.push(SavedFd::Signal { fd: 1 << 20, mask: 0 }))),
            ("fd twice", Box::new(|s| s.service.fds.push(SavedFd::Signal { fd: 1, mask: 0 }))),
            ("host fd", Box::new(|s| s.service.fds.push(SavedFd::Stdio { fd: 5, host: 9 }))),
            ("fd count", Box::new(|s| s.service.fds.extend((3..100).map(|fd| SavedFd::Signal { fd, mask: 0 })))),
            ("heap range", Box::new(|s| s.service.heap_free = vec![(0x1000, 0x1000)])),
            ("pending call", Box::new(|s| s.regs.rax = 1)),
            ("pending fd", Box::new(|s| s.regs.rdi = 7)),
        ];
        for (what, edit) in cases {
            let mut s = good();
            edit(&mut s);
            assert!(s.check().is_err(), "{what} was accepted");
        }
    }

    #[test]
    fn a_run_that_takes_no_snapshot_leaves_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = SnapshotOut::create(dir.path(), 64 << 20).unwrap();
        assert!(dir.path().join(MEMORY_FILE).exists() && dir.path().join(STATE_FILE).exists());
        drop(out);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_existing_snapshot_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"keep").unwrap();
        assert!(SnapshotOut::create(dir.path(), 64 << 20).is_err());
        assert_eq!(std::fs::read(dir.path().join(STATE_FILE)).unwrap(), b"keep");
        assert!(!dir.path().join(MEMORY_FILE).exists());
    }
}
