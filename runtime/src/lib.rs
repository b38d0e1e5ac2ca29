//! cvbench's container runtime: namespaces, cgroups v1/v2, layered OCI images on overlayfs,
//! seccomp, capabilities and veth networking, behind a small lifecycle handle.
//!
//! Entry points: [`container::Container`] (create/start/wait/kill/stats/delete),
//! [`container::run`], [`image::Store`], [`cleanup::gc`] and [`oci`] for bundles.

pub mod capabilities;
pub mod cgroups;
pub mod checkpoint;
pub mod cleanup;
pub mod config;
pub mod container;
pub mod image;
pub mod namespaces;
pub mod network;
pub mod oci;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod seccomp_profile;
pub mod state;
mod syscalls;

pub use config::ContainerConfig;
pub use container::{Container, ExitStatus, Stdio};

/// Default state directory (image store and container state).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cvbench";

/// Preferred directory for per-container runtime state.
pub const DEFAULT_RUN_ROOT: &str = "/run/cvbench";

/// Fallback when /run is not a tmpfs (as on this machine, where it is ext4 and an
/// unlink+rmdir costs ~1 ms instead of ~13 us).
pub const FALLBACK_RUN_ROOT: &str = "/dev/shm/cvbench";

/// The run root to use: `/run/cvbench` when /run is a tmpfs, else `/dev/shm/cvbench`.
pub fn default_run_root() -> std::path::PathBuf {
    let tmpfs =
        nix::sys::statfs::statfs("/run").map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC).unwrap_or(false);
    std::path::PathBuf::from(if tmpfs { DEFAULT_RUN_ROOT } else { FALLBACK_RUN_ROOT })
}

/// Every error the runtime returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the container runtime must run as root (euid {0})")]
    NotRoot(u32),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("container `{0}` already exists")]
    Exists(String),
    #[error("container `{0}` not found")]
    NoSuchContainer(String),
    #[error("I/O error on {path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {0:?} waiting for the container")]
    Timeout(std::time::Duration),
    #[error("interrupted by a signal; the container was killed")]
    Interrupted,
    #[error("cannot {verb} container `{id}`: it is {}", status.as_str())]
    BadStatus { id: String, verb: &'static str, status: state::Status },
    #[error(transparent)]
    State(#[from] state::Error),
    #[error(transparent)]
    Namespace(#[from] namespaces::Error),
    #[error(transparent)]
    Cgroup(#[from] cgroups::Error),
    #[error(transparent)]
    Image(#[from] image::Error),
    #[error(transparent)]
    Rootfs(#[from] rootfs::Error),
    #[error(transparent)]
    Process(#[from] process::Error),
    #[error(transparent)]
    Network(#[from] network::Error),
    #[error(transparent)]
    Capability(#[from] capabilities::Error),
    #[error(transparent)]
    Oci(#[from] oci::Error),
}
