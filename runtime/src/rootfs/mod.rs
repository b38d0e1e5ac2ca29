//! The container's root filesystem: an overlay of the read-only image layers under a fresh upper
//! dir (on a tmpfs private to the container's mount namespace, so it vanishes with it),
//! `pivot_root`, /proc, a minimal /dev, /dev/pts, read-only /sys, /tmp and runc's masked paths.

pub mod copyup;
pub mod ops;

use crate::config::{DeviceNode, MountSpec};
pub use ops::Op;
use std::collections::BTreeMap;
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
    #[error("mount option `{option}` for {destination} is not supported: {reason}")]
    MountOption { option: String, destination: PathBuf, reason: &'static str },
    #[error("bind mount source {0} does not exist")]
    MissingSource(PathBuf),
    #[error("the container has no layers to mount")]
    NoLayers,
    #[error("overlay lower dir {0} contains `:` or `,`, which overlayfs cannot take")]
    LowerDirName(PathBuf),
    #[error("an image of {0} layers is deeper than one overlay mount can take")]
    TooManyLayers(usize),
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
    /// `mounts` replace the built-in /proc, /dev, /sys and /tmp (OCI bundles).
    pub exact: bool,
    /// Extra device nodes (OCI `linux.devices`).
    pub devices: &'a [DeviceNode],
    /// Dotted `/proc/sys` keys and values.
    pub sysctl: &'a BTreeMap<String, String>,
    /// Propagation flags for "/" after pivot_root (0: leave it private).
    pub root_propagation: libc::c_ulong,
    /// The container's cgroup directories (for a `cgroup` mount on a v1 host).
    pub cgroup_dirs: &'a [PathBuf],
}

/// mount(2) flags, propagation flags, the data string of mount(8)-style options and the
/// runtime extensions honoured here.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub flags: libc::c_ulong,
    pub propagation: libc::c_ulong,
    pub data: String,
    /// `tmpcopyup`: the new tmpfs starts with a copy of what the directory held.
    pub copy_up: bool,
}

/// Mount options that are runtime extensions (runc, crun), not mount(2) flags or filesystem
/// data, and not honoured here: each is refused by name rather than handed to the kernel as
/// data (EINVAL at best, silently dropped on a bind mount at worst).
const UNSUPPORTED_EXTENSIONS: &[(&str, &str)] = &[
    ("copy-symlink", "copying a symlink source instead of binding it"),
    ("idmap", "id-mapped mounts"),
    ("ridmap", "id-mapped mounts"),
    ("src-nofollow", "binding a symlink source itself"),
    ("rro", "recursive mount attributes"),
    ("rrw", "recursive mount attributes"),
    ("rnosuid", "recursive mount attributes"),
    ("rsuid", "recursive mount attributes"),
    ("rnodev", "recursive mount attributes"),
    ("rdev", "recursive mount attributes"),
    ("rnoexec", "recursive mount attributes"),
    ("rexec", "recursive mount attributes"),
    ("rnoatime", "recursive mount attributes"),
    ("ratime", "recursive mount attributes"),
    ("rrelatime", "recursive mount attributes"),
    ("rnorelatime", "recursive mount attributes"),
    ("rstrictatime", "recursive mount attributes"),
    ("rnostrictatime", "recursive mount attributes"),
    ("rnodiratime", "recursive mount attributes"),
    ("rdiratime", "recursive mount attributes"),
    ("rnosymfollow", "recursive mount attributes"),
    ("rsymfollow", "recursive mount attributes"),
];

