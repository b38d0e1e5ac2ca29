//! What a Linux guest's host process (our VMM or QEMU) shares across backends: the guest's
//! I/O for the workload (the peer server for `net-*`, the ext4 disk for `disk`, and the
//! arguments that point the workload at them) and the running process, whose serial console
//! is relayed to the harness and which has no stdin (an `idle` guest is stopped instead).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::disk::make_disk;
use super::peer::{PeerServer, HOST_IP};
use crate::backend::console::{self, Console};
use crate::backend::peers::launch_err;
use crate::backend::process::ChildProcess;
use crate::backend::{BackendError, LaunchSpec};
use crate::paths;
use crate::workload::{Needs, SERVE_PORT};

/// The guest's side of the workload's I/O, made before the VM starts.
pub(crate) struct GuestIo {
    /// The workload's arguments, `--peer` or `--dir` appended.
    pub(crate) args: Vec<String>,
    /// For `net-*`: the server in its own namespace, where the VM's link goes.
    pub(crate) peer: Option<PeerServer>,
    /// For `disk`: the ext4 image the guest mounts at /mnt.
    pub(crate) disk: Option<PathBuf>,
}

impl GuestIo {
    /// What `spec`'s workload needs, for `backend`, with scratch files in `dir`.
    pub(crate) fn prepare(backend: &str, spec: &LaunchSpec, dir: &Path) -> Result<GuestIo, BackendError> {
        let w = spec.workload.name();
        let mut io = GuestIo { args: spec.args.clone(), peer: None, disk: None };
        match spec.needs() {
            Needs { network: true, .. } => {
                let bin = paths::workload_binary().map_err(|e| launch_err(backend, w, e))?;
                io.peer = Some(PeerServer::start(&bin)?);
                io.args.extend(["--peer".to_string(), format!("{HOST_IP}:{SERVE_PORT}")]);
            }
            Needs { disk: true, .. } => {
                io.disk = Some(make_disk(backend, dir, w)?);
                io.args.extend(["--dir".to_string(), "/mnt".to_string()]);
            }
            _ => {}
        }
        Ok(io)
    }
}

/// A running guest: its host process, the relayed console, the peer server it talks to.
pub(crate) struct GuestProcess {
    pub(crate) child: ChildProcess,
    pub(crate) console: Arc<Mutex<Console>>,
    relay: Option<JoinHandle<()>>,
    pub(crate) launched: Instant,
    pub(crate) args: Vec<String>,
    pub(crate) peer: Option<PeerServer>,
    /// Guest RAM, MiB.
    mem_mib: u32,
    /// Closing stdin (`idle`) stops the guest.
    pub(crate) stdin_stop: console::StdinStop,
}

impl GuestProcess {
    /// Spawn `cmd` for `spec` with `io`'s arguments and peer; its stdout (the serial console)
    /// goes through the relay to `spec.stdout`.
    pub(crate) fn spawn(
        backend: &'static str,
        cmd: Command,
        spec: LaunchSpec,
        io: GuestIo,
        mem_mib: u32,
    ) -> Result<GuestProcess, BackendError> {
        let w = spec.workload.name();
        let LaunchSpec { workload, stdout, stderr, timeout, options, stdin_pipe, .. } = spec;
        let stdin_stop = console::StdinStop::new(stdin_pipe);
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| launch_err(backend, w, e))?;
        let child_spec = LaunchSpec {
            workload,
            args: io.args.clone(),
            // The guest has no stdin: `idle` ends by stop/drop, not by closing stdin.
            stdin_pipe: false,
            stdout: wr,
            stderr,
            timeout,
            options,
        };
        let launched = Instant::now();
        let child = ChildProcess::spawn(backend, cmd, child_spec)?;
        let (console, relay) = console::relay(rd, stdout);
        Ok(GuestProcess {
            child,
            console,
            relay: Some(relay),
            launched,
            args: io.args,
            peer: io.peer,
            mem_mib,
            stdin_stop,
        })
    }

    /// After the process ended: the relay drained, the peer server stopped.
    pub(crate) fn finish(&mut self) {
        if let Some(h) = self.relay.take() {
            let _ = h.join();
        }
        if let Some(p) = self.peer.as_mut() {
            let _ = p.proc.stop(Duration::from_secs(2));
        }
    }

    /// The guest has no stdin: ending its input means asking its host process to stop the
    /// guest (SIGTERM), which is how an `idle` instance ends.
    pub(crate) fn close_stdin(&mut self) {
        self.stdin_stop.close_stdin(&self.child);
    }

    pub(crate) fn guest_ram_bytes(&self) -> u64 {
        u64::from(self.mem_mib) << 20
    }

    pub(crate) fn stop(&mut self) -> Result<crate::record::ExitInfo, BackendError> {
        let r = self.child.stop(Duration::from_secs(2));
        self.finish();
        r
    }
}

impl Drop for GuestProcess {
    fn drop(&mut self) {
        let _ = self.child.stop(Duration::from_millis(500));
        self.finish();
    }
}
