//! Tearing a swarm down, at the end of a run, on Ctrl-C, or by `cvbench gc` after a crashed run:
//! every process inside the swarm's network namespaces (dockerd, containerd, shims, the registry)
//! and every descendant of theirs (the tasks) is killed by pid, then the namespaces and the
//! swarm's directories are removed.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// What a swarm leaves on the host until torn down; enough to remove it without the handles
/// of the run that made it (so the Ctrl-C hook and gc share this).
#[derive(Clone, Debug, Default)]
pub struct Leftovers {
    /// Network namespace names under /run/netns.
    pub netns: Vec<String>,
    /// Directories (data and exec roots).
    pub dirs: Vec<PathBuf>,
}

fn all_pids() -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()
}

/// `PPid:` of a process.
fn ppid(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|v| v.trim().parse().ok())
}

/// A process's command name.
pub fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim().to_string())
}

/// Direct children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    all_pids().into_iter().filter(|p| ppid(*p) == Some(pid)).collect()
}

/// Processes whose network namespace is the one bound at `ns` (compared by inode).
pub fn pids_in_netns(ns: &Path) -> Vec<i32> {
    let Ok(want) = std::fs::metadata(ns) else { return Vec::new() };
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|p| *p != me)
        .filter(|p| {
            std::fs::metadata(format!("/proc/{p}/ns/net")).is_ok_and(|m| m.ino() == want.ino() && m.dev() == want.dev())
        })
        .collect()
}

/// `roots` and all their descendants.
fn with_descendants(roots: &[i32]) -> BTreeSet<i32> {
    let parents: Vec<(i32, i32)> = all_pids().into_iter().filter_map(|p| Some((p, ppid(p)?))).collect();
    let mut set: BTreeSet<i32> = roots.iter().copied().collect();
    loop {
        let before = set.len();
        for (p, pp) in &parents {
            if set.contains(pp) {
                set.insert(*p);
            }
        }
        if set.len() == before {
            return set;
        }
    }
}

fn gone(pid: i32) -> bool {
    // A zombie is gone for our purpose: its parent (us, or init) reaps it.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// SIGKILL every process in the namespaces at `ns_paths` and their descendants; wait (bounded)
/// until they are gone. Returns how many were killed.
pub fn kill_in_namespaces(ns_paths: &[PathBuf]) -> usize {
    let roots: Vec<i32> = ns_paths.iter().flat_map(|p| pids_in_netns(p)).collect();
    if roots.is_empty() {
        return 0;
    }
    let all = with_descendants(&roots);
    // Children first would race nothing here: SIGKILL cannot be caught, the parents cannot
    // restart them.
    for p in &all {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) && !all.iter().all(|p| gone(*p)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    all.len()
}

/// Remove everything in `l`: processes, namespaces, directories. Returns what was removed and
/// what failed, one line each.
pub fn remove(l: &Leftovers) -> Vec<String> {
    let mut out = Vec::new();
    let paths: Vec<PathBuf> = l.netns.iter().map(|n| Path::new(cvbench_runtime::network::NETNS_DIR).join(n)).collect();
    let n = kill_in_namespaces(&paths);
    if n > 0 {
        out.push(format!("{n} processes of the swarm killed"));
    }
    for ns in &l.netns {
        match cvbench_runtime::network::delete_netns(ns) {
            Ok(()) => out.push(format!("netns {ns}")),
            Err(e) => out.push(format!("netns {ns}: {e}")),
        }
    }
    for d in &l.dirs {
        match std::fs::remove_dir_all(d) {
            Ok(()) => out.push(format!("dir {}", d.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => out.push(format!("dir {}: {e}", d.display())),
        }
    }
    out
}

/// The swarm tag (`cvbench-<pid>-sw<K>`) a namespace or directory name belongs to.
pub fn tag_of(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("cvbench-")?;
    let (pid, rest) = rest.split_once('-')?;
    pid.parse::<u32>().ok()?;
    let k = rest.strip_prefix("sw")?;
    let digits = k.find(|c: char| !c.is_ascii_digit()).unwrap_or(k.len());
    if digits == 0 || !(k[digits..].is_empty() || k[digits..].starts_with('-')) {
        return None;
    }
    Some(&name[..name.len() - k.len() + digits])
}

fn owner_alive(tag: &str) -> bool {
    cvbench_runtime::cleanup::owner_of(tag).is_some_and(|p| cvbench_runtime::state::alive(p, 0))
}

/// Swarms of runs that are gone: their namespaces and directories, removed.
pub fn gc() -> Vec<String> {
    let mut by_tag: std::collections::BTreeMap<String, Leftovers> = Default::default();
    let mut scan = |dir: &Path, is_netns: bool| {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(tag) = tag_of(&name) else { continue };
            if owner_alive(tag) {
                continue;
            }
            let l = by_tag.entry(tag.to_string()).or_default();
            if is_netns {
                l.netns.push(name);
            } else {
                l.dirs.push(e.path());
            }
        }
    };
    scan(Path::new(cvbench_runtime::network::NETNS_DIR), true);
    scan(Path::new(super::DATA_PARENT), false);
    scan(Path::new(super::RUN_PARENT), false);
    by_tag.into_iter().flat_map(|(tag, l)| remove(&l).into_iter().map(move |r| format!("swarm {tag}: {r}"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swarm_names_give_their_tag_and_other_names_none() {
        assert_eq!(tag_of("cvbench-123-sw0-n2"), Some("cvbench-123-sw0"));
        assert_eq!(tag_of("cvbench-123-sw14-br"), Some("cvbench-123-sw14"));
        assert_eq!(tag_of("cvbench-123-sw3"), Some("cvbench-123-sw3"));
        assert_eq!(tag_of("cvbench-123-swx"), None);
        assert_eq!(tag_of("cvbench-123-peer-4"), None);
        assert_eq!(tag_of("cvbench-docker-123"), None);
    }

    #[test]
    fn a_process_tree_is_found_from_its_root() {
        let me = std::process::id() as i32;
        let set = with_descendants(&[1]);
        assert!(set.contains(&me), "pid 1 is an ancestor of every process");
    }
}
