//! `delete`: kill and reap a live container, then remove its cgroups, network and run
//! dir; `detach` hands a created container over to later invocations; `delete_stored`
//! removes one known only from its state file (OCI `delete`).

use super::{io_err, Container, Hold};
use crate::process::channel::now_ns;
use crate::state::State;
use crate::{cleanup, Error};
use std::fs;

impl Container {
    /// Kill (if running), wait, and remove cgroups, network, state dir. Idempotent.
    pub fn delete(&mut self) -> Result<(), Error> {
        if self.hold == Hold::Released {
            return Ok(());
        }
        let t = now_ns();
        self.go_wr = None; // a child still waiting for "go" sees EOF and exits
        self.status_rd = None;
        if self.child.is_some() && self.exit.is_none() {
            let _ = self.signal(libc::SIGKILL);
            let _ = self.wait(None);
        }
        let mut first: Option<Error> = None;
        if let Some(g) = self.cgroup.as_mut() {
            // Stragglers (children of PID 1 when no pid namespace) die first.
            if let Ok(procs) = g.procs() {
                for p in procs {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
                }
            }
            if let Err(e) = g.remove() {
                first.get_or_insert(e.into());
            }
        }
        if let Some(mut v) = self.veth.take() {
            if let Err(e) = v.teardown() {
                first.get_or_insert(e.into());
            }
        }
        if self.state.run_dir.exists() {
            if let Err(e) = fs::remove_dir_all(&self.state.run_dir) {
                first.get_or_insert(io_err(&self.state.run_dir)(e));
            }
        }
        if let Some(slot) = self.pid_slot.take() {
            cleanup::unregister_pid(slot);
        }
        cleanup::untrack(&self.state.id);
        self.hold = Hold::Released;
        self.phase("cleanup", t);
        first.map_or(Ok(()), Err)
    }

    /// Leave the container running and its resources in place (OCI `create` hands over to
    /// later `start`/`delete` invocations).
    pub fn detach(mut self) {
        self.hold = Hold::Released;
        if let Some(slot) = self.pid_slot.take() {
            cleanup::unregister_pid(slot);
        }
        cleanup::untrack(&self.state.id);
        if let Some(g) = self.cgroup.take() {
            std::mem::forget(g);
        }
        if let Some(v) = self.veth.take() {
            std::mem::forget(v);
        }
    }
}

/// Remove a container known only from its state file (the OCI `delete` verb, run by
/// another process than the one that created it). Returns what was removed.
pub fn delete_stored(st: &State) -> Vec<String> {
    cleanup::remove_leftovers(st)
}
