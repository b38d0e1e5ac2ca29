//! cgroups: one `CgroupManager` trait with v1 and v2 implementations, picked by probing the
//! mount, plus the shared helpers (file writes naming the path, own-cgroup lookup, stats).

pub mod devices_bpf;
pub mod v1;
pub mod v2;

use crate::config::{CgroupChoice, Resources};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

/// Smallest memory limit accepted: below this the workload cannot even be exec'd, and the kernel
/// would OOM-kill it before it prints anything.
pub const MIN_MEMORY_BYTES: u64 = 4 << 20;

/// Errors from cgroup setup, control and teardown.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create cgroup {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write `{value}` to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot attach pid {pid} to {path}")]
    AttachCgroup {
        pid: i32,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove cgroup {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("memory limit {0} bytes is below the minimum of {MIN_MEMORY_BYTES} bytes")]
    MemoryTooLow(u64),
    #[error("memory+swap limit {swap} is below the memory limit {memory}")]
    SwapBelowMemory { memory: u64, swap: u64 },
    #[error("controller `{controller}` is not available under {root}")]
    ControllerMissing { controller: String, root: PathBuf },
    #[error("`{field}` needs {needs}, which is not available under {root}")]
    ControllerMissingFor { field: &'static str, needs: String, root: PathBuf },
    #[error("invalid `{field}`: {reason}")]
    BadValue { field: &'static str, reason: String },
    #[error("cgroup path `{0}` may only name directories below the hierarchy (no `.` or `..`)")]
    BadPath(String),
    #[error("cannot find this process's cgroup in /proc/self/cgroup for `{0}`")]
    OwnCgroup(String),
    #[error("no cgroup hierarchy found under {0}")]
    NoHierarchy(PathBuf),
    #[error("cannot install the v2 device program on {path}")]
    DeviceProgram {
        path: PathBuf,
        #[source]
        source: devices_bpf::Error,
    },
}

/// Statistics read back after (or during) a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub memory_usage_bytes: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    pub cpu_usage_ns: Option<u64>,
    pub pids_current: Option<u64>,
    /// Number of OOM kills inside this cgroup.
    pub oom_kills: u64,
}

/// A container's cgroup (or set of per-controller cgroups on v1).
pub trait CgroupManager: Send {
    /// "v1" or "v2".
    fn version(&self) -> &'static str;
    /// Create the directories and write the limits.
    fn create(&mut self, res: &Resources) -> Result<(), Error>;
    /// Move a process in.
    fn attach(&self, pid: i32) -> Result<(), Error>;
    /// A directory fd for `clone3(CLONE_INTO_CGROUP)`, when the hierarchy supports it.
    fn clone_into_fd(&self) -> Option<RawFd> {
        None
    }
    /// Files the new process can write "0" to in order to move itself (v1 `tasks`). Moving
    /// only the current thread skips the global threadgroup rwsem, and with it the RCU grace
    /// period a write of another pid costs on this kernel.
    fn self_attach_files(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    fn freeze(&self) -> Result<(), Error>;
    fn thaw(&self) -> Result<(), Error>;
    fn stats(&self) -> Result<Stats, Error>;
    /// Pids currently in the cgroup.
    fn procs(&self) -> Result<Vec<i32>, Error>;
    /// Every directory this manager created (for the state file and gc).
    fn paths(&self) -> Vec<PathBuf>;
    /// Ancestors of [`CgroupManager::paths`] that `create` made because a nested name needed
    /// them, outermost first; `remove` takes them away after the cgroups themselves.
    fn created_parents(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    /// Remove the directories; the cgroup must be empty.
    fn remove(&mut self) -> Result<(), Error>;
}

/// Block I/O weights (v1 blkio, BFQ) take 10..=1000.
const WEIGHTS: std::ops::RangeInclusive<u16> = 10..=1000;

/// Check limits before touching the kernel, so bad input fails with a clear message.
pub fn validate(res: &Resources) -> Result<(), Error> {
    if res.no_memory_controller && res.wants_memory_controller() {
        return Err(Error::BadValue {
            field: "linux.resources.memory",
            reason: "a memory limit needs the memory controller the container is to be run without".into(),
        });
    }
    if let Some(s) = res.memory_swappiness.filter(|s| *s > 100) {
        return Err(Error::BadValue {
            field: "linux.resources.memory.swappiness",
            reason: format!("{s} is above 100"),
        });
    }
    let b = &res.block_io;
    let weights = [("linux.resources.blockIO.weight", b.weight), ("linux.resources.blockIO.leafWeight", b.leaf_weight)]
        .into_iter()
        .chain(b.weight_devices.iter().flat_map(|d| {
            [
                ("linux.resources.blockIO.weightDevice[].weight", d.weight),
                ("linux.resources.blockIO.weightDevice[].leafWeight", d.leaf_weight),
            ]
        }));
    for (field, w) in weights {
        if let Some(w) = w.filter(|w| !WEIGHTS.contains(w)) {
            return Err(Error::BadValue { field, reason: format!("{w} is outside {WEIGHTS:?}") });
        }
    }
    for l in &res.hugepage_limits {
        // It becomes part of a file name: digits and a unit, nothing else.
        let digits = ["KB", "MB", "GB"].iter().find_map(|u| l.page_size.strip_suffix(u)).unwrap_or("");
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) || digits.starts_with('0') {
            return Err(Error::BadValue {
                field: "linux.resources.hugepageLimits[].pageSize",
                reason: format!("{:?} is not a page size like 2MB or 1GB", l.page_size),
            });
        }
    }
    for p in &res.net_priorities {
        let name = &p.interface;
        if name.is_empty()
            || name.len() >= libc::IFNAMSIZ
            || name.bytes().any(|c| c == b'/' || c.is_ascii_whitespace() || c == 0)
        {
            return Err(Error::BadValue {
                field: "linux.resources.network.priorities[].name",
                reason: format!("{name:?} is not an interface name"),
            });
        }
    }
    if let Some(m) = res.memory_bytes {
        if m < MIN_MEMORY_BYTES {
            return Err(Error::MemoryTooLow(m));
        }
        if let Some(s) = res.memory_swap_bytes {
            if s < m {
                return Err(Error::SwapBelowMemory { memory: m, swap: s });
            }
        }
    }
    Ok(())
}

/// Build the manager a config asks for, probing `/sys/fs/cgroup` on `Auto`.
pub fn manager(choice: &CgroupChoice, name: &str) -> Result<Box<dyn CgroupManager>, Error> {
    let own = fs::read_to_string("/proc/self/cgroup")
        .map_err(|source| Error::Read { path: "/proc/self/cgroup".into(), source })?;
    let mut own = parse_proc_cgroup(&own);
    // An absolute name starts at the hierarchy root, not below our own cgroup.
    let name = match name.strip_prefix('/') {
        Some(rest) => {
            own.clear();
            rest
        }
        None => name,
    };
    // The name is joined onto cgroupfs paths: it must not climb out of the hierarchy.
    if name.is_empty() || !Path::new(name).components().all(|c| matches!(c, std::path::Component::Normal(_))) {
        return Err(Error::BadPath(name.to_string()));
    }
    let choice = match choice {
        CgroupChoice::Auto => probe(Path::new("/sys/fs/cgroup")),
        other => other.clone(),
    };
    match choice {
        CgroupChoice::V2(root) => Ok(Box::new(v2::V2::new(&root, &own, name)?)),
        CgroupChoice::V1(root) => Ok(Box::new(v1::V1::new(&root, &own, name))),
        CgroupChoice::Auto => Ok(Box::new(v1::V1::new(Path::new("/sys/fs/cgroup"), &own, name))),
    }
}

/// v2 when `root` itself is a cgroup2 mount, v1 otherwise.
pub fn probe(root: &Path) -> CgroupChoice {
    match nix::sys::statfs::statfs(root) {
        Ok(st) if st.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => CgroupChoice::V2(root.to_path_buf()),
        _ => CgroupChoice::V1(root.to_path_buf()),
    }
}

/// Parse `/proc/self/cgroup` into controller → path. The v2 entry is keyed by "" and
/// `name=systemd` style entries keep their name.
pub fn parse_proc_cgroup(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        for c in ctrls.split(',') {
            map.insert(c.to_string(), path.to_string());
        }
    }
    map
}

pub(crate) fn write_file(path: &Path, value: &str) -> Result<(), Error> {
    fs::write(path, value).map_err(|source| Error::Write { path: path.to_path_buf(), value: value.to_string(), source })
}

pub(crate) fn read_file(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })
}