/// Split OCI mount options into flags, propagation, filesystem data and extensions; an
/// extension not honoured here is an error naming it and `destination`.
pub fn parse_options(opts: &[String], destination: &Path) -> Result<Options, Error> {
    use libc::*;
    let mut o = Options::default();
    for opt in opts {
        if let Some((_, what)) = UNSUPPORTED_EXTENSIONS.iter().find(|(name, _)| name == opt) {
            return Err(Error::MountOption {
                option: opt.clone(),
                destination: destination.to_path_buf(),
                reason: what,
            });
        }
        let (set, clear): (c_ulong, c_ulong) = match opt.as_str() {
            "tmpcopyup" => {
                o.copy_up = true;
                (0, 0)
            }
            "notmpcopyup" => {
                o.copy_up = false;
                (0, 0)
            }
            "ro" => (MS_RDONLY, 0),
            "rw" => (0, MS_RDONLY),
            "nosuid" => (MS_NOSUID, 0),
            "suid" => (0, MS_NOSUID),
            "nodev" => (MS_NODEV, 0),
            "dev" => (0, MS_NODEV),
            "noexec" => (MS_NOEXEC, 0),
            "exec" => (0, MS_NOEXEC),
            "sync" => (MS_SYNCHRONOUS, 0),
            "async" => (0, MS_SYNCHRONOUS),
            "dirsync" => (MS_DIRSYNC, 0),
            "mand" => (MS_MANDLOCK, 0),
            "nomand" => (0, MS_MANDLOCK),
            "noatime" => (MS_NOATIME, 0),
            "atime" => (0, MS_NOATIME),
            "nodiratime" => (MS_NODIRATIME, 0),
            "diratime" => (0, MS_NODIRATIME),
            "relatime" => (MS_RELATIME, 0),
            "norelatime" => (0, MS_RELATIME),
            "strictatime" => (MS_STRICTATIME, 0),
            "nostrictatime" => (0, MS_STRICTATIME),
            "nosymfollow" => (MS_NOSYMFOLLOW, 0),
            "symfollow" => (0, MS_NOSYMFOLLOW),
            "bind" => (MS_BIND, 0),
            "rbind" => (MS_BIND | MS_REC, 0),
            "defaults" => (0, 0),
            p @ ("private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable" | "runbindable") => {
                o.propagation |= match p.trim_start_matches('r') {
                    "private" => MS_PRIVATE,
                    "shared" => MS_SHARED,
                    "slave" => MS_SLAVE,
                    _ => MS_UNBINDABLE,
                };
                if p.starts_with('r') && p != "rw" {
                    o.propagation |= MS_REC;
                }
                (0, 0)
            }
            other => {
                if !o.data.is_empty() {
                    o.data.push(',');
                }
                o.data.push_str(other);
                (0, 0)
            }
        };
        o.flags = (o.flags | set) & !clear;
    }
    Ok(o)
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

/// mount(2) copies at most one page of option data (with its NUL); a little room is left for
/// `userxattr`.
const MAX_MOUNT_DATA: usize = 4000;

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
    // overlayfs wants the top layer first.
    let mut lower = Vec::with_capacity(spec.lowers.len());
    for l in spec.lowers.iter().rev() {
        let s = l.to_string_lossy();
        if s.contains(':') || s.contains(',') {
            return Err(Error::LowerDirName(l.clone()));
        }
        lower.push(s.into_owned());
    }
    let overlay_data = |lower: &[String]| {
        format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), upper.display(), work.display())
    };
    let mut data = overlay_data(&lower);
    if data.len() >= MAX_MOUNT_DATA {
        // Deep images: the kernel copies at most one page of mount data, and 128 layers of full
        // store paths are three. As docker does, name each layer by a short symlink in the
        // scratch dir and give overlayfs paths relative to it (it resolves them at mount time).
        let links = scratch.join("l");
        ops.push(mkdir(&links, 0o700)?);
        for (i, l) in spec.lowers.iter().rev().enumerate() {
            ops.push(Op::Symlink { target: c(l)?, link: c(&links.join(i.to_string()))? });
        }
        ops.push(Op::Chdir { path: c(&scratch)? });
        let short: Vec<String> = (0..spec.lowers.len()).map(|i| format!("l/{i}")).collect();
        data = overlay_data(&short);
        if data.len() >= MAX_MOUNT_DATA {
            return Err(Error::TooManyLayers(spec.lowers.len()));
        }
    }
    if spec.userns {
        data.push_str(",userxattr");
    }
    if spec.exact && spec.lowers.len() == 1 {
        // An OCI bundle's root is the container's root itself (writes land in it, as with
        // runc): bind it rather than overlaying it.
        ops.push(Op::Mount {
            src: c(&spec.lowers[0])?,
            target: c(&merged)?,
            fstype: cs(""),
            flags: libc::MS_BIND | MS_REC,
            data: None,
        });
    } else {
        ops.push(mount("overlay", &merged, "overlay", 0, &data)?);
    }
    if spec.exact {
        exact_ops(&mut ops, &merged, spec)?;
        return Ok(ops);
    }
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

