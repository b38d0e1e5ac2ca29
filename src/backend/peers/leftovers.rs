//! What an OCI peer (runc, crun, youki, runsc) leaves behind when the run that started it dies
//! before the container's `delete`: the container's cgroup, named after the container id
//! ([`super::unique`]: `cvb-<what>-<pid>-<n>`, `<pid>` the run's) in every hierarchy. `cvbench gc`
//! removes those whose run is gone; the kernel refuses to remove a cgroup that still holds a
//! process, so nothing alive is taken away.

use std::path::{Path, PathBuf};

/// Where the cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The pid of the run that named a container `cvb-<what>-<pid>-<n>`.
fn owner_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("cvb-")?;
    let mut parts = rest.rsplitn(3, '-');
    let (n, pid, what) = (parts.next()?, parts.next()?, parts.next()?);
    if what.is_empty() || n.parse::<u32>().is_err() {
        return None;
    }
    pid.parse::<i32>().ok().filter(|p| *p > 0)
}

/// The hierarchies under `root`: `root` itself on pure cgroup v2, else each mounted v1
/// hierarchy (and a hybrid host's `unified`), symlinked aliases (`cpu` → `cpu,cpuacct`) once.
fn hierarchies(root: &Path) -> Vec<PathBuf> {
    if root.join("cgroup.controllers").is_file() {
        return vec![root.to_path_buf()];
    }
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    let mut v: Vec<PathBuf> =
        entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect();
    v.sort();
    v
}

/// Remove `dir` and the cgroups below it, deepest first (a cgroup directory is removed with
/// rmdir, its files are the kernel's).
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

/// Remove every cgroup directly under a hierarchy of `root` that a run now gone named; one line
/// per cgroup removed or kept (with why).
pub fn gc_cgroups(root: &Path) -> Vec<String> {
    let mut said = Vec::new();
    for hierarchy in hierarchies(root) {
        let Ok(entries) = std::fs::read_dir(&hierarchy) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(pid) = entry.file_name().to_str().and_then(owner_pid) else { continue };
            if !entry.file_type().is_ok_and(|t| t.is_dir()) || Path::new("/proc").join(pid.to_string()).exists() {
                continue;
            }
            match remove_tree(&path) {
                Ok(()) => said.push(format!("removed cgroup {} (its run, pid {pid}, is gone)", path.display())),
                Err(e) => said.push(format!("kept cgroup {}: {e}", path.display())),
            }
        }
    }
    said
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid no process has now: a child that has been reaped.
    fn dead_pid() -> i32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id() as i32;
        c.wait().unwrap();
        pid
    }

    #[test]
    fn a_container_id_names_its_runs_pid() {
        assert_eq!(owner_pid("cvb-gvisor-ptrace-13366-8"), Some(13366));
        assert_eq!(owner_pid("cvb-runc-42-0"), Some(42));
        for name in ["cvb-42-0", "cvb-runc-x-0", "cvb-runc-42-y", "docker", "cvb-runc-0-1", "xcvb-runc-42-0"] {
            assert_eq!(owner_pid(name), None, "{name}");
        }
    }

    #[test]
    fn gc_removes_the_cgroups_of_dead_runs_only_in_every_v1_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        let (dead, me) = (dead_pid(), std::process::id());
        for h in ["memory", "pids"] {
            std::fs::create_dir_all(root.path().join(h).join(format!("cvb-runc-{dead}-3")).join("child")).unwrap();
            std::fs::create_dir_all(root.path().join(h).join(format!("cvb-runc-{me}-4"))).unwrap();
            std::fs::create_dir_all(root.path().join(h).join("system.slice")).unwrap();
        }
        std::os::unix::fs::symlink(root.path().join("pids"), root.path().join("pids-alias")).unwrap();
        let said = gc_cgroups(root.path());
        assert_eq!(said.len(), 2, "{said:?}");
        for h in ["memory", "pids"] {
            assert!(!root.path().join(h).join(format!("cvb-runc-{dead}-3")).exists(), "{h}: the dead run's cgroup");
            assert!(root.path().join(h).join(format!("cvb-runc-{me}-4")).exists(), "{h}: a live run's cgroup");
            assert!(root.path().join(h).join("system.slice").exists(), "{h}: not ours");
        }
    }

    #[test]
    fn on_pure_v2_the_root_is_the_one_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let dead = dead_pid();
        std::fs::create_dir(root.path().join(format!("cvb-crun-{dead}-0"))).unwrap();
        assert_eq!(gc_cgroups(root.path()).len(), 1);
        assert!(!root.path().join(format!("cvb-crun-{dead}-0")).exists());
        assert_eq!(hierarchies(root.path()), [root.path().to_path_buf()]);
    }
}