pub(crate) fn read_u64(path: &Path) -> Result<u64, Error> {
    let text = read_file(path)?;
    text.trim().parse().map_err(|_| Error::Read {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, format!("not a number: {text:?}")),
    })
}

/// Value of `key` in a flat-keyed file such as `memory.events` or `cpu.stat`.
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

pub(crate) fn read_procs(path: &Path) -> Result<Vec<i32>, Error> {
    Ok(read_file(path)?.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Write `value` to the first of `files` that exists in `dir`; none there means the kernel
/// lacks what `field` needs (an I/O scheduler, a page size, a controller feature).
pub(crate) fn write_one_of(dir: &Path, files: &[&str], value: &str, field: &'static str) -> Result<(), Error> {
    match files.iter().map(|f| dir.join(f)).find(|p| p.exists()) {
        Some(p) => write_file(&p, value),
        None => Err(Error::ControllerMissingFor { field, needs: files.join(" or "), root: dir.to_path_buf() }),
    }
}

/// mkdir `dir` and each missing ancestor, outermost first, calling `each` on every level made
/// (or found made meanwhile) before going deeper. Ancestors this call made are pushed onto
/// `created` as they appear, so a failure halfway still leaves them to be removed.
pub(crate) fn create_levels(
    dir: &Path,
    created: &mut Vec<PathBuf>,
    mut each: impl FnMut(&Path) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut missing: Vec<&Path> = dir.ancestors().skip(1).take_while(|a| !a.exists()).collect();
    missing.reverse();
    for level in missing {
        match fs::create_dir(level) {
            Ok(()) => created.push(level.to_path_buf()),
            // Made meanwhile by someone else (a sibling container): not ours to remove.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(Error::Create { path: level.to_path_buf(), source }),
        }
        each(level)?;
    }
    fs::create_dir(dir).map_err(|source| Error::Create { path: dir.to_path_buf(), source })?;
    each(dir)
}

/// Remove the `created_parents` of a manager, deepest first. One that is busy (a sibling
/// container made meanwhile lives in it) or gone is left alone: it is shared, not leaked.
pub fn remove_parents(created_parents: &[PathBuf]) {
    for p in created_parents.iter().rev() {
        let _ = fs::remove_dir(p);
    }
}

/// rmdir with a few retries: a killed task can linger in the cgroup for a moment after exit.
pub(crate) fn remove_dir(path: &Path) -> Result<(), Error> {
    for attempt in 0..50 {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 49 => {
                std::thread::sleep(std::time::Duration::from_millis(2))
            }
            Err(source) => return Err(Error::Remove { path: path.to_path_buf(), source }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_proc_cgroup_reads_v1_and_v2_lines() {
        let map = parse_proc_cgroup("4:memory:/a/b\n1:cpu,cpuacct:/\n0::/x\n");
        assert_eq!(map["memory"], "/a/b");
        assert_eq!(map["cpuacct"], "/");
        assert_eq!(map[""], "/x");
    }

    #[test]
    fn validate_rejects_tiny_memory_limit() {
        let res = Resources { memory_bytes: Some(4096), ..Default::default() };
        assert!(matches!(validate(&res), Err(Error::MemoryTooLow(4096))));
    }

    #[test]
    fn validate_rejects_swap_below_memory() {
        let res = Resources { memory_bytes: Some(64 << 20), memory_swap_bytes: Some(32 << 20), ..Default::default() };
        assert!(matches!(validate(&res), Err(Error::SwapBelowMemory { .. })));
    }

    #[test]
    fn validate_rejects_bad_weights_page_sizes_and_interface_names() {
        use crate::config::{BlockIo, HugepageLimit, NetPriority};
        let weight = Resources { block_io: BlockIo { weight: Some(5), ..Default::default() }, ..Default::default() };
        let page = |s: &str| Resources {
            hugepage_limits: vec![HugepageLimit { page_size: s.into(), limit: 0 }],
            ..Default::default()
        };
        let iface = Resources {
            net_priorities: vec![NetPriority { interface: "eth0 5\nlo".into(), priority: 1 }],
            ..Default::default()
        };
        for (res, field) in [
            (weight, "linux.resources.blockIO.weight"),
            (page("../../x"), "pageSize"),
            (page("2M"), "pageSize"),
            (page("MB"), "pageSize"),
            (iface, "priorities[].name"),
        ] {
            let err = validate(&res).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
        assert!(validate(&page("2MB")).is_ok() && validate(&page("1GB")).is_ok() && validate(&page("64KB")).is_ok());
    }

    #[test]
    fn keyed_finds_values() {
        assert_eq!(keyed("low 0\noom_kill 3\n", "oom_kill"), Some(3));
        assert_eq!(keyed("low 0\n", "oom_kill"), None);
    }
}
