//! The container's root filesystem: an overlay of the read-only image layers under a fresh upper
//! dir (on a tmpfs private to the container's mount namespace, so it vanishes with it),
//! `pivot_root`, /proc, a minimal /dev, /dev/pts, read-only /sys, /tmp and runc's masked paths.

pub mod ops;

use crate::config::MountSpec;
pub use ops::Op;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Paths runc hides by default (a tmpfs over directories, /dev/null over files).
pub const DEFAULT_MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths runc makes read-only by default.
pub const DEFAULT_READONLY: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Character devices every container gets: (name, major, minor).
const DEVICES: &[(&str, u32, u32)] =
    &[("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

/// Errors building the rootfs plan.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("path {0} contains a NUL byte")]
    Nul(PathBuf),
    #[error("mount destination {0} must be an absolute path without `..`")]
    BadDestination(PathBuf),
    #[error("unsupported mount kind `{kind}` for {destination} (bind|tmpfs)")]
    MountKind { kind: String, destination: PathBuf },
    #[error("bind mount source {0} does not exist")]
    MissingSource(PathBuf),
    #[error("the container has no layers to mount")]
    NoLayers,
    #[error("overlay lower dir {0} contains `:` or `,`, which overlayfs cannot take")]
    LowerDirName(PathBuf),
}

/// What the rootfs should look like.
pub struct Spec<'a> {
    /// The scratch directory the child mounts its private tmpfs on (see [`scratch_dir`]).
    pub scratch: &'a Path,
    /// Layer directories, bottom first.
    pub lowers: &'a [PathBuf],
    pub userns: bool,
    pub ipc_ns: bool,
    pub net_ns: bool,
    pub masked: &'a [String],
    pub readonly: &'a [String],
    pub mounts: &'a [MountSpec],
    pub readonly_rootfs: bool,
}

fn c(p: &Path) -> Result<CString, Error> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Nul(p.to_path_buf()))
}

fn cs(s: &str) -> CString {
    // Only called with literals and formatted numbers, which have no NUL bytes.
    CString::new(s).unwrap_or_default()
}

/// `root` joined with an absolute container path.
fn inside(root: &Path, path: &Path) -> Result<PathBuf, Error> {
    if !path.is_absolute() || path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(Error::BadDestination(path.to_path_buf()));
    }
    Ok(root.join(path.strip_prefix("/").unwrap_or(path)))
}

fn mount(src: &str, target: &Path, fstype: &str, flags: libc::c_ulong, data: &str) -> Result<Op, Error> {
    Ok(Op::Mount {
        src: cs(src),
        target: c(target)?,
        fstype: cs(fstype),
        flags,
        data: (!data.is_empty()).then(|| cs(data)),
    })
}

fn mkdir(p: &Path, mode: libc::mode_t) -> Result<Op, Error> {
    Ok(Op::Mkdir { path: c(p)?, mode })
}

/// The directory every container mounts its scratch tmpfs on (upper, work and merged dirs
/// live in it). One shared host directory serves all containers because each mount happens in
/// the container's own mount namespace. Deliberately not per container: removing a directory
/// that is (or was, until an RCU grace period passes) a mount point in a dying namespace makes
/// the kernel detach mounts and wait for RCU, which cost 4-8 ms per run here.
pub fn scratch_dir(run_root: &Path) -> PathBuf {
    run_root.join("mnt")
}

