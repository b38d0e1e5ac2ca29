//! The bare guest's file access, confined to one per-run directory: a guest path is either
//! absolute and inside the directory's own host path (so the guest sees the same paths a
//! native run would), or relative to it; it is then opened with `openat2` under
//! `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS`, so no `..`, symlink or
//! /proc magic link leads out. Only regular files are handed to the guest (opened
//! non-blocking first, so a planted FIFO or device cannot stall or trigger anything), only
//! plain open flags are honoured, and no file may grow past a size bound.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Errors from setting up the run directory.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("cannot open the run directory {path}")]
    OpenRunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the run directory {0} must be an absolute path")]
    RelativeRunDir(PathBuf),
}

/// Why a guest file call was refused (answered -EPERM and counted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub String);

/// What became of a guest file call: the host's errno, or a confinement refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileError {
    Errno(i32),
    Refused(Refused),
}

fn refused(why: impl Into<String>) -> FileError {
    FileError::Refused(Refused(why.into()))
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// Longest guest path accepted.
pub const PATH_MAX: usize = 4096;

const ACCMODE: u64 = 0o3;
/// Open flags passed through; anything else (O_PATH, O_TMPFILE, O_DIRECTORY, O_NOCTTY,
/// O_ASYNC, ...) is refused.
const ALLOWED_FLAGS: u64 = ACCMODE
    | libc::O_CREAT as u64
    | libc::O_EXCL as u64
    | libc::O_TRUNC as u64
    | libc::O_APPEND as u64
    | libc::O_CLOEXEC as u64
    | libc::O_DIRECT as u64
    | libc::O_NOFOLLOW as u64
    | libc::O_LARGEFILE as u64
    | libc::O_DSYNC as u64
    | libc::O_SYNC as u64;
const RESOLVE: u64 = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_SYMLINKS;

/// The per-run directory and the bounds on what the guest may do in it.
#[derive(Debug)]
pub struct RunDir {
    dir: OwnedFd,
    prefix: PathBuf,
    max_file_bytes: u64,
}

impl RunDir {
    /// Open `path` (absolute) as the guest's only reachable directory.
    pub fn open(path: &Path, max_file_bytes: u64) -> Result<RunDir, FilesError> {
        if !path.is_absolute() {
            return Err(FilesError::RelativeRunDir(path.to_path_buf()));
        }
        let err = |source| FilesError::OpenRunDir { path: path.to_path_buf(), source };
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
        // SAFETY: `c` is a NUL-terminated path; the result is checked before use.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let dir = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(RunDir { dir, prefix: path.to_path_buf(), max_file_bytes })
    }

    pub fn max_file_bytes(&self) -> u64 {
        self.max_file_bytes
    }

    /// The path relative to the run directory, or a refusal for anything outside it.
    fn relative<'a>(&self, dirfd: i32, path: &'a [u8]) -> Result<&'a [u8], FileError> {
        if dirfd != libc::AT_FDCWD {
            return Err(refused(format!("directory descriptor {dirfd} (only AT_FDCWD is served)")));
        }
        let shown = String::from_utf8_lossy(path);
        let rel = if path.first() == Some(&b'/') {
            let prefix = self.prefix.as_os_str().as_bytes();
            match path.strip_prefix(prefix) {
                Some(rest) if rest.first() == Some(&b'/') => trim_slashes(rest),
                _ => return Err(refused(format!("{shown} is outside the run directory"))),
            }
        } else {
            path
        };
        if rel.is_empty() {
            return Err(refused(format!("{shown} names the run directory itself")));
        }
        Ok(rel)
    }

    fn openat2(&self, at: i32, rel: &[u8], flags: u64, mode: u64, shown: &str) -> Result<OwnedFd, FileError> {
        let c = CString::new(rel).map_err(|_| FileError::Errno(libc::EINVAL))?;
        // SAFETY: open_how is plain integers; all-zero is valid (and required for any field
        // this kernel interface grows later).
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = flags;
        how.mode = mode;
        how.resolve = RESOLVE;
        // SAFETY: `c` is NUL-terminated and `how` a valid open_how of the size passed.
        let fd = unsafe {
            libc::syscall(libc::SYS_openat2, at, c.as_ptr(), &how as *const libc::open_how, std::mem::size_of_val(&how))
        };
        if fd < 0 {
            return Err(match errno() {
                libc::EXDEV => refused(format!("{shown} leads out of the run directory")),
                libc::ELOOP => refused(format!("{shown} goes through a symbolic link")),
                e => FileError::Errno(e),
            });
        }
        // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// `openat(dirfd, path, flags, mode)` for the guest: a regular file beneath the run dir.
    pub fn open_file(&self, dirfd: i32, path: &[u8], flags: u64, mode: u64) -> Result<OwnedFd, FileError> {
        let shown = String::from_utf8_lossy(path).into_owned();
        if flags & !ALLOWED_FLAGS != 0 {
            return Err(refused(format!("open flags {:#o} on {shown}", flags & !ALLOWED_FLAGS)));
        }
        let rel = self.relative(dirfd, path)?;
        let creating = flags & libc::O_CREAT as u64 != 0;
        let mode = if creating { mode & 0o666 } else { 0 };
        // Non-blocking so a FIFO or device planted in the run dir cannot stall the open.
        let host_flags = flags | libc::O_NOFOLLOW as u64 | libc::O_CLOEXEC as u64 | libc::O_NONBLOCK as u64;
        let fd = self.openat2(self.dir.as_raw_fd(), rel, host_flags, mode, &shown)?;
        // SAFETY: an all-zero stat is a valid buffer for fstat to fill.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is open and `st` writable.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(FileError::Errno(errno()));
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(refused(format!("{shown} is not a regular file")));
        }
        // The guest did not ask for O_NONBLOCK (it is not in ALLOWED_FLAGS): clear it again.
        let keep = (flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC) as u64) as i32;
        // SAFETY: F_SETFL on an open descriptor with plain status flags.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, keep) } != 0 {
            return Err(FileError::Errno(errno()));
        }
        Ok(fd)
    }

    /// `unlinkat(dirfd, path, flags)` for the guest: only files beneath the run dir.
    pub fn unlink(&self, dirfd: i32, path: &[u8], flags: u64) -> Result<(), FileError> {
        let shown = String::from_utf8_lossy(path).into_owned();
        if flags != 0 {
            return Err(refused(format!("unlinkat flags {flags:#x} on {shown}")));
        }
        let rel = self.relative(dirfd, path)?;
        let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&b""[..], rel),
        };
        if name.is_empty() || name == b"." || name == b".." {
            return Err(refused(format!("{shown} does not name a file")));
        }
        let parent_fd;
        let at = if parent.is_empty() {
            self.dir.as_raw_fd()
        } else {
            let flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
            parent_fd = self.openat2(self.dir.as_raw_fd(), parent, flags, 0, &shown)?;
            parent_fd.as_raw_fd()
        };
        let c = CString::new(name).map_err(|_| FileError::Errno(libc::EINVAL))?;
        // SAFETY: `at` is an open directory descriptor and `c` a NUL-terminated single name,
        // so the kernel removes an entry of that directory and follows nothing.
        if unsafe { libc::unlinkat(at, c.as_ptr(), 0) } != 0 {
            return Err(FileError::Errno(errno()));
        }
        Ok(())
    }
}

