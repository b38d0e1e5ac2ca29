//! The density unit's parent cgroup: one cgroup (v2) or one set of per-controller cgroups
//! (v1) that holds every instance of the unit, so the kernel's own charge for them
//! (`memory.current` on v2, `memory.usage_in_bytes` on v1: user pages, page tables, slab,
//! network namespaces, KVM's allocations) is read in one place.
//!
//! How an instance gets in depends on who makes its processes: a process the harness spawns
//! (native, the VMMs, QEMU) writes "0" to the parent's `cgroup.procs` files between fork and
//! exec; a container of our runtime gets its own cgroup *under* the parent. runc, crun and
//! Docker place their containers' cgroups themselves, so they are not measured this way.

use std::path::{Path, PathBuf};

use cvbench_runtime::cgroups::{self, CgroupManager};
use cvbench_runtime::config::CgroupChoice;
use cvbench_runtime::config::Resources;

/// Errors of the parent cgroup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the density unit's parent cgroup")]
    Cgroup(#[from] cgroups::Error),
}

/// How an instance joins the parent; each backend owns its own ([`crate::backend::BackendId::placement`]).
pub use crate::backend::Placement;

/// A parent cgroup, removed on drop (its instances must be gone by then).
pub struct ParentCgroup {
    name: String,
    mgr: Box<dyn CgroupManager>,
}

impl ParentCgroup {
    /// Create `cvbench-<pid>-density` where the runtime creates container cgroups (the name
    /// carries the owner's pid, so `gc` removes it after a crash).
    pub fn create() -> Result<ParentCgroup, Error> {
        let name = format!("cvbench-{}-density", std::process::id());
        let mut mgr = cgroups::manager(&CgroupChoice::Auto, &name)?;
        mgr.create(&Resources::default())?;
        Ok(ParentCgroup { name, mgr })
    }

    /// The cgroup name (relative) a container of our runtime nests its own under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The files a spawned process writes "0" to between fork and exec. On v1 these are
    /// `tasks`: moving only the writing thread (the child has one then) skips the threadgroup
    /// rwsem, whose RCU grace period made each join cost ~9 ms on this machine (a native launch
    /// is ~0.5 ms). v2 has only `cgroup.procs` for a process outside a threaded subtree.
    /// Only the memory hierarchy is joined: it is the one read, and every further hierarchy
    /// is one more move per instance.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        if self.mgr.version() == "v2" {
            return self.mgr.paths().iter().map(|d| d.join("cgroup.procs")).collect();
        }
        self.memory_file().and_then(|f| f.parent().map(|d| vec![d.join("tasks")])).unwrap_or_default()
    }

    /// The file with what the kernel charges to the parent and everything below it, bytes
    /// (v2 `memory.current`, v1 `memory.usage_in_bytes`: hierarchical on every kernel since 6.0).
    pub fn memory_file(&self) -> Option<PathBuf> {
        let dirs = self.mgr.paths();
        if self.mgr.version() == "v2" {
            return dirs.first().map(|d| d.join("memory.current"));
        }
        dirs.iter().map(|d| d.join("memory.usage_in_bytes")).find(|f| f.exists())
    }

    /// The cgroup's `memory.stat`, which counts pages (not charge batches).
    pub fn memory_stat_file(&self) -> Option<PathBuf> {
        Some(self.memory_file()?.with_file_name("memory.stat"))
    }

    /// The current charge, bytes.
    pub fn memory_bytes(&self) -> Option<u64> {
        read_bytes(&self.memory_file()?)
    }
}

