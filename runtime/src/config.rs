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

/// How the container is networked. The default (`Loopback`) is the runtime's own, for its CLI and
/// OCI configs; the harness converts its `backend::NetMode` (default `None`) into this explicitly.
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
    /// Leave the container out of memory accounting: no memory cgroup of its own, and under
    /// v1 it joins the root memory cgroup, which the kernel does not charge. Refused with a
    /// memory limit, and under v2 where the parent enables `memory` for its whole subtree.
    pub no_memory_controller: bool,
    /// Device cgroup rules in order (OCI `linux.resources.devices`); empty: no device cgroup.
    pub devices: Vec<DeviceRule>,
    pub memory_bytes: Option<u64>,
    /// Memory plus swap (v1 `memsw`); v2 gets `swap = this - memory`.
    pub memory_swap_bytes: Option<u64>,
    /// Soft limit (OCI `memory.reservation`): v1 `memory.soft_limit_in_bytes`, v2 `memory.low`.
    pub memory_reservation_bytes: Option<u64>,
    /// v1 `memory.swappiness` (0..=100); cgroup v2 has no per-cgroup swappiness (refused).
    pub memory_swappiness: Option<u64>,
    /// v1 `memory.oom_control` = 1: the OOM killer leaves the cgroup's tasks alone (they wait
    /// for memory instead); cgroup v2 has no such switch (refused).
    pub disable_oom_killer: bool,
    pub cpu_quota_us: Option<i64>,
    pub cpu_period_us: Option<u64>,
    /// v1 `cpu.shares` (2..=262144); converted for v2 `cpu.weight`.
    pub cpu_shares: Option<u64>,
    pub pids_max: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// Block I/O weight and throttling (v1 blkio, v2 io).
    pub block_io: BlockIo,
    /// hugetlb limits (v1 and v2 hugetlb).
    pub hugepage_limits: Vec<HugepageLimit>,
    /// net_cls class id (v1 only).
    pub net_class_id: Option<u32>,
    /// net_prio priorities per interface (v1 only).
    pub net_priorities: Vec<NetPriority>,
}

/// Block I/O settings (OCI `linux.resources.blockIO`); weights are 10..=1000.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlockIo {
    pub weight: Option<u16>,
    pub leaf_weight: Option<u16>,
    pub weight_devices: Vec<WeightDevice>,
    pub throttle_read_bps: Vec<ThrottleDevice>,
    pub throttle_write_bps: Vec<ThrottleDevice>,
    pub throttle_read_iops: Vec<ThrottleDevice>,
    pub throttle_write_iops: Vec<ThrottleDevice>,
}

impl Resources {
    /// Whether any memory setting is asked for (each needs the memory controller).
    pub fn wants_memory_controller(&self) -> bool {
        self.memory_bytes.is_some()
            || self.memory_swap_bytes.is_some()
            || self.memory_reservation_bytes.is_some()
            || self.memory_swappiness.is_some()
            || self.disable_oom_killer
    }
}

impl BlockIo {
    /// Nothing asked for: no blkio/io controller needed.
    pub fn is_empty(&self) -> bool {
        *self == BlockIo::default()
    }

    /// The four throttle lists, each with its OCI field name, v1 file and v2 `io.max` key.
    pub fn throttles(&self) -> [Throttle<'_>; 4] {
        [
            Throttle {
                field: "linux.resources.blockIO.throttleReadBpsDevice",
                v1_file: "blkio.throttle.read_bps_device",
                v2_key: "rbps",
                devices: &self.throttle_read_bps,
            },
            Throttle {
                field: "linux.resources.blockIO.throttleWriteBpsDevice",
                v1_file: "blkio.throttle.write_bps_device",
                v2_key: "wbps",
                devices: &self.throttle_write_bps,
            },
            Throttle {
                field: "linux.resources.blockIO.throttleReadIOPSDevice",
                v1_file: "blkio.throttle.read_iops_device",
                v2_key: "riops",
                devices: &self.throttle_read_iops,
            },
            Throttle {
                field: "linux.resources.blockIO.throttleWriteIOPSDevice",
                v1_file: "blkio.throttle.write_iops_device",
                v2_key: "wiops",
                devices: &self.throttle_write_iops,
            },
        ]
    }
}

/// One throttle list of [`BlockIo`] with where it goes.
pub struct Throttle<'a> {
    pub field: &'static str,
    pub v1_file: &'static str,
    pub v2_key: &'static str,
    pub devices: &'a [ThrottleDevice],
}

/// A per-device block I/O weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightDevice {
    pub major: u32,
    pub minor: u32,
    pub weight: Option<u16>,
    pub leaf_weight: Option<u16>,
}

/// A per-device block I/O rate limit (bytes or operations per second).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleDevice {
    pub major: u32,
    pub minor: u32,
    pub rate: u64,
}

/// A hugetlb limit: `page_size` as the kernel names it in file names (`2MB`, `1GB`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HugepageLimit {
    pub page_size: String,
    pub limit: u64,
}

/// A net_prio priority for one network interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetPriority {
    pub interface: String,
    pub priority: u32,
}

