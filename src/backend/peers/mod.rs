//! Peer systems the suite compares against, each behind the same `Backend`
//! trait: `runc` and `crun` (OCI bundles generated from the workload
//! binary), `docker` (a private dockerd of its own) and `qemu`
//! (`-M microvm` with our guest kernel and initramfs). This module holds what
//! they share: errors, state directories and the peer network namespace.

pub mod docker;
pub mod oci;
pub mod oci_runtime;
pub mod qemu;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::process::{spawn_server, ChildProcess};
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

/// Bring `lo` up in the calling process's network namespace with raw
/// syscalls only (safe to call between fork and exec).
///
/// # Safety
/// Only async-signal-safe calls are made; the caller must be the child
/// between fork and exec or a normal thread.
unsafe fn lo_up() -> std::io::Result<()> {
    // SAFETY: plain socket syscall; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ifr.ifr_name[0] = b'l' as libc::c_char;
    ifr.ifr_name[1] = b'o' as libc::c_char;
    // SAFETY: SIOCGIFFLAGS fills ifr for the named interface.
    let mut r = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) };
    if r == 0 {
        // SAFETY: after SIOCGIFFLAGS the flags member of the union is the active one.
        unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: SIOCSIFFLAGS reads ifr.
        r = unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) };
    }
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    if r == 0 {
        Ok(())
    } else {
        Err(err)
    }
}

/// `cvbench-workload serve` in a network namespace of its own (only `lo`,
/// up): the peer end for the net workloads of runc and crun, whose container
/// joins this namespace. Traffic never leaves the namespace the run created.
pub struct NetPeer {
    proc: ChildProcess,
    pub addr: String,
}

impl NetPeer {
    pub fn start(workload_bin: &Path) -> Result<NetPeer, PeerError> {
        let addr = "127.0.0.1:5201".to_string();
        let mut cmd = Command::new(workload_bin);
        cmd.args(["serve", "--listen", &addr, "--max-conns", "1"]);
        // SAFETY: the closure runs in the child between fork and exec and
        // makes only raw syscalls (unshare, socket, ioctl, close), which are
        // async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                lo_up()
            });
        }
        let proc = spawn_server("peer-server", cmd).map_err(|e| PeerError::PeerServer(e.to_string()))?;
        Ok(NetPeer { proc, addr })
    }

    /// The namespace to join.
    pub fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.proc.pid()))
    }

    pub fn stop(&mut self) {
        let _ = self.proc.stop(Duration::from_secs(2));
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
    fn run_tool_reports_stderr_of_a_failing_tool() {
        let e = run_tool(Command::new("sh").args(["-c", "echo nope >&2; exit 3"])).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