impl Drop for ParentCgroup {
    fn drop(&mut self) {
        let _ = self.mgr.remove();
        // On v1 a container's cgroup below the parent may have created the parent in more
        // hierarchies than the four made here (devices, cpu): remove those too (empty by now).
        if self.mgr.version() == "v1" {
            for d in v1_dirs(Path::new("/sys/fs/cgroup"), &self.name) {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

/// Pages the kernel charges a memory cgroup in at once per CPU (`MEMCG_CHARGE_BATCH`): the
/// charge (`memory.usage_in_bytes`, `memory.current`) runs ahead of the pages in use by up to
/// this many pages on every CPU that charged, so it moves in steps of 256 KiB.
pub const CHARGE_BATCH_PAGES: u64 = 64;

/// How far the charge can run ahead of the pages in use on this host (KiB): one batch per CPU.
pub fn charge_granularity_kib() -> u64 {
    // Every online CPU, not this (pinned) thread's affinity: any CPU may have charged.
    // SAFETY: sysconf only reads system constants.
    let (cpus, page) = unsafe { (libc::sysconf(libc::_SC_NPROCESSORS_ONLN), libc::sysconf(libc::_SC_PAGESIZE)) };
    let (cpus, page) = (cpus.max(1) as u64, page.max(4096) as u64);
    CHARGE_BATCH_PAGES * page / 1024 * cpus
}

/// The bytes a `memory.stat` text counts for the cgroup and everything below it: v1
/// `total_rss + total_cache`, v2 `anon + file + kernel` (`kernel` where the kernel reports it).
pub fn stat_bytes(text: &str) -> Option<u64> {
    let key = |k: &str| {
        text.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(k)).then(|| it.next()?.parse::<u64>().ok())?
        })
    };
    match (key("total_rss"), key("total_cache")) {
        (Some(rss), Some(cache)) => Some(rss + cache),
        _ => Some(key("anon")? + key("file")? + key("kernel").unwrap_or(0)),
    }
}

/// A cgroup memory file's value.
pub fn read_bytes(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// The parent's directory in every v1 hierarchy under `root`, below this process's own cgroup
/// there (as the runtime places it).
fn v1_dirs(root: &Path, name: &str) -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let own = cgroups::parse_proc_cgroup(&own);
    let v1 = cgroups::v1::V1::new(root, &own, name);
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| v1.dir_for(&e.file_name().to_string_lossy()))
        .filter(|d| d.is_dir())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_stat_counts_pages_in_either_version() {
        let v1 = "cache 4096\nrss 8192\ntotal_cache 12288\ntotal_rss 16384\n";
        assert_eq!(stat_bytes(v1), Some(28672), "v1: the hierarchical totals");
        let v2 = "anon 8192\nfile 4096\nkernel 1024\nsock 0\n";
        assert_eq!(stat_bytes(v2), Some(13312));
        assert_eq!(stat_bytes("anon 8192\nfile 4096\n"), Some(12288), "older v2 without `kernel`");
        assert_eq!(stat_bytes("pgfault 3\n"), None);
    }

    #[test]
    fn the_charge_granularity_is_a_batch_per_cpu() {
        // SAFETY: sysconf only reads a system constant.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } as u64;
        assert_eq!(charge_granularity_kib() % cpus, 0);
        assert!(charge_granularity_kib() >= 256 * cpus);
    }

    #[test]
    fn a_spawned_child_is_charged_to_the_parent() {
        if !nix::unistd::Uid::effective().is_root() {
            println!("SKIPPED: [root] parent cgroup: creating a cgroup needs root");
            return;
        }
        let p = ParentCgroup::create().expect("create the parent cgroup");
        let before = p.memory_bytes().expect("memory usage");
        let j = crate::backend::process::Joiner::open(&p.procs_files()).expect("open cgroup.procs");
        // A child that touches 32 MiB and waits: its pages are charged to the parent.
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "x=$(head -c 33554432 /dev/zero | tr '\\0' a); echo up; read _"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        j.apply(&mut cmd);
        let mut child = cmd.spawn().expect("spawn");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        let during = p.memory_bytes().expect("memory usage");
        let procs = std::fs::read_to_string(p.procs_files()[0].with_file_name("cgroup.procs")).unwrap();
        drop(child.stdin.take());
        child.wait().unwrap();
        assert!(procs.lines().any(|l| l.trim() == child.id().to_string()), "{procs}");
        assert!(during >= before + (32 << 20), "before {before} during {during}");
    }
}