/// mkdir of every missing directory from `root` down to `target` (inclusive).
fn mkdirs(ops: &mut Vec<Op>, root: &Path, target: &Path) -> Result<(), Error> {
    let rel = target.strip_prefix(root).unwrap_or(target);
    let mut p = root.to_path_buf();
    for comp in rel.components() {
        p.push(comp);
        ops.push(mkdir(&p, 0o755)?);
    }
    Ok(())
}

/// The OCI path: the bundle's mounts in its order, then default and listed devices, sysctls,
/// masks, read-only paths, pivot_root and the root's propagation.
fn exact_ops(ops: &mut Vec<Op>, merged: &Path, spec: &Spec<'_>) -> Result<(), Error> {
    use libc::{MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC};
    for m in spec.mounts {
        let target = inside(merged, &m.destination)?;
        let o = parse_options(&m.options, &m.destination)?;
        if o.copy_up && m.kind != "tmpfs" {
            return Err(Error::MountOption {
                option: "tmpcopyup".into(),
                destination: m.destination.clone(),
                reason: "it applies to tmpfs mounts only",
            });
        }
        match m.kind.as_str() {
            "bind" => {
                let meta = std::fs::metadata(&m.source).map_err(|_| Error::MissingSource(m.source.clone()))?;
                if meta.is_dir() {
                    mkdirs(ops, merged, &target)?;
                } else {
                    if let Some(parent) = target.parent() {
                        mkdirs(ops, merged, parent)?;
                    }
                    ops.push(Op::Touch { path: c(&target)? });
                }
                ops.push(Op::Mount {
                    src: c(&m.source)?,
                    target: c(&target)?,
                    fstype: cs(""),
                    flags: o.flags | MS_BIND,
                    data: None,
                });
            }
            "sysfs" if !spec.net_ns => {
                // sysfs cannot be mounted fresh without a private netns: bind the host's.
                mkdirs(ops, merged, &target)?;
                ops.push(mount(
                    "/sys",
                    &target,
                    "",
                    MS_BIND | MS_REC | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                    "",
                )?);
            }
            "cgroup" | "cgroup2" => {
                mkdirs(ops, merged, &target)?;
                let v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
                    .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
                if let (true, false, Some(dir)) = (v2, spec.net_ns, spec.cgroup_dirs.first()) {
                    // The bound host /sys already has this cgroup2 superblock on this path, and
                    // the kernel refuses a second mount of it there (EBUSY): bind the
                    // container's own cgroup instead, which is what a cgroupns mount shows.
                    ops.push(Op::Mount {
                        src: c(dir)?,
                        target: c(&target)?,
                        fstype: cs(""),
                        flags: MS_BIND | (o.flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)),
                        data: None,
                    });
                } else if v2 {
                    ops.push(mount("cgroup2", &target, "cgroup2", o.flags, "")?);
                } else {
                    // v1: a tmpfs holding the container's own cgroup of each controller,
                    // bound read-only (as the spec's `ro` asks) or read-write.
                    ops.push(mount("tmpfs", &target, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755")?);
                    for dir in spec.cgroup_dirs {
                        let Ok(rel) = dir.strip_prefix("/sys/fs/cgroup") else { continue };
                        let Some(ctrl) = rel.components().next() else { continue };
                        let sub = target.join(ctrl);
                        ops.push(mkdir(&sub, 0o755)?);
                        ops.push(Op::Mount {
                            src: c(dir)?,
                            target: c(&sub)?,
                            fstype: cs(""),
                            flags: MS_BIND | (o.flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)),
                            data: None,
                        });
                    }
                    if o.flags & MS_RDONLY != 0 {
                        ops.push(mount(
                            "tmpfs",
                            &target,
                            "",
                            libc::MS_REMOUNT | o.flags | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                            "mode=755",
                        )?);
                    }
                }
            }
            "tmpfs" if o.copy_up => {
                mkdirs(ops, merged, &target)?;
                let data = (!o.data.is_empty()).then(|| cs(&o.data));
                ops.push(Op::TmpfsCopyUp { target: c(&target)?, flags: o.flags, data });
            }
            kind @ ("tmpfs" | "proc" | "sysfs" | "mqueue" | "devpts") => {
                mkdirs(ops, merged, &target)?;
                let src = m.source.to_string_lossy();
                ops.push(mount(&src, &target, kind, o.flags, &o.data)?);
            }
            other => return Err(Error::MountKind { kind: other.into(), destination: m.destination.clone() }),
        }
        if o.propagation != 0 {
            ops.push(Op::Propagate { path: c(&target)?, flags: o.propagation });
        }
    }
    let dev = merged.join("dev");
    ops.push(mkdir(&dev, 0o755)?);
    default_devices(ops, &dev, spec)?;
    for d in spec.devices {
        let target = inside(merged, &d.path)?;
        if let Some(parent) = target.parent() {
            mkdirs(ops, merged, parent)?;
        }
        let kind = match d.kind {
            'b' => libc::S_IFBLK,
            'p' => libc::S_IFIFO,
            _ => libc::S_IFCHR,
        };
        let (major, minor) = (d.major.max(0) as u32, d.minor.max(0) as u32);
        if spec.userns {
            let host = Path::new("/dev").join(d.path.strip_prefix("/dev").unwrap_or(&d.path));
            ops.push(Op::Touch { path: c(&target)? });
            ops.push(Op::Mount { src: c(&host)?, target: c(&target)?, fstype: cs(""), flags: MS_BIND, data: None });
        } else {
            ops.push(Op::Mknod {
                path: c(&target)?,
                kind,
                mode: (d.mode & 0o7777) as libc::mode_t,
                dev: libc::makedev(major, minor),
                owner: Some((d.uid, d.gid)),
            });
        }
    }
    for (k, v) in spec.sysctl {
        let path = merged.join("proc/sys").join(k.replace('.', "/"));
        ops.push(Op::Write { path: c(&path)?, data: CString::new(v.as_str()).map_err(|_| Error::Nul(path.clone()))? });
    }
    let null = c(&dev.join("null"))?;
    for p in spec.masked {
        ops.push(Op::Mask { path: c(&inside(merged, Path::new(p))?)?, null: null.clone() });
    }
    for p in spec.readonly {
        ops.push(Op::Readonly { path: c(&inside(merged, Path::new(p))?)? });
    }
    ops.push(Op::PivotRoot { new_root: c(merged)? });
    if spec.readonly_rootfs {
        ops.push(Op::ReadonlyRoot);
    }
    if spec.root_propagation != 0 {
        ops.push(Op::Propagate { path: cs("/"), flags: spec.root_propagation });
    }
    Ok(())
}

