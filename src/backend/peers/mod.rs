//! Peer systems the suite compares against, each behind the same `Backend`
//! trait: `runc`, `crun`, `youki` and gVisor's `runsc` (OCI bundles generated
//! from the workload binary), `docker` (a private dockerd of its own),
//! `podman` (daemonless, a private store) and `qemu` (`-M microvm` with our
//! guest kernel and initramfs). This module holds what they share: errors,
//! where a peer binary is found, state directories and scratch space (the
//! network path is `backend::netpath`, shared with native).

pub mod checkpoint;
pub mod docker;
pub mod leftovers;
pub mod oci;
pub mod oci_runtime;
pub mod podman;
pub mod qemu;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::id::PeerTool;
use super::BackendError;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("writing {0}")]
    Json(PathBuf, #[source] serde_json::Error),
    #[error("{tool} {args} failed: {detail}")]
    Tool { tool: String, args: String, detail: String },
    #[error("peer server in its own network namespace did not start: {0}")]
    PeerServer(String),
    #[error("{0}")]
    Other(String),
}

/// A name unique to this process and call: `cvb-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

pub(crate) fn launch_err(
    backend: &str,
    workload: &str,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> BackendError {
    BackendError::Launch { backend: backend.into(), workload: workload.into(), source: e.into() }
}

/// Is `cmd` on PATH?
pub fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file())).unwrap_or(false)
}

/// `<cache>/cvbench/peers`, where `scripts/install-peers` puts runsc and youki.
pub fn peer_cache() -> Option<PathBuf> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let cache = nonempty("XDG_CACHE_HOME").or_else(|| nonempty("HOME").map(|h| h.join(".cache")))?;
    Some(cache.join("cvbench/peers"))
}

/// The binary of `tool`: cvbench's cache first (the version the suite installs), then `PATH`.
pub fn find_peer(tool: PeerTool) -> Option<PathBuf> {
    find_peer_in(peer_cache().as_deref(), tool)
}

fn find_peer_in(cache: Option<&Path>, tool: PeerTool) -> Option<PathBuf> {
    if let Some(p) = cache.map(|c| c.join(tool.cache_path())).filter(|p| p.is_file()) {
        return Some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(tool.cmd())).find(|p| p.is_file())
}

/// Run a short tool invocation to completion; its stderr becomes the error.
pub fn run_tool(cmd: &mut Command) -> Result<String, PeerError> {
    let out = cmd.output().map_err(|e| PeerError::Tool {
        tool: format!("{:?}", cmd.get_program()),
        args: String::new(),
        detail: e.to_string(),
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(PeerError::Tool {
            tool: cmd.get_program().to_string_lossy().into_owned(),
            args: cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" "),
            detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        })
    }
}

/// A scratch directory under /var/tmp (the same filesystem native's `disk`
/// uses), removed on drop.
pub fn scratch(prefix: &str) -> Result<tempfile::TempDir, PeerError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/var/tmp")
        .map_err(|e| PeerError::Io(PathBuf::from("/var/tmp"), e))
}

/// Children of every thread of `pid` (from `/proc/<pid>/task/*/children`).
pub fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut v: Vec<i32> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<i32>>())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Every descendant of `pid`, parents before children.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = children(pid);
    while let Some(p) = todo.pop() {
        if !out.contains(&p) {
            out.push(p);
            todo.extend(children(p));
        }
    }
    out
}

/// Read a pid file if it is there yet.
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_carry_the_pid() {
        let (a, b) = (unique("cvb"), unique("cvb"));
        assert_ne!(a, b);
        assert!(a.contains(&std::process::id().to_string()));
    }

    #[test]
    fn children_lists_a_spawned_child() {
        let mut c = Command::new("sleep").arg("5").spawn().unwrap();
        let found = children(std::process::id() as i32).contains(&(c.id() as i32));
        c.kill().unwrap();
        c.wait().unwrap();
        assert!(found);
    }

    #[test]
    fn a_peer_in_the_cache_wins_over_path() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join(PeerTool::Youki.cache_path());
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::write(&bin, b"").unwrap();
        assert_eq!(find_peer_in(Some(d.path()), PeerTool::Youki), Some(bin));
        // Not in this cache: only PATH can have it (and `youki` is no Debian package).
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            find_peer_in(Some(empty.path()), PeerTool::Youki),
            on_path("youki").then(|| find_peer_in(None, PeerTool::Youki)).flatten()
        );
    }

    #[test]
    fn run_tool_reports_stderr_of_a_failing_tool() {
        let e = run_tool(Command::new("sh").args(["-c", "echo nope >&2; exit 3"])).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