fn trim_slashes(p: &[u8]) -> &[u8] {
    let n = p.iter().take_while(|&&b| b == b'/').count();
    &p[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_dir() -> (tempfile::TempDir, RunDir) {
        let d = tempfile::tempdir().unwrap();
        let r = RunDir::open(d.path(), 1 << 20).unwrap();
        (d, r)
    }

    fn abs(d: &tempfile::TempDir, name: &str) -> Vec<u8> {
        d.path().join(name).as_os_str().as_bytes().to_vec()
    }

    const RW_CREATE: u64 = (libc::O_RDWR | libc::O_CREAT) as u64;

    #[test]
    fn a_file_beneath_the_run_dir_opens_by_absolute_and_relative_path() {
        let (d, r) = run_dir();
        r.open_file(libc::AT_FDCWD, &abs(&d, "a"), RW_CREATE, 0o600).unwrap();
        assert!(d.path().join("a").is_file());
        r.open_file(libc::AT_FDCWD, b"a", libc::O_RDONLY as u64, 0).unwrap();
        r.unlink(libc::AT_FDCWD, &abs(&d, "a"), 0).unwrap();
        assert!(!d.path().join("a").exists());
    }

    #[test]
    fn open_rejects_paths_outside_the_run_dir() {
        let (_d, r) = run_dir();
        for p in [&b"/etc/passwd"[..], b"../../x", b"/proc/self/mem"] {
            let e = r.open_file(libc::AT_FDCWD, p, libc::O_RDONLY as u64, 0).unwrap_err();
            assert!(matches!(e, FileError::Refused(_)), "{}: {e:?}", String::from_utf8_lossy(p));
        }
    }

    #[test]
    fn open_rejects_a_sibling_sharing_the_prefix() {
        let (d, r) = run_dir();
        let sibling = format!("{}-other/x", d.path().display());
        let e = r.open_file(libc::AT_FDCWD, sibling.as_bytes(), libc::O_RDONLY as u64, 0).unwrap_err();
        assert!(matches!(e, FileError::Refused(_)));
    }

    #[test]
    fn open_rejects_a_symlink_planted_in_the_run_dir() {
        let (d, r) = run_dir();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).unwrap();
        let e = r.open_file(libc::AT_FDCWD, b"link", libc::O_RDONLY as u64, 0).unwrap_err();
        assert!(matches!(e, FileError::Refused(_)), "{e:?}");
    }

    #[test]
    fn open_rejects_fifos_and_directories() {
        let (d, r) = run_dir();
        let fifo = CString::new(abs(&d, "fifo")).unwrap();
        // SAFETY: NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::fs::create_dir(d.path().join("sub")).unwrap();
        for p in [&b"fifo"[..], b"sub"] {
            let e = r.open_file(libc::AT_FDCWD, p, libc::O_RDONLY as u64, 0).unwrap_err();
            assert!(matches!(e, FileError::Refused(_)), "{e:?}");
        }
    }

    #[test]
    fn open_rejects_o_path_and_o_tmpfile() {
        let (_d, r) = run_dir();
        for f in [libc::O_PATH, libc::O_TMPFILE | libc::O_RDWR] {
            let e = r.open_file(libc::AT_FDCWD, b"x", f as u64, 0).unwrap_err();
            assert!(matches!(e, FileError::Refused(_)));
        }
    }

    #[test]
    fn unlink_cannot_climb_out() {
        let (_d, r) = run_dir();
        assert!(matches!(r.unlink(libc::AT_FDCWD, b"../x", 0), Err(FileError::Refused(_))));
        assert!(matches!(r.unlink(libc::AT_FDCWD, b"sub/..", 0), Err(FileError::Refused(_))));
        assert!(matches!(r.unlink(libc::AT_FDCWD, b"/tmp/x", 0), Err(FileError::Refused(_))));
    }
}