/// A mount added to the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    /// `bind`, `tmpfs`, or (with `exact_mounts`) `proc`, `sysfs`, `mqueue`, `devpts`,
    /// `cgroup`.
    pub kind: String,
    pub source: PathBuf,
    pub destination: PathBuf,
    #[serde(default)]
    pub readonly: bool,
    /// mount(8)-style options (`nosuid`, `mode=755`, `rprivate`, ...), as an OCI bundle gives
    /// them; parsed by the rootfs planner.
    #[serde(default)]
    pub options: Vec<String>,
}

/// One device cgroup rule: `kind` is `a`, `c` or `b`; `None` major/minor mean any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: char,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    /// Some of `r`, `w`, `m`.
    pub access: String,
}

impl DeviceRule {
    /// The v1 `devices.allow`/`devices.deny` line (`c 1:3 rwm`, `a *:* rwm`).
    pub fn v1_line(&self) -> String {
        let n = |v: Option<i64>| v.map_or("*".to_string(), |x| x.to_string());
        if self.kind == 'a' && self.major.is_none() && self.minor.is_none() {
            return format!("a *:* {}", self.access);
        }
        format!("{} {}:{} {}", self.kind, n(self.major), n(self.minor), self.access)
    }
}

/// A device node to create in the container's /dev (OCI `linux.devices`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceNode {
    pub path: PathBuf,
    /// `c`, `b` or `p`.
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// One resource limit (`RLIMIT_*` number, soft and hard values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rlimit {
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// The five capability sets of the container process, by name (`CAP_*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapSets {
    pub bounding: Vec<String>,
    pub effective: Vec<String>,
    pub permitted: Vec<String>,
    pub inheritable: Vec<String>,
    pub ambient: Vec<String>,
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
    /// The mounts above replace the built-in /proc, /dev, /sys and /tmp (OCI bundles list
    /// their own); default devices and /dev symlinks are still made.
    pub exact_mounts: bool,
    /// All five capability sets (OCI); overrides `capabilities`.
    pub capability_sets: Option<CapSets>,
    pub rlimits: Vec<Rlimit>,
    /// Explicit no_new_privs; `None` means "on unless privileged".
    pub no_new_privileges: Option<bool>,
    pub oom_score_adj: Option<i32>,
    pub umask: Option<u32>,
    /// `/proc/sys` keys (dotted) and values, written inside the container's namespaces.
    pub sysctl: std::collections::BTreeMap<String, String>,
    /// A seccomp profile replacing the default one (OCI `linux.seccomp`).
    pub seccomp_profile: Option<crate::seccomp_profile::Profile>,
    /// The AppArmor profile the process execs into (OCI `process.apparmorProfile`); set only
    /// when AppArmor is enabled on the host (a profile for a host without it is ignored, as
    /// runc does, with a warning).
    pub apparmor_profile: Option<String>,
    /// Mount propagation of the container's root (`MS_*` flags; 0: private, the default).
    pub rootfs_propagation: u64,
    /// Namespaces to join (`setns`) instead of creating: (kind, path).
    pub join_namespaces: Vec<(Namespace, PathBuf)>,
    /// Sharing the host's network (`NetMode::Host`) without `privileged`: an OCI bundle that
    /// lists no network namespace asks for exactly that, and keeps every other confinement.
    pub host_net_allowed: bool,
    /// The cgroup to use (OCI `cgroupsPath`): relative to the runtime's own cgroup, or
    /// absolute from the hierarchy root. Default: `cvbench-<pid>-<id>`.
    pub cgroups_path: Option<PathBuf>,
    /// Without `cgroups_path`: the default cgroup goes below this one (a relative name that
    /// exists), e.g. a harness's cgroup holding several containers.
    pub cgroup_parent: Option<String>,
    pub devices: Vec<DeviceNode>,
    pub cgroup: CgroupChoice,
    /// OCI `process.terminal`: stdio is a pseudo-terminal (the caller passes its slave side)
    /// that becomes the first process's controlling terminal.
    pub terminal: bool,
    /// OCI `process.consoleSize` (rows, columns) for that terminal.
    pub console_size: Option<(u16, u16)>,
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
            exact_mounts: false,
            capability_sets: None,
            rlimits: Vec::new(),
            no_new_privileges: None,
            oom_score_adj: None,
            umask: None,
            sysctl: Default::default(),
            seccomp_profile: None,
            apparmor_profile: None,
            rootfs_propagation: 0,
            join_namespaces: Vec::new(),
            host_net_allowed: false,
            cgroups_path: None,
            cgroup_parent: None,
            devices: Vec::new(),
            cgroup: CgroupChoice::Auto,
            terminal: false,
            console_size: None,
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

    /// Whether the container joins an existing namespace of this kind by path.
    pub fn joins(&self, ns: Namespace) -> bool {
        self.join_namespaces.iter().any(|(k, _)| *k == ns)
    }

    /// Whether the container has a mount namespace of its own: a new one, or one it joins by
    /// path. Without one, its rootfs set-up would change the runtime's (the host's) mounts.
    pub fn has_mount_ns(&self) -> bool {
        self.has(Namespace::Mount) || self.joins(Namespace::Mount)
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
