//! What this host is and can do: the environment manifest written with every
//! result set, and the checks `cvbench doctor` prints.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Which kind of KVM `/dev/kvm` is: the VMM's own detector (one for the VMM, the doctor and
/// the manifest).
pub use cvbench_microvm::host::{kvm_kind, KvmKind};

/// How cgroups are mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CgroupMode {
    /// Pure cgroup2 at /sys/fs/cgroup.
    V2,
    /// v1 controllers, with a cgroup2 hierarchy at /sys/fs/cgroup/unified.
    Hybrid,
    /// v1 controllers only.
    V1,
    Absent,
}

fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

pub fn cgroup_mode() -> CgroupMode {
    let root = Path::new("/sys/fs/cgroup");
    if is_cgroup2(root) {
        CgroupMode::V2
    } else if root.join("memory").is_dir() {
        if is_cgroup2(&root.join("unified")) {
            CgroupMode::Hybrid
        } else {
            CgroupMode::V1
        }
    } else {
        CgroupMode::Absent
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn overlayfs_available() -> bool {
    std::fs::read_to_string("/proc/filesystems").map(|s| s.lines().any(|l| l.ends_with("\toverlay"))).unwrap_or(false)
}

/// First line of `cmd --version`, or `None` when it is not installed.
pub fn tool_version(cmd: &str, arg: &str) -> Option<String> {
    let out = Command::new(cmd).arg(arg).output().ok()?;
    let text = String::from_utf8_lossy(if out.stdout.is_empty() { &out.stderr } else { &out.stdout }).into_owned();
    text.lines().next().map(|l| l.trim().to_string()).filter(|l| !l.is_empty())
}

/// Peer systems and tools the comparison uses, with their versions.
pub fn peer_versions() -> BTreeMap<String, Option<String>> {
    [
        ("runc", "runc", "--version"),
        ("crun", "crun", "--version"),
        ("qemu", "qemu-system-x86_64", "--version"),
        ("docker", "dockerd", "--version"),
    ]
    .into_iter()
    .map(|(name, cmd, arg)| (name.to_string(), tool_version(cmd, arg)))
    .collect()
}

/// The environment a result set was measured in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub cvbench_version: String,
    pub git_rev: Option<String>,
    pub hostname: String,
    pub kernel: String,
    pub cpu_model: String,
    pub cores: usize,
    pub mem_total_kib: u64,
    pub kvm: KvmKind,
    pub cgroup: CgroupMode,
    pub peers: BTreeMap<String, Option<String>>,
    /// `/proc/loadavg` when the manifest was taken: other work on the host
    /// moves every figure, so the report says how busy the machine was.
    #[serde(default)]
    pub loadavg_at_start: Option<String>,
    /// The CPU as CPUID describes it: an emulated one (the test host) makes every timing
    /// unrepresentative, and the report says so.
    #[serde(default)]
    pub host_cpu: Option<crate::hostkind::HostCpu>,
}

fn cpuinfo_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn mem_total_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn git_rev() -> Option<String> {
    let out = Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Manifest {
    pub fn collect() -> Manifest {
        let uts = nix::sys::utsname::uname().ok();
        Manifest {
            cvbench_version: env!("CARGO_PKG_VERSION").to_string(),
            git_rev: git_rev(),
            hostname: uts.as_ref().map(|u| u.nodename().to_string_lossy().into_owned()).unwrap_or_default(),
            kernel: uts.as_ref().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
            cpu_model: cpuinfo_model(),
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            mem_total_kib: mem_total_kib(),
            kvm: kvm_kind(),
            cgroup: cgroup_mode(),
            peers: peer_versions(),
            loadavg_at_start: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
            host_cpu: Some(crate::hostkind::host_cpu()),
        }
    }

    /// A short stable id: the first 12 hex digits of the SHA-256 of the
    /// manifest's host description (the load average is not part of it).
    pub fn id(&self) -> String {
        let host = Manifest { loadavg_at_start: None, ..self.clone() };
        let json = serde_json::to_vec(&host).unwrap_or_default();
        let d = Sha256::digest(&json);
        d.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_id_changes_with_content() {
        let m = Manifest::collect();
        let mut m2 = m.clone();
        m2.cores += 1;
        assert_eq!(m.id().len(), 12);
        assert_ne!(m.id(), m2.id());
    }
}