/// Build the ordered list of steps the child performs. Mounts are made below the merged dir
/// before `pivot_root`, as runc does, so host paths (like /dev/null for masks) stay reachable.
pub fn plan(spec: &Spec<'_>) -> Result<Vec<Op>, Error> {
    use libc::{MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC};
    if spec.lowers.is_empty() {
        return Err(Error::NoLayers);
    }
    let scratch = spec.scratch.to_path_buf();
    let (upper, work, merged) = (scratch.join("upper"), scratch.join("work"), scratch.join("merged"));
    let mut ops = vec![
        // Nothing we mount may propagate back to the host.
        mount("none", Path::new("/"), "", MS_REC | MS_PRIVATE, "")?,
        mount("cvbench-scratch", &scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")?,
        mkdir(&upper, 0o755)?,
        mkdir(&work, 0o755)?,
        mkdir(&merged, 0o755)?,
    ];
    let mut lower = String::new();
    // overlayfs wants the top layer first.
    for l in spec.lowers.iter().rev() {
        let s = l.to_string_lossy();
        if s.contains(':') || s.contains(',') {
            return Err(Error::LowerDirName(l.clone()));
        }
        if !lower.is_empty() {
            lower.push(':');
        }
        lower.push_str(&s);
    }
    let mut data = format!("lowerdir={lower},upperdir={},workdir={}", upper.display(), work.display());
    if spec.userns {
        data.push_str(",userxattr");
    }
    ops.push(mount("overlay", &merged, "overlay", 0, &data)?);

    for d in ["proc", "dev", "sys", "tmp"] {
        ops.push(mkdir(&merged.join(d), 0o755)?);
    }
    ops.push(mount("proc", &merged.join("proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "")?);
    dev_ops(&mut ops, &merged.join("dev"), spec)?;
    if spec.net_ns {
        ops.push(mount("sysfs", &merged.join("sys"), "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "")?);
    } else {
        // sysfs cannot be mounted fresh without a private netns: bind the host's read-only.
        ops.push(mount("/sys", &merged.join("sys"), "", MS_BIND | MS_REC | MS_RDONLY, "")?);
    }
    ops.push(mount("tmpfs", &merged.join("tmp"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")?);

    for m in spec.mounts {
        let target = inside(&merged, &m.destination)?;
        match m.kind.as_str() {
            "bind" => {
                let meta = std::fs::metadata(&m.source).map_err(|_| Error::MissingSource(m.source.clone()))?;
                if meta.is_dir() {
                    ops.push(mkdir(&target, 0o755)?);
                } else {
                    ops.push(Op::Touch { path: c(&target)? });
                }
                let ro = if m.readonly { MS_RDONLY } else { 0 };
                ops.push(Op::Mount {
                    src: c(&m.source)?,
                    target: c(&target)?,
                    fstype: cs(""),
                    flags: MS_BIND | MS_REC | ro,
                    data: None,
                });
            }
            "tmpfs" => {
                ops.push(mkdir(&target, 0o755)?);
                let ro = if m.readonly { MS_RDONLY } else { 0 };
                ops.push(mount("tmpfs", &target, "tmpfs", MS_NOSUID | MS_NODEV | ro, "mode=755")?);
            }
            other => return Err(Error::MountKind { kind: other.into(), destination: m.destination.clone() }),
        }
    }

    let null = c(&merged.join("dev/null"))?;
    for p in spec.masked {
        ops.push(Op::Mask { path: c(&inside(&merged, Path::new(p))?)?, null: null.clone() });
    }
    for p in spec.readonly {
        ops.push(Op::Readonly { path: c(&inside(&merged, Path::new(p))?)? });
    }
    ops.push(Op::PivotRoot { new_root: c(&merged)? });
    if spec.readonly_rootfs {
        ops.push(Op::ReadonlyRoot);
    }
    Ok(ops)
}

fn dev_ops(ops: &mut Vec<Op>, dev: &Path, spec: &Spec<'_>) -> Result<(), Error> {
    use libc::{MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_STRICTATIME};
    ops.push(mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k")?);
    for (name, major, minor) in DEVICES {
        let path = dev.join(name);
        if spec.userns {
            // mknod is not allowed in a user namespace: bind the host's node instead.
            ops.push(Op::Touch { path: c(&path)? });
            ops.push(Op::Mount {
                src: c(&Path::new("/dev").join(name))?,
                target: c(&path)?,
                fstype: cs(""),
                flags: MS_BIND,
                data: None,
            });
        } else {
            ops.push(Op::Mknod { path: c(&path)?, mode: 0o666, dev: libc::makedev(*major, *minor) });
        }
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        ops.push(Op::Symlink { target: cs(target), link: c(&dev.join(link))? });
    }
    for d in ["pts", "shm"] {
        ops.push(mkdir(&dev.join(d), 0o755)?);
    }
    ops.push(mount(
        "devpts",
        &dev.join("pts"),
        "devpts",
        MS_NOSUID | MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )?);
    ops.push(mount("shm", &dev.join("shm"), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")?);
    if spec.ipc_ns {
        ops.push(mkdir(&dev.join("mqueue"), 0o755)?);
        ops.push(mount("mqueue", &dev.join("mqueue"), "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, "")?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(lowers: &'a [PathBuf], mounts: &'a [MountSpec], masked: &'a [String]) -> Spec<'a> {
        Spec {
            scratch: Path::new("/run/x/mnt"),
            lowers,
            userns: false,
            ipc_ns: true,
            net_ns: true,
            masked,
            readonly: &[],
            mounts,
            readonly_rootfs: false,
        }
    }

    #[test]
    fn plan_stacks_layers_top_first() {
        let lowers = vec![PathBuf::from("/l/bottom"), PathBuf::from("/l/top")];
        let ops = plan(&spec(&lowers, &[], &[])).unwrap();
        let text: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
        let overlay = text.iter().find(|t| t.contains("overlay")).unwrap();
        assert!(overlay.contains("lowerdir=/l/top:/l/bottom"), "{overlay}");
        assert!(text.last().unwrap().contains("pivot_root"));
    }

    #[test]
    fn plan_rejects_relative_mount_destination() {
        let lowers = vec![PathBuf::from("/l")];
        let mounts = vec![MountSpec {
            kind: "tmpfs".into(),
            source: "tmpfs".into(),
            destination: "../etc".into(),
            readonly: false,
        }];
        assert!(matches!(plan(&spec(&lowers, &mounts, &[])), Err(Error::BadDestination(_))));
    }

    #[test]
    fn plan_masks_before_pivot() {
        let lowers = vec![PathBuf::from("/l")];
        let masked = vec!["/proc/kcore".to_string()];
        let ops = plan(&spec(&lowers, &[], &masked)).unwrap();
        let mask = ops.iter().position(|o| matches!(o, Op::Mask { .. })).unwrap();
        let pivot = ops.iter().position(|o| matches!(o, Op::PivotRoot { .. })).unwrap();
        assert!(mask < pivot);
    }

    #[test]
    fn plan_requires_layers() {
        assert!(matches!(plan(&spec(&[], &[], &[])), Err(Error::NoLayers)));
    }
}
