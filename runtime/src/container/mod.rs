//! The container lifecycle handle, after youki's `libcontainer/src/container/`: the handle
//! and its accessors live here, each verb in its own module (`create`, `start`, `wait`,
//! `kill`, `delete`), the persisted state and status in [`crate::state`]. Dropping a handle
//! deletes everything it made; per-phase host timings are kept for the record.

mod create;
mod delete;
mod kill;
mod start;
mod wait;

pub use crate::state::{alive, proc_start_time, State, Status};
pub use create::validate;
pub(crate) use create::PidNsGuard;
pub use delete::delete_stored;

use crate::cgroups::{CgroupManager, Stats};
use crate::network::Veth;
use crate::process::clone::Child;
use crate::process::init::ChildPlan;
use crate::{cleanup, Error};
use serde::{Deserialize, Serialize};
use start::PhaseMarks;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

/// Where the container's standard streams go; `None` inherits the caller's.
#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// How the container ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The cgroup recorded an OOM kill.
    pub oom_killed: bool,
}

/// How `create` hands over to `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Return once the rootfs is ready; `start` releases the child.
    Ready,
    /// Release the child right away (the fast `run` path).
    Immediate,
    /// OCI create/start: the child blocks on `<run dir>/exec.fifo` until another process
    /// (`cvbench-runtime start`) opens it.
    Fifo,
}

/// Placeholder in `args` replaced by the veth peer's IPv4 address in `--net veth` mode.
pub const PEER_IP: &str = "{peer_ip}";

/// Whether the handle still owns host resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hold {
    /// It made them and removes them on delete/drop.
    Owned,
    /// Removed already, handed over (`detach`), or never ours (an id clash).
    Released,
}

/// A container and everything created for it.
pub struct Container {
    state: State,
    gate: Gate,
    hold: Hold,
    child: Option<Child>,
    status_rd: Option<File>,
    go_wr: Option<File>,
    plan: Option<ChildPlan>,
    cgroup: Option<Box<dyn CgroupManager>>,
    veth: Option<Veth>,
    phases: Vec<(String, u64)>,
    marks: PhaseMarks,
    exit: Option<ExitStatus>,
    final_stats: Option<Stats>,
    pid_slot: Option<cvbench_signals::PidSlot>,
    notes: Vec<String>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn cpath(p: &Path) -> Result<CString, Error> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Config(format!("path {} contains NUL", p.display())))
}

impl Container {
    fn phase(&mut self, name: &str, since: u64) {
        self.phases.push((name.into(), crate::process::channel::now_ns().saturating_sub(since)));
    }

    /// Persist the state and tell the cleanup registry what this container holds now.
    fn save_state(&self) -> Result<(), Error> {
        self.state.save()?;
        cleanup::track(&self.state);
        Ok(())
    }

    /// The container id.
    pub fn id(&self) -> &str {
        &self.state.id
    }

    /// Host pid of the container's first process.
    pub fn pid(&self) -> i32 {
        self.state.pid
    }

    /// Where the container is in its life.
    pub fn status(&self) -> Status {
        self.state.status
    }

    /// Host pids belonging to this container (cgroup members plus peer-namespace servers).
    pub fn pids(&self) -> Vec<i32> {
        let mut v = self.cgroup.as_ref().and_then(|g| g.procs().ok()).unwrap_or_default();
        if v.is_empty() && self.exit.is_none() && self.state.pid > 0 {
            v.push(self.state.pid);
        }
        if let Some(n) = &self.veth {
            v.extend(n.server_pids());
        }
        v
    }

    /// The veth link, in `--net veth` mode.
    pub fn veth(&self) -> Option<&Veth> {
        self.veth.as_ref()
    }

    /// Mutable veth access (to start servers in the peer namespace).
    pub fn veth_mut(&mut self) -> Option<&mut Veth> {
        self.veth.as_mut()
    }

    /// Ordered (phase, ns) timings so far.
    pub fn phases(&self) -> &[(String, u64)] {
        &self.phases
    }

    /// Remarks worth recording (e.g. how the cgroup attach was done).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The on-disk state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Mutable state (the OCI layer adds the bundle and annotations before saving).
    pub fn state_mut(&mut self) -> &mut State {
        &mut self.state
    }

    /// Write the state file now.
    pub fn persist(&self) -> Result<(), Error> {
        self.save_state()
    }

    /// cgroup version in use.
    pub fn cgroup_version(&self) -> &'static str {
        self.cgroup.as_ref().map_or("none", |g| g.version())
    }

    /// Current cgroup statistics, or the final ones after exit.
    pub fn stats(&self) -> Result<Stats, Error> {
        if let Some(s) = &self.final_stats {
            return Ok(s.clone());
        }
        match &self.cgroup {
            Some(g) => Ok(g.stats()?),
            None => Ok(Stats::default()),
        }
    }

    pub fn freeze(&self) -> Result<(), Error> {
        match &self.cgroup {
            Some(g) => Ok(g.freeze()?),
            None => Ok(()),
        }
    }

    pub fn thaw(&self) -> Result<(), Error> {
        match &self.cgroup {
            Some(g) => Ok(g.thaw()?),
            None => Ok(()),
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.delete();
    }
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub exit: ExitStatus,
    pub phases: Vec<(String, u64)>,
    pub stats: Stats,
}

/// create + start + wait + delete. On timeout the container is killed and `Error::Timeout`
/// returned (after cleanup).
pub fn run(cfg: &crate::ContainerConfig, stdio: Stdio, timeout: Option<Duration>) -> Result<RunResult, Error> {
    let mut c = Container::create_started(cfg, stdio)?;
    let exit = c.wait(timeout);
    let stats = c.stats().unwrap_or_default();
    c.delete()?;
    let exit = exit?;
    Ok(RunResult { exit, phases: c.phases().to_vec(), stats })
}
