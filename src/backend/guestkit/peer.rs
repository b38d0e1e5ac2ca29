//! The peer server of a VM's network workloads, alone in a network namespace of its own, and
//! the Linux guest's /30 inside it.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::backend::process::{spawn_server, ChildProcess};
use crate::backend::BackendError;
use crate::workload::SERVE_PORT;

/// The Linux VM's /30: host (tap, peer server) and guest ends. Both live only in the run's own
/// network namespace (the peer's), never in the host's.
pub(crate) const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 1);
pub(crate) const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 2);

/// The peer `cvbench-workload serve`, alone in a network namespace it unshared at start; the
/// VMM puts the VM's tap (or veth) into that namespace, so guest traffic never reaches the
/// host's.
pub(crate) struct PeerServer {
    pub(crate) proc: ChildProcess,
}

impl PeerServer {
    pub(crate) fn start(workload_bin: &Path) -> Result<PeerServer, BackendError> {
        let mut cmd = Command::new(workload_bin);
        // 0.0.0.0: the tap (and its address) appears only when the VMM starts.
        cmd.args(["serve", "--listen", &format!("0.0.0.0:{SERVE_PORT}"), "--max-conns", "1"]);
        // SAFETY: the closure runs between fork and exec and only calls unshare(2), which is
        // async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let proc = spawn_server("microvm-peer", cmd)?;
        Ok(PeerServer { proc })
    }

    pub(crate) fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.proc.pid()))
    }
}
