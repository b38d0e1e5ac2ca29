//! VM snapshots, the parts any guest kind shares: the state file's frame (a header line with a
//! format version and a SHA-256 of the body, then a serde body; see [`frame`]), guest memory
//! written to and restored from a sparse file ([`memory`]: lazily by a `MAP_PRIVATE` mapping
//! or eagerly by reading it in), and serde mirrors of the KVM vCPU state ([`vcpu`]).
//!
//! The model is Firecracker's: pause the vCPU at a known point, save memory to one file and
//! everything else to a small versioned state file; restore without re-running the guest's
//! set-up. A snapshot is untrusted input: the frame is checked before the body is parsed,
//! every size, offset and count in the body is bounded by the guest kind's own validation,
//! and the memory file must be exactly the size the state names.

pub mod frame;
pub mod kvm;
pub mod memory;
pub mod vcpu;

use std::path::PathBuf;

/// File name of the guest memory inside a snapshot directory.
pub const MEMORY_FILE: &str = "memory";
/// File name of the state (vCPU, devices, the VMM's guest-visible tables).
pub const STATE_FILE: &str = "state";

/// Open a snapshot file for reading only if it is a regular file: not through a symlink
/// (`O_NOFOLLOW`), and without blocking on a FIFO or device planted in its place
/// (`O_NONBLOCK`, then the type is checked on the open descriptor).
pub fn open_regular(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

/// Open the memory file in `dir`: a regular file of exactly `expected` bytes (the state's
/// memory size), and of `want_mib` MiB when one is asked for.
pub fn open_memory(
    dir: &std::path::Path,
    expected: u64,
    want_mib: Option<u64>,
) -> Result<std::fs::File, SnapshotError> {
    let path = dir.join(MEMORY_FILE);
    let file = open_regular(&path).map_err(|source| SnapshotError::Io { what: "open", path: path.clone(), source })?;
    let found = file.metadata().map_err(|source| SnapshotError::Io { what: "stat", path: path.clone(), source })?.len();
    if found != expected {
        return Err(SnapshotError::MemorySize { path, found, expected });
    }
    if let Some(mib) = want_mib {
        if mib.checked_shl(20) != Some(expected) {
            return Err(SnapshotError::MemoryMismatch { path, found: expected >> 20, expected: mib });
        }
    }
    Ok(file)
}

/// Why a snapshot could not be written or read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot {what} snapshot file {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot state {path} is not a cvbench snapshot: {what}")]
    NotASnapshot { path: PathBuf, what: String },
    #[error(
        "snapshot state {path} has format version {found}; this cvbench-vmm reads version {expected} only (take the snapshot again)"
    )]
    Version { path: PathBuf, found: u32, expected: u32 },
    #[error("snapshot state {path} fails its checksum (header says sha256 {expected}, the body hashes to {actual}): the file is damaged or was edited")]
    Checksum { path: PathBuf, expected: String, actual: String },
    #[error("snapshot state {path} cannot be parsed")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("snapshot state {path} is invalid: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("snapshot memory {path} is {found} bytes but the state says the guest had {expected} bytes (truncated or from another snapshot)")]
    MemorySize { path: PathBuf, found: u64, expected: u64 },
    #[error("snapshot memory {path} holds {found} MiB of guest memory but {expected} MiB were asked for")]
    MemoryMismatch { path: PathBuf, found: u64, expected: u64 },
    #[error("no snapshot written to {dir}: the guest {end} before it blocked reading stdin (a snapshot is taken where the workload waits for its go line, e.g. `wait-go`)")]
    GuestEnded { dir: PathBuf, end: String },
    #[error("no snapshot written to {dir}: the guest {end} before its workload printed READY (a Linux guest is saved at the READY line of a workload that then waits, e.g. `wait-go`)")]
    NoReady { dir: PathBuf, end: String },
    #[error("cannot map snapshot memory {path}")]
    Map {
        path: PathBuf,
        #[source]
        source: crate::vstate::MemoryError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_or_a_symlink_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("state");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path inside our temporary directory.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(open_regular(&fifo).is_err());
        let target = dir.path().join("real");
        std::fs::write(&target, b"x").unwrap();
        let link = dir.path().join("memory");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_regular(&link).is_err());
        assert!(open_regular(&target).is_ok());
    }
}
