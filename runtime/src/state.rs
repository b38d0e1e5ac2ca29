//! Persisted container state (`<run root>/containers/<id>/state.json`) and the lifecycle
//! status with its legal transitions. A leaf: the container verbs, the OCI commands and the
//! cleanup registry all build on it, it depends on none of them.

use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// Errors reading and writing state files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write container state {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the state of container `{id}`")]
    Encode {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("container state {path} is not valid")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Where a container is in its life (the OCI runtime spec's states).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The runtime is still setting it up.
    #[default]
    Creating,
    /// Set up; the process waits to be started.
    Created,
    /// The user's process runs (or exec'd).
    Running,
    /// The process has exited.
    Stopped,
}

impl Status {
    /// `start` is legal only for a created container.
    pub fn can_start(self) -> bool {
        self == Status::Created
    }

    /// A signal can go to a created or running container.
    pub fn can_kill(self) -> bool {
        matches!(self, Status::Created | Status::Running)
    }

    /// `delete` without force is legal only once the process is gone.
    pub fn can_delete(self) -> bool {
        self == Status::Stopped
    }

    /// The OCI name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        }
    }
}

/// Who is responsible for removing a container's resources when it goes away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Keeper {
    /// The creating process: gc removes the container once that process is gone.
    #[default]
    Owner,
    /// Nobody in particular (OCI `create` hands over to later invocations): gc removes it
    /// only once the container's process is gone.
    Detached,
}

/// What a container has made on the host, as written to its state file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub status: Status,
    pub owner_pid: u32,
    pub owner_start: u64,
    pub pid: i32,
    pub pid_start: u64,
    pub bundle: Option<PathBuf>,
    pub cgroups: Vec<PathBuf>,
    /// Ancestors of `cgroups` made for a nested cgroupsPath, outermost first (removed after
    /// them when empty).
    #[serde(default)]
    pub cgroup_parents: Vec<PathBuf>,
    pub netns: Option<String>,
    pub net_slot: Option<PathBuf>,
    pub keeper: Keeper,
    pub run_dir: PathBuf,
    /// OCI annotations from the bundle, reported by `state`.
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// The bundle's hooks, for the `start` and `delete` invocations that run the later ones.
    #[serde(default)]
    pub hooks: Option<oci_spec::runtime::Hooks>,
}

/// The state file of container `id` under `run_root`.
pub fn path(run_root: &Path, id: &str) -> PathBuf {
    run_root.join("containers").join(id).join("state.json")
}

impl State {
    /// Write the state file atomically (temp file + rename).
    pub fn save(&self) -> Result<(), Error> {
        let path = self.run_dir.join("state.json");
        let tmp = self.run_dir.join(".state.json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| Error::Encode { id: self.id.clone(), source })?;
        fs::write(&tmp, bytes).map_err(|source| Error::Write { path: tmp.clone(), source })?;
        fs::rename(&tmp, &path).map_err(|source| Error::Write { path: path.clone(), source })
    }

    /// Read the state of container `id`; `None` when there is no readable state file.
    pub fn load(run_root: &Path, id: &str) -> Result<Option<State>, Error> {
        Self::load_file(&path(run_root, id))
    }

    /// Read a state file; `None` when it does not exist.
    pub fn load_file(p: &Path) -> Result<Option<State>, Error> {
        let Ok(bytes) = fs::read(p) else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|source| Error::Decode { path: p.to_path_buf(), source })
    }

    /// Whether the container's first process is still the one we started.
    pub fn process_alive(&self) -> bool {
        alive(self.pid, self.pid_start)
    }

    /// The status as seen now: a recorded created/running container whose process is gone
    /// is stopped.
    pub fn current_status(&self) -> Status {
        match self.status {
            Status::Created | Status::Running if !self.process_alive() => Status::Stopped,
            s => s,
        }
    }
}

/// Field `n` (1-based, as in proc(5); n >= 3) of /proc/PID/stat, read after the command name.
fn proc_stat_field(pid: i32, n: usize) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = s.get(s.rfind(')')? + 2..)?;
    after.split_whitespace().nth(n.checked_sub(3)?).map(str::to_string)
}

/// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn proc_start_time(pid: i32) -> Option<u64> {
    proc_stat_field(pid, 22)?.parse().ok()
}

/// Whether `pid` has exited and waits to be reaped (state `Z`, field 3 of /proc/PID/stat).
pub fn zombie(pid: i32) -> bool {
    proc_stat_field(pid, 3).as_deref() == Some("Z")
}

/// Whether `pid` is alive and is the process that started at `start` (0: don't check).
pub fn alive(pid: i32, start: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    match proc_start_time(pid) {
        Some(s) => start == 0 || s == start,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_created_can_start() {
        assert!(Status::Created.can_start());
        for s in [Status::Creating, Status::Running, Status::Stopped] {
            assert!(!s.can_start(), "{s:?}");
        }
    }

    #[test]
    fn stopped_cannot_be_killed_and_only_stopped_deleted() {
        assert!(Status::Running.can_kill() && Status::Created.can_kill());
        assert!(!Status::Stopped.can_kill() && !Status::Creating.can_kill());
        assert!(Status::Stopped.can_delete());
        assert!(!Status::Running.can_delete() && !Status::Created.can_delete());
    }

    #[test]
    fn a_dead_running_container_reads_as_stopped() {
        let s = State { status: Status::Running, pid: i32::MAX - 1, ..Default::default() };
        assert_eq!(s.current_status(), Status::Stopped);
    }

    #[test]
    fn state_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = State { id: "x".into(), status: Status::Created, run_dir: dir.path().into(), ..Default::default() };
        s.save().unwrap();
        let back = State::load_file(&dir.path().join("state.json")).unwrap().unwrap();
        assert_eq!(back.status, Status::Created);
        assert_eq!(back.id, "x");
    }
}
