//! The backend seam: how the harness starts one workload instance natively,
//! in a container or in a micro-VM, and what it gets back. Every backend
//! implements [`Backend`]; [`BackendId`] names them and [`BackendId::backend`] makes one.

pub mod console;
pub mod container;
pub mod guestkit;
pub mod id;
pub mod microvm;
pub mod microvm_bare;
pub mod native;
pub mod netpath;
pub mod peers;
pub mod process;
pub mod restore;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::time::Duration;

pub use id::{BackendId, Kind, Placement, Profile, UnknownBackend};

use crate::record::ExitInfo;
use crate::workload::{Needs, Workload};

/// Errors a backend can report; each names the backend and what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend {backend} cannot run on this host: {reason}")]
    Unavailable { backend: String, reason: String },
    #[error("backend {backend} does not support workload {workload}: {reason}")]
    Unsupported { backend: String, workload: String, reason: String },
    #[error("backend {backend} failed to launch {workload}")]
    Launch {
        backend: String,
        workload: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("backend {backend} failed while waiting for pid {pid}")]
    Wait {
        backend: String,
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("backend {backend}: {what} failed")]
    Other {
        backend: String,
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("no backend named {0:?} (known: {1})")]
    UnknownBackend(String, String),
}

/// Network set-up for the instance (containers; VMs use their own device). The one network-mode
/// enum of the harness: `cvbench run --net` parses into it, and it converts into the runtime's
/// `cvbench_runtime::config::NetMode` with `From`. The harness's default is [`NetMode::None`]
/// (also when `--net` is not given); the runtime's own default (`Loopback`, for its CLI and OCI
/// configs) never applies to a harness run, which always passes its mode explicitly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// An empty network namespace (not even lo up) for containers.
    #[default]
    None,
    /// Own network namespace with only lo up.
    Loopback,
    /// A veth pair to a peer namespace the run creates (one /30).
    Veth,
}

impl From<NetMode> for cvbench_runtime::config::NetMode {
    fn from(mode: NetMode) -> Self {
        match mode {
            NetMode::None => Self::None,
            NetMode::Loopback => Self::Loopback,
            NetMode::Veth => Self::Veth,
        }
    }
}

/// Knobs a run can set. Fields a backend has no use for are ignored by it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendOptions {
    /// Containers: keep all capabilities, no seccomp, no masked paths.
    pub privileged: bool,
    /// Containers: no seccomp filter.
    pub seccomp_unconfined: bool,
    /// Containers: network mode (net workloads force `veth`).
    pub net: NetMode,
    /// Containers: namespaces to create (default: all but user).
    pub namespaces: Option<Vec<String>>,
    /// Containers: memory limit in bytes.
    pub memory_limit: Option<u64>,
    /// Containers: CPU quota as a percentage of one CPU.
    pub cpu_quota_pct: Option<u32>,
    /// Containers: maximum number of tasks.
    pub pids_limit: Option<u64>,
    /// Containers: image name in the local store (default: the workload image).
    pub image: Option<String>,
    /// VMs: guest memory in MiB.
    pub guest_mem_mib: Option<u32>,
    /// VMs: number of vCPUs.
    pub vcpus: Option<u8>,
    /// microvm-bare: run the VMM without its jail (`--no-jail`; for the jail-cost benchmark).
    pub vmm_no_jail: bool,
    /// Processes the harness spawns for the instance write "0" to these files before exec (v1
    /// `tasks`, v2 `cgroup.procs` of the density unit's parent cgroup).
    pub join_cgroup_procs: Vec<std::path::PathBuf>,
    /// Containers of our runtime: create the container's cgroup below this one (relative name).
    pub cgroup_parent: Option<String>,
    /// The CPU the instance is pinned to (set by the runner). Backends whose instance a daemon
    /// starts (docker) pass it on, since a daemon runs on the harness's CPU.
    pub instance_cpu: Option<usize>,
}

/// What to run: one workload subcommand with its arguments.
pub struct LaunchSpec {
    pub workload: Workload,
    pub args: Vec<String>,
    /// When true the instance's stdin is a pipe the harness can close
    /// ([`Instance::close_stdin`]); otherwise it is /dev/null.
    pub stdin_pipe: bool,
    /// Write end of the pipe the harness reads READY and the JSON line from.
    pub stdout: OwnedFd,
    /// Write end of the pipe the harness keeps for error messages.
    pub stderr: OwnedFd,
    pub timeout: Duration,
    pub options: BackendOptions,
}

impl LaunchSpec {
    /// What the workload needs from the backend (peer, disk, a stop).
    pub fn needs(&self) -> Needs {
        self.workload.needs()
    }
}

/// A way of running the workload.
/// `Any` so a scenario that needs one backend's own handle (the registry scenarios: the
/// private dockerd's CLI) can downcast to it.
pub trait Backend: Send + Sync + std::any::Any {
    fn id(&self) -> BackendId;
    fn name(&self) -> &'static str {
        self.id().name()
    }
    /// `Err(reason)` when this host cannot run the backend.
    fn check(&self) -> Result<(), String>;
    /// Start one instance. The harness takes its launch timestamp just before
    /// this call. For `net-stream`/`net-rr` the backend starts the peer server
    /// where its peer lives and appends `--peer IP:PORT`; for `disk` it appends
    /// `--dir` with the storage under test.
    fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn Instance>, BackendError>;
}

