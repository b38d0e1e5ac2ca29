//! `tmpcopyup` (the runc/crun mount extension Docker sends for `--tmpfs` on a read-only
//! container): copy a directory tree into the tmpfs just mounted over it.
//!
//! This runs in the container child between clone and exec, so it only makes
//! async-signal-safe calls: raw system calls relative to directory fds, fixed-size buffers on
//! the stack, no allocation, no path strings built. Symlinks inside the tree are copied as
//! links and never followed.

use std::ffi::CStr;
use std::os::fd::RawFd;

/// Deepest directory nesting copied; deeper trees fail with ELOOP rather than exhaust the
/// child's stack (each level holds one small getdents buffer and two fds).
const MAX_DEPTH: u32 = 64;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

fn check(ret: libc::c_long) -> Result<libc::c_long, i32> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret)
    }
}

/// An fd closed when dropped (no allocation involved).
struct Fd(RawFd);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: closing an fd this struct opened and owns.
        unsafe { libc::close(self.0) };
    }
}

fn openat(dir: RawFd, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> Result<Fd, i32> {
    // SAFETY: `name` is NUL-terminated; `dir` is an open directory fd.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOFOLLOW, mode) };
    check(fd as libc::c_long).map(|_| Fd(fd))
}

/// Open `path` as a directory (the tree to copy, before something is mounted over it).
pub fn open_dir(path: &CStr) -> Result<RawFd, i32> {
    // SAFETY: `path` is NUL-terminated.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    check(fd as libc::c_long).map(|_| fd)
}

/// Copy the content of directory `src` into directory `dst`: regular files (data), dirs,
/// symlinks, fifos and device nodes, with their modes, owners and times. Sockets are skipped.
pub fn copy_tree(src: RawFd, dst: RawFd) -> Result<(), i32> {
    copy_dir(src, dst, 0)
}

/// The fixed part of a `struct linux_dirent64` before `d_name`.
const DIRENT_NAME_OFFSET: usize = 19;

fn copy_dir(src: RawFd, dst: RawFd, depth: u32) -> Result<(), i32> {
    if depth > MAX_DEPTH {
        return Err(libc::ELOOP);
    }
    // u64 elements: getdents64 records are 8-byte aligned.
    let mut buf = [0u64; 128];
    loop {
        // SAFETY: getdents64 into a buffer of the length passed.
        let n =
            check(unsafe { libc::syscall(libc::SYS_getdents64, src, buf.as_mut_ptr(), std::mem::size_of_val(&buf)) })?
                as usize;
        if n == 0 {
            return Ok(());
        }
        // SAFETY: viewing the initialized u64 buffer as bytes.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
        let mut off = 0;
        while off + DIRENT_NAME_OFFSET <= n {
            let reclen = u16::from_ne_bytes([bytes[off + 16], bytes[off + 17]]) as usize;
            if reclen == 0 || off + reclen > n {
                return Err(libc::EIO);
            }
            let name =
                CStr::from_bytes_until_nul(&bytes[off + DIRENT_NAME_OFFSET..off + reclen]).map_err(|_| libc::EIO)?;
            off += reclen;
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            copy_entry(src, dst, name, depth)?;
        }
    }
}

fn lstat_at(dir: RawFd, name: &CStr) -> Result<libc::stat, i32> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated and `st` a valid out-pointer.
    check(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } as libc::c_long)?;
    Ok(st)
}

fn times(st: &libc::stat) -> [libc::timespec; 2] {
    [
        libc::timespec { tv_sec: st.st_atime, tv_nsec: st.st_atime_nsec },
        libc::timespec { tv_sec: st.st_mtime, tv_nsec: st.st_mtime_nsec },
    ]
}

/// Owner, then mode (a chown clears set-id bits), then times of an open copy.
fn finish(fd: RawFd, st: &libc::stat) -> Result<(), i32> {
    let t = times(st);
    // SAFETY: plain syscalls on an fd we hold; `t` is a two-element timespec array.
    unsafe {
        check(libc::fchown(fd, st.st_uid, st.st_gid) as libc::c_long)?;
        check(libc::fchmod(fd, st.st_mode & 0o7777) as libc::c_long)?;
        check(libc::futimens(fd, t.as_ptr()) as libc::c_long)?;
    }
    Ok(())
}

