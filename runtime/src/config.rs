//! The container configuration: the one serde type the CLI, the OCI bundle loader, the harness
//! backend and the tests all build, so they exercise identical setups.

use crate::namespaces::Namespace;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Where the container's read-only layers come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RootfsSource {
    /// An image in the local store, by tag (`name[:tag]`) or manifest digest.
    Image(String),
    /// A plain directory (an OCI bundle's rootfs), used as the single lower layer.
    Dir(PathBuf),
}

/// How the container is networked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// A fresh network namespace with `lo` left down.
    None,
    /// A fresh network namespace with `lo` up.
    #[default]
    Loopback,
    /// `lo` up plus a veth pair to a peer namespace the run creates, one /30 per container.
    Veth,
    /// No network namespace at all (the host's), only with `--privileged`.
    Host,
}

impl std::str::FromStr for NetMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(NetMode::None),
            "loopback" => Ok(NetMode::Loopback),
            "veth" => Ok(NetMode::Veth),
            "host" => Ok(NetMode::Host),
            other => Err(format!("unknown network mode `{other}` (none|loopback|veth|host)")),
        }
    }
}

/// Which cgroup hierarchy to use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum CgroupChoice {
    /// Probe `/sys/fs/cgroup`: cgroup2 there means v2, otherwise v1.
    #[default]
    Auto,
    /// v1 hierarchies mounted under this directory (one per controller).
    V1(PathBuf),
    /// A cgroup2 hierarchy mounted at this directory.
    V2(PathBuf),
}

/// One id-mapping line for a user namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

/// The user the workload runs as.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// cgroup limits. `None` leaves the kernel default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    pub memory_bytes: Option<u64>,
    /// Memory plus swap (v1 `memsw`); v2 gets `swap = this - memory`.
    pub memory_swap_bytes: Option<u64>,
    pub cpu_quota_us: Option<i64>,
    pub cpu_period_us: Option<u64>,
    /// v1 `cpu.shares` (2..=262144); converted for v2 `cpu.weight`.
    pub cpu_shares: Option<u64>,
    pub pids_max: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
}

/// A mount added to the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    /// `bind` or `tmpfs`.
    pub kind: String,
    pub source: PathBuf,
    pub destination: PathBuf,
    #[serde(default)]
    pub readonly: bool,
}

/// Everything needed to create one container.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerConfig {
    /// Container id; generated (`cvbench-PID-N`) when empty.
    pub id: String,
    pub rootfs: RootfsSource,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: User,
    pub hostname: String,
    pub namespaces: BTreeSet<Namespace>,
    pub uid_map: Vec<IdMap>,
    pub gid_map: Vec<IdMap>,
    pub resources: Resources,
    pub net: NetMode,
    /// Keep all capabilities and skip seccomp and masked paths.
    pub privileged: bool,
    pub seccomp_unconfined: bool,
    /// Capability names (`CAP_NET_RAW`...) replacing Docker's default set.
    pub capabilities: Option<Vec<String>>,
    pub masked_paths: Option<Vec<String>>,
    pub readonly_paths: Option<Vec<String>>,
    pub readonly_rootfs: bool,
    pub mounts: Vec<MountSpec>,
    pub cgroup: CgroupChoice,
    /// The image store lives here.
    pub state_dir: PathBuf,
    /// Per-container state dirs (`<run_root>/containers/<id>`) live here.
    pub run_root: PathBuf,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        ContainerConfig {
            id: String::new(),
            rootfs: RootfsSource::Image(crate::image::DEFAULT_IMAGE.to_string()),
            args: Vec::new(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            cwd: "/".into(),
            user: User::default(),
            hostname: "cvbench".into(),
            namespaces: crate::namespaces::default_set(),
            uid_map: Vec::new(),
            gid_map: Vec::new(),
            resources: Resources::default(),
            net: NetMode::default(),
            privileged: false,
            seccomp_unconfined: false,
            capabilities: None,
            masked_paths: None,
            readonly_paths: None,
            readonly_rootfs: false,
            mounts: Vec::new(),
            cgroup: CgroupChoice::Auto,
            state_dir: PathBuf::from(crate::DEFAULT_STATE_DIR),
            run_root: crate::default_run_root(),
        }
    }
}

impl ContainerConfig {
    /// Whether the container gets a namespace of this kind.
    pub fn has(&self, ns: Namespace) -> bool {
        self.namespaces.contains(&ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_unknown_fields() {
        let err = serde_json::from_str::<ContainerConfig>(r#"{"bogus": 1}"#).unwrap_err();
        assert!(err.to_string().contains("bogus"));
    }

    #[test]
    fn config_defaults_fill_missing_fields() {
        let cfg: ContainerConfig = serde_json::from_str(r#"{"args": ["/x"]}"#).unwrap();
        assert_eq!(cfg.net, NetMode::Loopback);
        assert!(cfg.has(Namespace::Pid));
        assert!(!cfg.has(Namespace::User));
    }
}
