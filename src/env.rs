//! What this host is and can do: the environment manifest written with every
//! result set, and the checks `cvbench doctor` prints.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::record::{Design, HostNet};

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
    /// Whether the source tree had uncommitted changes (`None`: unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_dirty: Option<bool>,
    /// Firewall rule count and dockerd presence at the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_net: Option<HostNet>,
    /// How the bench run was designed (absent for single runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub design: Option<Design>,
    /// The swarm the user named with `bench --swarm-manager` and its nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<crate::record::NamedSwarm>,
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

/// The git directory of the source tree this binary was built from; a
/// worktree's `.git` is a file naming it.
fn git_dir(src: &Path) -> Option<std::path::PathBuf> {
    let dot = src.join(".git");
    if dot.is_dir() {
        return Some(dot);
    }
    let text = std::fs::read_to_string(&dot).ok()?;
    text.strip_prefix("gitdir:").map(|p| std::path::PathBuf::from(p.trim()))
}

/// Resolve `HEAD` to a commit by reading git's files (no `git` exec: this
/// runs on every `cvbench run`). Loose refs first, then `packed-refs`, in
/// the worktree's directory and in the common one.
pub fn read_head(git_dir: &Path) -> Option<String> {
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(name) = head.strip_prefix("ref:").map(str::trim) else {
        return Some(head.to_string());
    };
    let common = std::fs::read_to_string(git_dir.join("commondir"))
        .ok()
        .map(|c| git_dir.join(c.trim()))
        .unwrap_or_else(|| git_dir.to_path_buf());
    for dir in [git_dir, common.as_path()] {
        if let Ok(h) = std::fs::read_to_string(dir.join(name)) {
            return Some(h.trim().to_string());
        }
        if let Ok(packed) = std::fs::read_to_string(dir.join("packed-refs")) {
            if let Some(h) = packed.lines().find_map(|l| l.strip_suffix(name).map(str::trim)) {
                if !h.is_empty() && !h.starts_with('#') {
                    return Some(h.to_string());
                }
            }
        }
    }
    None
}

fn src_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn git_rev() -> Option<String> {
    let full = read_head(&git_dir(src_dir())?)?;
    Some(full.chars().take(12).collect())
}

/// Whether the source tree has uncommitted changes (`git status`; once per
/// bench, never per run). `None` when git cannot tell.
pub fn git_dirty() -> Option<bool> {
    let out = Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()?;
    out.status.success().then_some(!out.stdout.is_empty())
}

/// Rules in `iptables-save`/`nft list ruleset` output: lines that add a rule.
pub fn count_rules(iptables_save: &str, nft_ruleset: &str) -> u64 {
    let ipt = iptables_save.lines().filter(|l| l.starts_with("-A ")).count();
    // nft: statements inside chains, i.e. indented lines that are not chain
    // headers, policies, braces or set elements.
    let nft = nft_ruleset
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| {
            !(l.starts_with("table ")
                || l.starts_with("chain ")
                || l.starts_with("type ")
                || l.starts_with("set ")
                || l.starts_with("elements ")
                || l.starts_with("flags ")
                || *l == "}")
        })
        .count();
    (ipt + nft) as u64
}

fn run_text(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The host's firewall rule count and whether a dockerd runs (any dockerd
/// in /proc, ours or not).
pub fn host_net() -> HostNet {
    let ipt = run_text("iptables-save", &[]);
    let nft = run_text("nft", &["list", "ruleset"]);
    let firewall_rules = (ipt.is_some() || nft.is_some())
        .then(|| count_rules(ipt.as_deref().unwrap_or(""), nft.as_deref().unwrap_or("")));
    let dockerd_running = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .any(|e| std::fs::read_to_string(e.path().join("comm")).map(|c| c.trim() == "dockerd").unwrap_or(false))
        })
        .unwrap_or(false);
    HostNet { firewall_rules, dockerd_running }
}

impl Manifest {
    /// The host description (execs each peer's `--version`).
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
            git_dirty: None,
            host_net: None,
            design: None,
            swarm: None,
        }
    }

    /// The full manifest of a bench run: the host, the tree's dirty state and
    /// the host's network state.
    pub fn collect_for_bench() -> Manifest {
        Manifest { git_dirty: git_dirty(), host_net: Some(host_net()), ..Manifest::collect() }
    }

    /// A short stable id: the first 12 hex digits of the SHA-256 of the
    /// manifest's host description (not the load average, the tree's dirty
    /// state, the network state or the run's design).
    pub fn id(&self) -> String {
        let host = Manifest {
            loadavg_at_start: None,
            git_dirty: None,
            host_net: None,
            design: None,
            swarm: None,
            ..self.clone()
        };
        let json = serde_json::to_vec(&host).unwrap_or_default();
        let d = Sha256::digest(&json);
        d.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }
}

