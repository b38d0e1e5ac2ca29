//! Cleaning up: a registry of live containers, registered with the process's signal owner
//! ([`cvbench_signals`]) so SIGINT/SIGTERM kill them and remove what they made, and `gc`, which removes leftovers of crashed runs (state dirs, cgroups, peer network
//! namespaces, subnet claims, temp files) whose owning process is gone. Every host object the
//! runtime creates is named `cvbench-<owner pid>-...`, which is how gc recognises them.

use crate::process::kill;
use crate::state::{alive, Keeper, State};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

static TRACKED: Mutex<BTreeMap<String, State>> = Mutex::new(BTreeMap::new());

/// Have the process's signal owner SIGKILL a container pid on SIGINT/SIGTERM.
pub fn register_pid(pid: i32) -> Option<cvbench_signals::PidSlot> {
    install_signal_handlers();
    cvbench_signals::register_pid(pid)
}

pub fn unregister_pid(slot: cvbench_signals::PidSlot) {
    cvbench_signals::unregister_pid(slot)
}

/// Record (or update) what a live container has created.
pub fn track(state: &State) {
    if let Ok(mut t) = TRACKED.lock() {
        t.insert(state.id.clone(), state.clone());
    }
}

pub fn untrack(id: &str) {
    if let Ok(mut t) = TRACKED.lock() {
        t.remove(id);
    }
}

/// True once SIGINT/SIGTERM arrived.
pub fn interrupted() -> bool {
    cvbench_signals::interrupted()
}

/// Register with the process's one signal owner ([`cvbench_signals`]): on SIGINT/SIGTERM it
/// SIGKILLs every registered container at once, and its cleanup (before the process dies of
/// the signal, or when a graceful program asks for it) removes the cgroups, network
/// namespaces and state dirs of every container still tracked. Idempotent.
pub fn install_signal_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        cvbench_signals::on_interrupt(|| {
            let states: Vec<State> = TRACKED.lock().map(|t| t.values().cloned().collect()).unwrap_or_default();
            for s in &states {
                let _ = remove_leftovers(s);
                untrack(&s.id);
            }
        });
    });
}

/// Run `f` on SIGINT/SIGTERM with the rest of the process's cleanup (see
/// [`cvbench_signals::on_interrupt`]): for whatever else the program started (a private
/// daemon, say).
pub fn on_interrupt(f: impl Fn() + Send + 'static) {
    install_signal_handlers();
    cvbench_signals::on_interrupt(f);
}

fn rmdir_retry(p: &Path) -> bool {
    for _ in 0..100 {
        match fs::remove_dir(p) {
            Ok(()) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
    false
}

fn kill_cgroup_members(dir: &Path) {
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // Best effort: a member of a cgroup we created, which may exit meanwhile.
            let _ = kill::send_to(pid, 0, libc::SIGKILL);
        }
    }
}

/// Remove everything one (dead-owner) container state lists. Returns what was removed.
pub fn remove_leftovers(s: &State) -> Vec<String> {
    let mut out = Vec::new();
    if alive(s.pid, s.pid_start) {
        // Best effort: the removal below goes on whether or not it was still there.
        let _ = kill::send_to(s.pid, s.pid_start, libc::SIGKILL);
        out.push(format!("killed pid {}", s.pid));
    }
    for cg in &s.cgroups {
        kill_cgroup_members(cg);
        if cg.exists() && rmdir_retry(cg) {
            out.push(format!("cgroup {}", cg.display()));
        }
    }
    crate::cgroups::remove_parents(&s.cgroup_parents);
    if let Some(ns) = &s.netns {
        if Path::new(crate::network::NETNS_DIR).join(ns).exists() && crate::network::delete_netns(ns).is_ok() {
            out.push(format!("netns {ns}"));
        }
    }
    if let Some(slot) = &s.net_slot {
        if fs::remove_dir_all(slot).is_ok() {
            out.push(format!("subnet claim {}", slot.display()));
        }
    }
    if s.run_dir.exists() && fs::remove_dir_all(&s.run_dir).is_ok() {
        out.push(format!("state dir {}", s.run_dir.display()));
    }
    out
}

/// The pid in a `cvbench-<pid>-...` name.
pub fn owner_of(name: &str) -> Option<i32> {
    name.strip_prefix("cvbench-")?.split('-').next()?.parse().ok()
}