fn copy_entry(src: RawFd, dst: RawFd, name: &CStr, depth: u32) -> Result<(), i32> {
    let st = lstat_at(src, name)?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            // SAFETY: `name` is NUL-terminated.
            check(unsafe { libc::mkdirat(dst, name.as_ptr(), 0o700) } as libc::c_long)?;
            let s = openat(src, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            let d = openat(dst, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            copy_dir(s.0, d.0, depth + 1)?;
            finish(d.0, &st)
        }
        libc::S_IFREG => {
            let s = openat(src, name, libc::O_RDONLY, 0)?;
            let d = openat(dst, name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)?;
            loop {
                // SAFETY: sendfile between two fds we hold, from the current offset.
                let n = check(unsafe { libc::sendfile(d.0, s.0, std::ptr::null_mut(), 1 << 30) } as libc::c_long)?;
                if n == 0 {
                    break;
                }
            }
            finish(d.0, &st)
        }
        libc::S_IFLNK => copy_symlink(src, dst, name, &st),
        libc::S_IFIFO | libc::S_IFCHR | libc::S_IFBLK => {
            // SAFETY: `name` is NUL-terminated; the node gets the source's type and device.
            check(unsafe { libc::mknodat(dst, name.as_ptr(), st.st_mode & libc::S_IFMT | 0o600, st.st_rdev) }
                as libc::c_long)?;
            // By name, not by fd: opening a fifo would block.
            let t = times(&st);
            // SAFETY: NUL-terminated name; `t` is a two-element timespec array.
            unsafe {
                check(
                    libc::fchownat(dst, name.as_ptr(), st.st_uid, st.st_gid, libc::AT_SYMLINK_NOFOLLOW) as libc::c_long
                )?;
                check(libc::fchmodat(dst, name.as_ptr(), st.st_mode & 0o7777, 0) as libc::c_long)?;
                check(libc::utimensat(dst, name.as_ptr(), t.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) as libc::c_long)?;
            }
            Ok(())
        }
        // A socket is bound to a process, not content: nothing to copy.
        _ => Ok(()),
    }
}

/// Kept out of `copy_entry` so the link buffer is not on the stack of every directory level.
#[inline(never)]
fn copy_symlink(src: RawFd, dst: RawFd, name: &CStr, st: &libc::stat) -> Result<(), i32> {
    let mut target = [0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: readlinkat into a buffer one byte longer than the length passed.
    let n = check(unsafe { libc::readlinkat(src, name.as_ptr(), target.as_mut_ptr().cast(), libc::PATH_MAX as usize) }
        as libc::c_long)? as usize;
    if n >= libc::PATH_MAX as usize {
        return Err(libc::ENAMETOOLONG);
    }
    target[n] = 0;
    let t = times(st);
    // SAFETY: both strings are NUL-terminated; `t` is a two-element timespec array.
    unsafe {
        check(libc::symlinkat(target.as_ptr().cast(), dst, name.as_ptr()) as libc::c_long)?;
        check(libc::fchownat(dst, name.as_ptr(), st.st_uid, st.st_gid, libc::AT_SYMLINK_NOFOLLOW) as libc::c_long)?;
        check(libc::utimensat(dst, name.as_ptr(), t.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) as libc::c_long)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn copy_tree_keeps_files_dirs_symlinks_modes_and_owners() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: copy_tree_keeps_files_dirs_symlinks_modes_and_owners needs root (chown)");
            return;
        }
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let s = src.path();
        fs::write(s.join("a"), b"alpha").unwrap();
        // Owner first: a chown clears the set-uid bit.
        std::os::unix::fs::chown(s.join("a"), Some(1234), Some(5678)).unwrap();
        fs::set_permissions(s.join("a"), fs::Permissions::from_mode(0o4751)).unwrap();
        fs::create_dir_all(s.join("d/e")).unwrap();
        fs::write(s.join("d/e/deep"), vec![7u8; 300_000]).unwrap();
        fs::set_permissions(s.join("d"), fs::Permissions::from_mode(0o710)).unwrap();
        std::os::unix::fs::chown(s.join("d"), Some(42), Some(43)).unwrap();
        std::os::unix::fs::symlink("../a", s.join("d/up")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", s.join("abs")).unwrap();
        nix::unistd::mkfifo(&s.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap();
        let (sf, df) = (fs::File::open(s).unwrap(), fs::File::open(dst.path()).unwrap());

        copy_tree(sf.as_raw_fd(), df.as_raw_fd()).unwrap();

        let d = dst.path();
        let meta = |p: &str| fs::symlink_metadata(d.join(p)).unwrap();
        assert_eq!(fs::read(d.join("a")).unwrap(), b"alpha");
        assert_eq!((meta("a").mode() & 0o7777, meta("a").uid(), meta("a").gid()), (0o4751, 1234, 5678));
        assert_eq!((meta("d").mode() & 0o7777, meta("d").uid(), meta("d").gid()), (0o710, 42, 43));
        assert_eq!(fs::read(d.join("d/e/deep")).unwrap(), vec![7u8; 300_000]);
        assert_eq!(fs::read_link(d.join("d/up")).unwrap(), std::path::Path::new("../a"));
        assert_eq!(fs::read_link(d.join("abs")).unwrap(), std::path::Path::new("/etc/passwd"), "copied, not followed");
        assert!(meta("abs").file_type().is_symlink());
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&meta("fifo").file_type()));
        assert_eq!(meta("fifo").mode() & 0o7777, 0o640);
        assert_eq!(meta("d/e/deep").mtime(), fs::metadata(s.join("d/e/deep")).unwrap().mtime());
    }
}