/// Where environment ids are cached: /run is a tmpfs, so the cache lives
/// for one boot.
pub const ENV_ID_CACHE_DIR: &str = "/run/cvbench-envid";

/// What the cached id depends on, read without exec'ing anything: the boot,
/// the source commit, this binary, and each peer binary's path, size and
/// mtime (a package upgrade changes them).
pub fn env_id_cache_key() -> String {
    let mut key = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    key.push_str(&git_rev().unwrap_or_default());
    key.push_str(env!("CARGO_PKG_VERSION"));
    let stat = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                format!("{}:{}:{}", p.display(), m.len(), m.mtime())
            })
            .unwrap_or_default()
    };
    if let Ok(me) = std::env::current_exe() {
        key.push_str(&stat(&me));
    }
    for cmd in ["runc", "crun", "qemu-system-x86_64", "dockerd"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(cmd)).find(|c| c.is_file()))
            .unwrap_or(None);
        key.push_str(&found.as_deref().map(stat).unwrap_or_else(|| format!("{cmd}:absent")));
    }
    let d = Sha256::digest(key.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The environment id, from the per-boot cache when its key still matches,
/// else computed (exec'ing the peers' `--version` once) and cached.
pub fn cached_env_id() -> String {
    cached_env_id_in(Path::new(ENV_ID_CACHE_DIR), &env_id_cache_key(), || Manifest::collect().id())
}

/// [`cached_env_id`] with the cache directory, key and fallback given.
pub fn cached_env_id_in(dir: &Path, key: &str, compute: impl FnOnce() -> String) -> String {
    let file = dir.join(key);
    if let Ok(id) = std::fs::read_to_string(&file) {
        let id = id.trim();
        if id.len() == 12 && id.chars().all(|c| c.is_ascii_hexdigit()) {
            return id.to_string();
        }
    }
    let id = compute();
    // A cache that cannot be written only costs the next run the probe.
    if std::fs::create_dir_all(dir).is_ok() {
        let tmp = dir.join(format!(".{key}.{}", std::process::id()));
        if std::fs::write(&tmp, &id).is_ok() && std::fs::rename(&tmp, &file).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    id
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

    #[test]
    fn manifest_id_ignores_run_state() {
        let m = Manifest::collect();
        let m2 = Manifest { git_dirty: Some(true), host_net: Some(HostNet::default()), ..m.clone() };
        assert_eq!(m.id(), m2.id());
    }

    #[test]
    fn cached_id_is_computed_once_per_key() {
        let d = tempfile::tempdir().unwrap();
        let calls = std::cell::Cell::new(0);
        let f = || {
            calls.set(calls.get() + 1);
            "0123456789ab".to_string()
        };
        assert_eq!(cached_env_id_in(d.path(), "k1", f), "0123456789ab");
        assert_eq!(cached_env_id_in(d.path(), "k1", || unreachable!("cache miss")), "0123456789ab");
        assert_eq!(cached_env_id_in(d.path(), "k2", f), "0123456789ab");
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn corrupt_cache_entry_is_recomputed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("k"), "garbage").unwrap();
        assert_eq!(cached_env_id_in(d.path(), "k", || "aaaaaaaaaaaa".into()), "aaaaaaaaaaaa");
    }

    #[test]
    fn head_resolves_through_a_loose_or_packed_ref() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("refs/heads")).unwrap();
        std::fs::write(d.path().join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(d.path().join("packed-refs"), "# pack-refs\nabc123 refs/heads/main\n").unwrap();
        assert_eq!(read_head(d.path()).as_deref(), Some("abc123"));
        std::fs::write(d.path().join("refs/heads/main"), "def456\n").unwrap();
        assert_eq!(read_head(d.path()).as_deref(), Some("def456"));
    }

    #[test]
    fn rule_count_reads_iptables_and_nft() {
        let ipt = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j DROP\n-A FORWARD -j X\nCOMMIT\n";
        let nft = "table inet f {\n\tchain input {\n\t\ttype filter hook input priority 0;\n\t\ttcp dport 22 accept\n\t}\n}\n";
        assert_eq!(count_rules(ipt, nft), 3);
    }
}