fn owner_dead(name: &str) -> bool {
    match owner_of(name) {
        Some(pid) => !alive(pid, 0),
        None => false,
    }
}

/// Candidate parent directories of our cgroups: every v1 hierarchy (root and this process's
/// own cgroup) and the unified hierarchy.
fn cgroup_parents() -> Vec<PathBuf> {
    let own =
        fs::read_to_string("/proc/self/cgroup").map(|t| crate::cgroups::parse_proc_cgroup(&t)).unwrap_or_default();
    let root = Path::new("/sys/fs/cgroup");
    let mut v = vec![root.to_path_buf(), root.join("unified")];
    if let Ok(rd) = fs::read_dir(root) {
        for e in rd.flatten() {
            let ctrl = e.file_name().to_string_lossy().into_owned();
            v.push(e.path());
            if let Some(p) = own.get(&ctrl) {
                v.push(e.path().join(p.trim_start_matches('/')));
            }
        }
    }
    if let Some(p) = own.get("") {
        v.push(root.join(p.trim_start_matches('/')));
    }
    v.sort();
    v.dedup();
    v
}

/// Remove leftovers of crashed runs: container state dirs and subnet claims under `run_root`,
/// temp files under the store's `state_dir`, cgroups and peer namespaces on the host.
/// Returns what was removed.
pub fn gc(state_dir: &Path, run_root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let containers = run_root.join("containers");
    if let Ok(rd) = fs::read_dir(&containers) {
        for e in rd.flatten() {
            let state: Option<State> =
                fs::read(e.path().join("state.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
            match state {
                Some(s) => {
                    let owner_gone = !alive(s.owner_pid as i32, s.owner_start);
                    let stale = match s.keeper {
                        Keeper::Detached => !alive(s.pid, s.pid_start),
                        Keeper::Owner => owner_gone,
                    };
                    if stale {
                        out.extend(remove_leftovers(&s));
                    }
                }
                None => {
                    // No readable state: only remove it when a name says the owner is dead.
                    let name = e.file_name().to_string_lossy().into_owned();
                    if owner_dead(&name) && fs::remove_dir_all(e.path()).is_ok() {
                        out.push(format!("state dir {}", e.path().display()));
                    }
                }
            }
        }
    }
    for parent in cgroup_parents() {
        if let Ok(rd) = fs::read_dir(&parent) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if e.path().is_dir() && owner_dead(&name) {
                    kill_cgroup_members(&e.path());
                    if rmdir_retry(&e.path()) {
                        out.push(format!("cgroup {}", e.path().display()));
                    }
                }
            }
        }
    }
    if let Ok(rd) = fs::read_dir(crate::network::NETNS_DIR) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if owner_dead(&name) && crate::network::delete_netns(&name).is_ok() {
                out.push(format!("netns {name}"));
            }
        }
    }
    if let Ok(rd) = fs::read_dir(run_root.join("net")) {
        for e in rd.flatten() {
            let owner: Option<i32> =
                fs::read_to_string(e.path().join("owner")).ok().and_then(|s| s.trim().parse().ok());
            if owner.is_none_or(|p| !alive(p, 0)) && fs::remove_dir_all(e.path()).is_ok() {
                out.push(format!("subnet claim {}", e.path().display()));
            }
        }
    }
    if let Ok(rd) = fs::read_dir(state_dir.join("tmp")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if owner_dead(&name) {
                let p = e.path();
                let r = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
                if r.is_ok() {
                    out.push(format!("temp {}", p.display()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_of_parses_names() {
        assert_eq!(owner_of("cvbench-123-4"), Some(123));
        assert_eq!(owner_of("cvbench-123-foo-bar"), Some(123));
        assert_eq!(owner_of("other-123"), None);
    }

    #[test]
    fn gc_removes_temp_files_of_dead_owners_only() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("tmp")).unwrap();
        // pid 0x7ffffffe is never a live process here.
        fs::write(tmp.path().join("tmp/cvbench-2147483646-0-blob"), "x").unwrap();
        let mine = format!("cvbench-{}-0-blob", std::process::id());
        fs::write(tmp.path().join("tmp").join(&mine), "x").unwrap();
        let removed = gc(tmp.path(), tmp.path());
        assert!(removed.iter().any(|r| r.contains("2147483646")), "{removed:?}");
        assert!(tmp.path().join("tmp").join(mine).exists());
    }
}