/// One running instance. Dropping it kills and removes everything it made.
pub trait Instance: Send {
    /// Host processes that make up this instance (for RSS/PSS).
    fn pids(&self) -> Vec<i32>;
    /// Close the instance's stdin (ends `idle`); no-op when not piped.
    fn close_stdin(&mut self);
    /// Wait for exit; on timeout, kill, clean up and return a timeout error.
    fn wait(&mut self, timeout: Duration) -> Result<ExitInfo, BackendError>;
    /// SIGTERM, then SIGKILL after a grace period.
    fn stop(&mut self) -> Result<ExitInfo, BackendError>;
    /// The workload arguments actually passed, when the backend added some
    /// (`--peer`, `--dir`); `None` means exactly the requested ones.
    fn effective_args(&self) -> Option<Vec<String>> {
        None
    }
    /// True when [`Instance::close_stdin`] could not reach the workload and stopped the whole
    /// instance instead (a VM has no stdin): an `idle` workload then never prints its result line.
    fn stopped_instead_of_closing_stdin(&self) -> bool {
        false
    }
    /// Processes a daemon shares between every instance of the backend (dockerd, containerd
    /// and the containerd shims): not in [`Instance::pids`], sampled at READY into
    /// `extra.shared_daemon_{rss,pss}_kib` so a row can add the share for N instances.
    fn shared_pids(&self) -> Vec<i32> {
        Vec::new()
    }
    /// For a VMM: the size of the guest's RAM, so the harness can split the VMM's RSS at READY
    /// into guest memory touched and the VMM's own overhead.
    fn guest_ram_bytes(&self) -> Option<u64> {
        None
    }
    /// Ordered per-phase host timings (name, ns).
    fn phases(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
    /// Backend measurements; `peak_rss_kib`, if present, fills the footprint.
    fn extra(&self) -> BTreeMap<String, f64> {
        BTreeMap::new()
    }
    /// Honest remarks for the record.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Names of every backend the suite knows, in report order.
pub const ALL: &[&str] = &{
    let mut names = [""; BackendId::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = BackendId::ALL[i].name();
        i += 1;
    }
    names
};

impl BackendId {
    /// The backend itself: the one place a variant meets its module.
    pub fn backend(self) -> Box<dyn Backend> {
        use peers::oci_runtime::{Kind as Oci, OciRuntime, Platform};
        match self {
            BackendId::Native => Box::new(native::Native::new()),
            BackendId::Container => Box::new(container::ContainerBackend::new()),
            BackendId::ContainerNomemcg => Box::new(container::ContainerBackend::variant(container::Variant::NoMemcg)),
            BackendId::ContainerHostnet => Box::new(container::ContainerBackend::variant(container::Variant::HostNet)),
            BackendId::Microvm => Box::new(microvm::MicroVm::new()),
            BackendId::MicrovmBare => Box::new(microvm_bare::MicroVmBare::new()),
            BackendId::Runc => Box::new(OciRuntime::new(Oci::Runc)),
            BackendId::Crun => Box::new(OciRuntime::new(Oci::Crun)),
            BackendId::CvbenchRuntime => Box::new(OciRuntime::new(Oci::Cvbench)),
            BackendId::Docker => Box::new(peers::docker::Docker::new()),
            BackendId::DockerCvbench => Box::new(peers::docker::Docker::over_cvbench_runtime()),
            BackendId::Qemu => Box::new(peers::qemu::Qemu::new()),
            BackendId::Youki => Box::new(OciRuntime::new(Oci::Youki)),
            BackendId::Podman => Box::new(peers::podman::Podman::new()),
            BackendId::Gvisor => Box::new(OciRuntime::new(Oci::Gvisor(Platform::Systrap))),
            BackendId::GvisorPtrace => Box::new(OciRuntime::new(Oci::Gvisor(Platform::Ptrace))),
            BackendId::GvisorKvm => Box::new(OciRuntime::new(Oci::Gvisor(Platform::Kvm))),
        }
    }
}

/// Look a backend up by name (for names from outside: files, `--backends`, tests).
pub fn by_name(name: &str) -> Result<Box<dyn Backend>, BackendError> {
    let id: BackendId = name.parse().map_err(|_| BackendError::UnknownBackend(name.to_string(), ALL.join(", ")))?;
    Ok(id.backend())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cvbench_runtime::config::NetMode as RtNet;

    #[test]
    fn the_harness_net_mode_defaults_to_none_and_converts_mode_for_mode() {
        assert_eq!(BackendOptions::default().net, NetMode::None);
        assert_eq!(RtNet::from(NetMode::None), RtNet::None);
        assert_eq!(RtNet::from(NetMode::Loopback), RtNet::Loopback);
        assert_eq!(RtNet::from(NetMode::Veth), RtNet::Veth);
    }
}
