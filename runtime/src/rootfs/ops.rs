//! Mount-namespace operations the container child performs between clone and exec.
//!
//! The parent builds a `Vec<Op>` with every string already a `CString`; the child runs them
//! with plain system calls only (no allocation, no locks), because it is the child of a
//! possibly multi-threaded process and may only make async-signal-safe calls.

use std::ffi::{CStr, CString};
use std::fmt;

/// One step of rootfs setup.
pub enum Op {
    /// mount(2) with everything given.
    Mount { src: CString, target: CString, fstype: CString, flags: libc::c_ulong, data: Option<CString> },
    /// `tmpcopyup`: mount a tmpfs on `target` (writable), copy what the directory held before
    /// into it ([`super::copyup`]), then remount it with `flags` when they ask for read-only.
    TmpfsCopyUp { target: CString, flags: libc::c_ulong, data: Option<CString> },
    /// mkdir(2); an existing directory is fine.
    Mkdir { path: CString, mode: libc::mode_t },
    /// mknod(2) of a device node (`kind`: S_IFCHR, S_IFBLK or S_IFIFO), then chmod to `mode`
    /// (umask-proof) and chown to `owner` when given.
    Mknod { path: CString, kind: libc::mode_t, mode: libc::mode_t, dev: libc::dev_t, owner: Option<(u32, u32)> },
    /// Write `data` to an existing file (a sysctl under /proc/sys).
    Write { path: CString, data: CString },
    /// Change the propagation of the mount at `path` (MS_SHARED/SLAVE/PRIVATE/UNBINDABLE,
    /// maybe with MS_REC).
    Propagate { path: CString, flags: libc::c_ulong },
    /// Create an empty file to bind-mount over; an existing one is fine.
    Touch { path: CString },
    /// symlink(2); an existing entry is fine.
    Symlink { target: CString, link: CString },
    /// chdir(2): relative paths of the following steps (an overlay's short lowerdirs) start here.
    Chdir { path: CString },
    /// Hide a path like runc: a read-only tmpfs over directories, /dev/null over files.
    /// A missing path is skipped. `null` is the /dev/null to bind.
    Mask { path: CString, null: CString },
    /// Bind a path onto itself and remount it read-only. A missing path is skipped.
    Readonly { path: CString },
    /// chdir into `new_root`, pivot_root(".", "."), detach the old root, chdir("/").
    PivotRoot { new_root: CString },
    /// Remount "/" read-only (after pivot_root).
    ReadonlyRoot,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Mount { src, target, fstype, data, .. } => write!(
                f,
                "mount {fstype:?} {src:?} on {target:?} ({})",
                data.as_ref().map(|d| d.to_string_lossy().into_owned()).unwrap_or_default()
            ),
            Op::TmpfsCopyUp { target, .. } => write!(f, "mount a tmpfs on {target:?} and copy up its content"),
            Op::Mkdir { path, .. } => write!(f, "mkdir {path:?}"),
            Op::Mknod { path, .. } => write!(f, "mknod {path:?}"),
            Op::Write { path, data } => write!(f, "write {data:?} to {path:?}"),
            Op::Propagate { path, flags } => write!(f, "set propagation {flags:#x} on {path:?}"),
            Op::Touch { path } => write!(f, "create {path:?}"),
            Op::Symlink { target, link } => write!(f, "symlink {link:?} -> {target:?}"),
            Op::Chdir { path } => write!(f, "chdir {path:?}"),
            Op::Mask { path, .. } => write!(f, "mask {path:?}"),
            Op::Readonly { path } => write!(f, "make {path:?} read-only"),
            Op::PivotRoot { new_root } => write!(f, "pivot_root into {new_root:?}"),
            Op::ReadonlyRoot => write!(f, "remount / read-only"),
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

fn check(ret: libc::c_int) -> Result<(), i32> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn ok_if_exists(ret: libc::c_int) -> Result<(), i32> {
    match check(ret) {
        Err(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// lstat `path`: Ok(Some(is_dir)), Ok(None) when missing.
fn probe(path: &CStr) -> Result<Option<bool>, i32> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is a valid out-pointer.
    match check(unsafe { libc::lstat(path.as_ptr(), &mut st) }) {
        Ok(()) => Ok(Some(st.st_mode & libc::S_IFMT == libc::S_IFDIR)),
        Err(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Mount flags currently in force on `path` (statfs f_flags), mapped to MS_* bits that must be
/// kept when remounting a bind mount read-only (the kernel refuses to drop locked ones).
fn locked_flags(path: &CStr) -> libc::c_ulong {
    // SAFETY: an all-zero `statvfs` is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` a valid out-pointer; glibc fills f_flag from
    // the statfs(2) f_flags field (one system call).
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } < 0 {
        return 0;
    }
    let f = st.f_flag as libc::c_ulong;
    let mut out = 0;
    for (st_bit, ms_bit) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f & st_bit != 0 {
            out |= ms_bit;
        }
    }
    out
}

fn mount(
    src: &CStr,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Result<(), i32> {
    // SAFETY: all strings are NUL-terminated and outlive the call; null pointers are allowed
    // for fstype and data.
    check(unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    })
}

impl Op {
    /// Perform the step. Async-signal-safe: system calls only, no allocation.
    pub fn run(&self) -> Result<(), i32> {
        match self {
            Op::Mount { src, target, fstype, flags, data } => {
                let fstype = (!fstype.as_bytes().is_empty()).then_some(fstype.as_c_str());
                mount(src, target, fstype, *flags, data.as_deref())?;
                // Bind mounts ignore every flag but MS_REC on the first call: remount to apply them.
                let extra = flags & !(libc::MS_BIND | libc::MS_REC);
                if flags & libc::MS_BIND != 0 && extra != 0 {
                    let keep = locked_flags(target);
                    mount(src, target, None, libc::MS_BIND | libc::MS_REMOUNT | extra | keep, None)?;
                }
                Ok(())
            }
            Op::TmpfsCopyUp { target, flags, data } => {
                // The fd keeps the covered directory reachable once the tmpfs hides it.
                let src = super::copyup::open_dir(target)?;
                let tmpfs = c"tmpfs";
                let copied = mount(tmpfs, target, Some(tmpfs), flags & !libc::MS_RDONLY, data.as_deref())
                    .and_then(|()| super::copyup::open_dir(target))
                    .and_then(|dst| {
                        let r = super::copyup::copy_tree(src, dst);
                        // SAFETY: closing the fd opened just above.
                        unsafe { libc::close(dst) };
                        r
                    });
                // SAFETY: closing the fd opened above.
                unsafe { libc::close(src) };
                copied?;
                if flags & libc::MS_RDONLY != 0 {
                    mount(tmpfs, target, None, libc::MS_REMOUNT | flags, data.as_deref())?;
                }
                Ok(())
            }
            // SAFETY: `path` is NUL-terminated.
            Op::Mkdir { path, mode } => ok_if_exists(unsafe { libc::mkdir(path.as_ptr(), *mode) }),
            Op::Mknod { path, kind, mode, dev, owner } => {
                // SAFETY: `path` is NUL-terminated.
                ok_if_exists(unsafe { libc::mknod(path.as_ptr(), *kind | *mode, *dev) })?;
                // SAFETY: `path` is NUL-terminated.
                check(unsafe { libc::chmod(path.as_ptr(), *mode) })?;
                if let Some((uid, gid)) = owner {
                    // SAFETY: `path` is NUL-terminated.
                    check(unsafe { libc::chown(path.as_ptr(), *uid, *gid) })?;
                }
                Ok(())
            }
            Op::Write { path, data } => {
                // SAFETY: `path` is NUL-terminated; the fd is closed right after the write.
                let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
                check(fd)?;
                let bytes = data.as_bytes();
                // SAFETY: writing the bytes of a live CString to the fd opened above.
                let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
                let e = errno();
                // SAFETY: closing our own fd.
                unsafe { libc::close(fd) };
                if n < 0 {
                    return Err(e);
                }
                Ok(())
            }
            Op::Propagate { path, flags } => mount(c"none", path, None, *flags, None),
            Op::Touch { path } => {
                // SAFETY: `path` is NUL-terminated; the fd is closed right away.
                let fd = unsafe { libc::open(path.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o644) };
                check(fd)?;
                // SAFETY: `fd` was just opened by us.
                unsafe { libc::close(fd) };
                Ok(())
            }
            Op::Symlink { target, link } => {
                // SAFETY: both strings are NUL-terminated.
                ok_if_exists(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) })
            }
            // SAFETY: `path` is NUL-terminated.
            Op::Chdir { path } => check(unsafe { libc::chdir(path.as_ptr()) }),
            Op::Mask { path, null } => match probe(path)? {
                None => Ok(()),
                Some(true) => {
                    let tmpfs = c"tmpfs";
                    mount(
                        tmpfs,
                        path,
                        Some(tmpfs),
                        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        None,
                    )
                }
                Some(false) => mount(null, path, None, libc::MS_BIND, None),
            },
            Op::Readonly { path } => {
                if probe(path)?.is_none() {
                    return Ok(());
                }
                mount(path, path, None, libc::MS_BIND | libc::MS_REC, None)?;
                let keep = locked_flags(path);
                mount(path, path, None, libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | keep, None)
            }
            Op::PivotRoot { new_root } => {
                let dot = c".";
                // SAFETY: NUL-terminated paths; pivot_root has no libc wrapper, so the raw
                // syscall with two string pointers is used.
                unsafe {
                    check(libc::chdir(new_root.as_ptr()))?;
                    check(libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) as i32)?;
                    // The old root is now stacked on "."; detach it.
                    check(libc::umount2(dot.as_ptr(), libc::MNT_DETACH))?;
                    check(libc::chdir(c"/".as_ptr()))
                }
            }
            Op::ReadonlyRoot => {
                let root = c"/";
                let keep = locked_flags(root);
                mount(root, root, None, libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | keep, None)
            }
        }
    }
}