/// The nodes every container gets and the /dev symlinks (skipped where they exist).
fn default_devices(ops: &mut Vec<Op>, dev: &Path, spec: &Spec<'_>) -> Result<(), Error> {
    for (name, major, minor) in DEVICES {
        let path = dev.join(name);
        if spec.userns {
            // mknod is not allowed in a user namespace: bind the host's node instead.
            ops.push(Op::Touch { path: c(&path)? });
            ops.push(Op::Mount {
                src: c(&Path::new("/dev").join(name))?,
                target: c(&path)?,
                fstype: cs(""),
                flags: libc::MS_BIND,
                data: None,
            });
        } else {
            ops.push(Op::Mknod {
                path: c(&path)?,
                kind: libc::S_IFCHR,
                mode: 0o666,
                dev: libc::makedev(*major, *minor),
                owner: None,
            });
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
    Ok(())
}

/// The default /dev: a tmpfs with the default nodes and links, devpts, shm (and mqueue with
/// a private IPC namespace).
fn dev_ops(ops: &mut Vec<Op>, dev: &Path, spec: &Spec<'_>) -> Result<(), Error> {
    use libc::{MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_STRICTATIME};
    ops.push(mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k")?);
    default_devices(ops, dev, spec)?;
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
            exact: false,
            devices: &[],
            sysctl: &EMPTY,
            root_propagation: 0,
            cgroup_dirs: &[],
        }
    }

    static EMPTY: BTreeMap<String, String> = BTreeMap::new();

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let opts: Vec<String> = ["nosuid", "ro", "rw", "noexec", "rslave", "mode=755", "size=65536k"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = parse_options(&opts, Path::new("/x")).unwrap();
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_NOEXEC);
        assert_eq!(o.propagation, libc::MS_SLAVE | libc::MS_REC);
        assert_eq!(o.data, "mode=755,size=65536k");
        assert!(!o.copy_up);
    }

    #[test]
    fn tmpcopyup_is_an_extension_not_mount_data() {
        let opts: Vec<String> = ["nosuid", "tmpcopyup", "mode=1777"].iter().map(|s| s.to_string()).collect();
        let o = parse_options(&opts, Path::new("/x")).unwrap();
        assert!(o.copy_up);
        assert_eq!(o.data, "mode=1777");
        let off: Vec<String> = ["tmpcopyup", "notmpcopyup"].iter().map(|s| s.to_string()).collect();
        assert!(!parse_options(&off, Path::new("/x")).unwrap().copy_up);
    }

    #[test]
    fn unsupported_extensions_are_refused_by_option_and_destination() {
        for opt in ["idmap", "copy-symlink", "rro"] {
            let err = parse_options(&[opt.to_string()], Path::new("/data")).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&format!("`{opt}`")) && msg.contains("/data"), "{msg}");
        }
    }

    #[test]
    fn tmpcopyup_on_a_bind_mount_is_refused() {
        let lowers = vec![PathBuf::from("/l")];
        let mounts = vec![MountSpec {
            kind: "bind".into(),
            source: "/".into(),
            destination: "/data".into(),
            readonly: false,
            options: vec!["rbind".into(), "tmpcopyup".into()],
        }];
        let mut sp = spec(&lowers, &mounts, &[]);
        sp.exact = true;
        let err = plan(&sp).err().expect("refused");
        assert!(matches!(&err, Error::MountOption { option, .. } if option == "tmpcopyup"), "{err}");
    }

    #[test]
    fn exact_plan_keeps_the_bundle_mount_order() {
        let lowers = vec![PathBuf::from("/l")];
        let m = |kind: &str, dest: &str| MountSpec {
            kind: kind.into(),
            source: kind.into(),
            destination: dest.into(),
            readonly: false,
            options: vec!["nosuid".into()],
        };
        let mounts = vec![m("proc", "/proc"), m("tmpfs", "/dev"), m("devpts", "/dev/pts")];
        let mut sp = spec(&lowers, &mounts, &[]);
        sp.exact = true;
        let text: Vec<String> = plan(&sp).unwrap().iter().map(|o| o.to_string()).collect();
        let pos = |needle: &str| text.iter().position(|t| t.contains(needle)).unwrap();
        assert!(pos("\"proc\"") < pos("\"tmpfs\" \"tmpfs\" on \"/run/x/mnt/merged/dev\""), "{text:#?}");
        assert!(pos("devpts") < pos("mknod \"/run/x/mnt/merged/dev/null\""), "{text:#?}");
        assert!(!text.iter().any(|t| t.contains("merged/tmp")), "no built-in /tmp: {text:#?}");
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
    fn deep_images_use_short_relative_lowerdirs_that_fit_a_page() {
        // 128 layers of store-like paths: ~12 KiB of lowerdir in full form.
        let lowers: Vec<PathBuf> =
            (0..128).map(|i| PathBuf::from(format!("/var/lib/cvbench/layers/sha256/{i:064x}/rootfs"))).collect();
        let ops = plan(&spec(&lowers, &[], &[])).unwrap();
        let text: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
        let overlay = text.iter().find(|t| t.contains("lowerdir=")).unwrap();
        assert!(overlay.len() < MAX_MOUNT_DATA, "{} bytes", overlay.len());
        // Top layer first: l/0 is the last of `lowers`.
        assert!(overlay.contains("lowerdir=l/0:l/1:"), "{overlay}");
        let link0 = text.iter().position(|t| t.contains("symlink") && t.ends_with(&format!("{:064x}/rootfs\"", 127)));
        let chdir = text.iter().position(|t| t.starts_with("chdir"));
        let mount = text.iter().position(|t| t.contains("lowerdir="));
        assert!(link0.is_some() && chdir < mount && link0 < chdir, "{text:#?}");
        // Short images keep the plain absolute form.
        let two = plan(&spec(&lowers[..2], &[], &[])).unwrap();
        assert!(!two.iter().any(|o| matches!(o, Op::Chdir { .. })));
    }

    #[test]
    fn plan_rejects_relative_mount_destination() {
        let lowers = vec![PathBuf::from("/l")];
        let mounts = vec![MountSpec {
            kind: "tmpfs".into(),
            source: "tmpfs".into(),
            destination: "../etc".into(),
            readonly: false,
            options: Vec::new(),
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
