//! A runtime-spec `config.json`, parsed with the typed `oci-spec` crate, turned into a
//! [`ContainerConfig`]. Strict: every field that is set is either honoured or a clear error
//! naming it; nothing set is dropped silently, and nothing widens privileges (a bundle
//! without a network namespace shares the host's network but keeps every other confinement).

use super::Error;
use crate::config::{
    BlockIo, CapSets, ContainerConfig, HugepageLimit, IdMap, MountSpec, NetMode, NetPriority, Resources, Rlimit,
    RootfsSource, ThrottleDevice, User, WeightDevice,
};
use crate::namespaces::Namespace;
use crate::seccomp_profile::{self as sp, Action, ArgCond, Profile, Rule};
use oci_spec::runtime::{
    LinuxCapabilities, LinuxNamespaceType, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, PosixRlimitType,
    Spec,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a bundle asks for beyond the container config: its hooks and annotations.
#[derive(Debug)]
pub struct Bundle {
    pub config: ContainerConfig,
    pub hooks: oci_spec::runtime::Hooks,
    pub annotations: BTreeMap<String, String>,
    /// Properties that are not in the runtime spec, ignored as it requires.
    pub ignored: Vec<String>,
    /// Deprecated properties that are set but ignored, each with why (the CLI warns).
    pub deprecated: Vec<String>,
}

fn unsupported(field: &str) -> Error {
    Error::Unsupported(field.to_string())
}

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::Invalid { field: field.to_string(), reason: reason.into() }
}

/// Checks one object's keys. `allowed`: honoured here. `unhonoured`: defined by the runtime
/// spec but not honoured here: refused by name (a set field is never dropped silently). Any
/// other key is not a runtime-spec property at all: the spec says to ignore it, so it is
/// collected in `ignored` (the CLI warns about each) instead of being an error.
fn check_keys(
    v: &Value,
    path: &str,
    allowed: &[&str],
    unhonoured: &[&str],
    ignored: &mut Vec<String>,
) -> Result<(), Error> {
    if let Some(obj) = v.as_object() {
        for k in obj.keys() {
            if allowed.contains(&k.as_str()) {
                continue;
            }
            if unhonoured.contains(&k.as_str()) {
                return Err(unsupported(&format!("{path}{k}")));
            }
            ignored.push(format!("{path}{k}"));
        }
    }
    Ok(())
}

/// The runtime-spec (v1.2) properties, per object, that this runtime does not honour.
const TOP_UNHONOURED: &[&str] = &["solaris", "windows", "vm", "zos"];
const PROCESS_UNHONOURED: &[&str] = &["commandLine", "scheduler", "ioPriority", "execCPUAffinity"];
const LINUX_UNHONOURED: &[&str] = &["timeOffsets", "netDevices", "personality", "intelRdt", "memoryPolicy"];
const RESOURCES_UNHONOURED: &[&str] = &["rdma", "unified"];
const MEMORY_UNHONOURED: &[&str] = &["useHierarchy", "checkBeforeUpdate"];
/// Deprecated memory properties ignored with a warning, as runc does: kernel memory limits are
/// gone from cgroup v2 and from v1 since Linux 5.16 (writes fail or do nothing).
const MEMORY_DEPRECATED: &[&str] = &["kernel", "kernelTCP"];
const CPU_UNHONOURED: &[&str] = &["burst", "realtimeRuntime", "realtimePeriod", "idle"];
const SECCOMP_UNHONOURED: &[&str] = &["flags", "listenerPath", "listenerMetadata"];

/// `ociVersion`: a SemVer 2.0 version of the runtime spec's major version 1 (`1.0.2-dev`, `1.1.0`).
fn check_version(v: &Value) -> Result<(), Error> {
    let bad = |why: &str| invalid("ociVersion", why.to_string());
    let Some(ver) = v["ociVersion"].as_str() else {
        return Err(bad("missing or not a string (the runtime spec requires it)"));
    };
    let core = ver.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    let numeric =
        |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p.len() == 1 || !p.starts_with('0'));
    if parts.len() != 3 || !parts.iter().all(numeric) {
        return Err(bad(&format!("{ver:?} is not a SemVer version (MAJOR.MINOR.PATCH)")));
    }
    if parts[0] != "1" {
        return Err(bad(&format!("{ver:?}: this runtime implements runtime spec 1.x")));
    }
    Ok(())
}

fn check_raw(v: &Value, ignored: &mut Vec<String>, deprecated: &mut Vec<String>) -> Result<(), Error> {
    check_version(v)?;
    check_keys(
        v,
        "",
        &["ociVersion", "process", "root", "hostname", "domainname", "mounts", "linux", "annotations", "hooks"],
        TOP_UNHONOURED,
        ignored,
    )?;
    check_keys(
        &v["process"],
        "process.",
        &[
            "terminal",
            "consoleSize",
            "user",
            "args",
            "env",
            "cwd",
            "capabilities",
            "rlimits",
            "noNewPrivileges",
            "apparmorProfile",
            "oomScoreAdj",
            "selinuxLabel",
        ],
        PROCESS_UNHONOURED,
        ignored,
    )?;
    check_keys(
        &v["process"]["user"],
        "process.user.",
        &["uid", "gid", "umask", "additionalGids"],
        &["username"],
        ignored,
    )?;
    check_keys(
        &v["linux"],
        "linux.",
        &[
            "namespaces",
            "uidMappings",
            "gidMappings",
            "sysctl",
            "resources",
            "cgroupsPath",
            "devices",
            "seccomp",
            "rootfsPropagation",
            "maskedPaths",
            "readonlyPaths",
            "mountLabel",
        ],
        LINUX_UNHONOURED,
        ignored,
    )?;
    check_keys(
        &v["linux"]["resources"],
        "linux.resources.",
        &["devices", "memory", "cpu", "pids", "blockIO", "hugepageLimits", "network"],
        RESOURCES_UNHONOURED,
        ignored,
    )?;
    check_keys(
        &v["linux"]["resources"]["blockIO"],
        "linux.resources.blockIO.",
        &[
            "weight",
            "leafWeight",
            "weightDevice",
            "throttleReadBpsDevice",
            "throttleWriteBpsDevice",
            "throttleReadIOPSDevice",
            "throttleWriteIOPSDevice",
        ],
        &[],
        ignored,
    )?;
    check_keys(
        &v["linux"]["resources"]["network"],
        "linux.resources.network.",
        &["classID", "priorities"],
        &[],
        ignored,
    )?;
    let memory = &v["linux"]["resources"]["memory"];
    check_keys(
        memory,
        "linux.resources.memory.",
        &["limit", "swap", "reservation", "swappiness", "disableOOMKiller", "kernel", "kernelTCP"],
        MEMORY_UNHONOURED,
        ignored,
    )?;
    for k in MEMORY_DEPRECATED {
        if !memory[k].is_null() {
            deprecated.push(format!(
                "`linux.resources.memory.{k}` is deprecated (kernel memory limits are not supported by newer \
                 kernels): ignored"
            ));
        }
    }
    check_keys(
        &v["linux"]["resources"]["cpu"],
        "linux.resources.cpu.",
        &["shares", "quota", "period", "cpus", "mems"],
        CPU_UNHONOURED,
        ignored,
    )?;
    check_keys(
        &v["linux"]["seccomp"],
        "linux.seccomp.",
        &["defaultAction", "defaultErrnoRet", "architectures", "syscalls"],
        SECCOMP_UNHONOURED,
        ignored,
    )?;
    for m in v["mounts"].as_array().into_iter().flatten() {
        check_keys(
            m,
            "mounts[].",
            &["destination", "type", "source", "options"],
            &["uidMappings", "gidMappings"],
            ignored,
        )?;
    }
    Ok(())
}

/// Parse `<bundle>/config.json`.
pub fn load(bundle: &Path, run_root: &Path) -> Result<Bundle, Error> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|source| Error::Read { path: path.clone(), source })?;
    let raw: Value =
        serde_json::from_slice(&text).map_err(|e| Error::Json { path: path.clone(), reason: e.to_string() })?;
    let (mut ignored, mut deprecated) = (Vec::new(), Vec::new());
    check_raw(&raw, &mut ignored, &mut deprecated)?;
    let spec: Spec =
        serde_json::from_value(raw).map_err(|e| Error::Json { path: path.clone(), reason: e.to_string() })?;
    let mut b = convert(&spec, bundle, run_root)?;
    b.ignored = ignored;
    b.deprecated = deprecated;
    Ok(b)
}

pub(crate) fn lsm_enabled(name: &str) -> bool {
    std::fs::read_to_string("/sys/kernel/security/lsm").map(|s| s.split(',').any(|l| l.trim() == name)).unwrap_or(false)
}

fn cap_names(set: &Option<oci_spec::runtime::Capabilities>) -> Vec<String> {
    let mut v: Vec<String> = set.iter().flatten().map(|c| format!("CAP_{c}")).collect();
    v.sort();
    v
}

fn caps(c: &LinuxCapabilities) -> Result<CapSets, Error> {
    let sets = CapSets {
        bounding: cap_names(c.bounding()),
        effective: cap_names(c.effective()),
        permitted: cap_names(c.permitted()),
        inheritable: cap_names(c.inheritable()),
        ambient: cap_names(c.ambient()),
    };
    for (field, names) in [
        ("process.capabilities.bounding", &sets.bounding),
        ("process.capabilities.effective", &sets.effective),
        ("process.capabilities.permitted", &sets.permitted),
        ("process.capabilities.inheritable", &sets.inheritable),
        ("process.capabilities.ambient", &sets.ambient),
    ] {
        crate::capabilities::mask(names).map_err(|e| invalid(field, e.to_string()))?;
    }
    Ok(sets)
}

fn rlimit_number(t: PosixRlimitType) -> u32 {
    use PosixRlimitType as T;
    #[allow(clippy::unnecessary_cast)] // `__rlimit_resource_t` is u32 on glibc, i32 elsewhere
    let n = match t {
        T::RlimitCpu => libc::RLIMIT_CPU,
        T::RlimitFsize => libc::RLIMIT_FSIZE,
        T::RlimitData => libc::RLIMIT_DATA,
        T::RlimitStack => libc::RLIMIT_STACK,
        T::RlimitCore => libc::RLIMIT_CORE,
        T::RlimitRss => libc::RLIMIT_RSS,
        T::RlimitNproc => libc::RLIMIT_NPROC,
        T::RlimitNofile => libc::RLIMIT_NOFILE,
        T::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        T::RlimitAs => libc::RLIMIT_AS,
        T::RlimitLocks => libc::RLIMIT_LOCKS,
        T::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        T::RlimitNice => libc::RLIMIT_NICE,
        T::RlimitRtprio => libc::RLIMIT_RTPRIO,
        T::RlimitRttime => libc::RLIMIT_RTTIME,
    } as u32;
    n
}

fn action(a: LinuxSeccompAction, errno: Option<u32>, field: &str) -> Result<Action, Error> {
    use LinuxSeccompAction as A;
    Ok(match a {
        A::ScmpActAllow => Action::Allow,
        A::ScmpActErrno => Action::Errno(errno.unwrap_or(libc::EPERM as u32)),
        A::ScmpActKill | A::ScmpActKillThread => Action::KillThread,
        A::ScmpActKillProcess => Action::KillProcess,
        A::ScmpActTrap => Action::Trap,
        A::ScmpActLog => Action::Log,
        other => return Err(invalid(field, format!("action {other:?} is not supported"))),
    })
}

fn seccomp(s: &LinuxSeccomp) -> Result<Profile, Error> {
    if s.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(unsupported("linux.seccomp.flags"));
    }
    if s.listener_path().is_some() {
        return Err(unsupported("linux.seccomp.listenerPath"));
    }
    for a in s.architectures().iter().flatten() {
        let name = serde_json::to_value(a).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        // Other architectures' calls are killed outright by the filter (x86-64 only).
        if !matches!(name.as_str(), "SCMP_ARCH_X86_64" | "SCMP_ARCH_X86" | "SCMP_ARCH_X32") {
            return Err(invalid("linux.seccomp.architectures", format!("{name} is not supported on x86-64")));
        }
    }
    let mut rules = Vec::new();
    for sc in s.syscalls().iter().flatten() {
        let act = action(sc.action(), sc.errno_ret(), "linux.seccomp.syscalls[].action")?;
        let mut args = Vec::new();
        for a in sc.args().iter().flatten() {
            use LinuxSeccompOperator as O;
            let op = match a.op() {
                O::ScmpCmpEq => sp::Op::Eq,
                O::ScmpCmpNe => sp::Op::Ne,
                O::ScmpCmpLt => sp::Op::Lt,
                O::ScmpCmpLe => sp::Op::Le,
                O::ScmpCmpGt => sp::Op::Gt,
                O::ScmpCmpGe => sp::Op::Ge,
                O::ScmpCmpMaskedEq => sp::Op::MaskedEq,
            };
            args.push(ArgCond { index: a.index() as u32, value: a.value(), value_two: a.value_two().unwrap_or(0), op });
        }
        // Names this kernel table lacks cannot be called anyway: skip them, as libseccomp does.
        let names: Vec<String> = sc.names().iter().filter(|n| sp::number(n).is_some()).cloned().collect();
        if !names.is_empty() {
            rules.push(Rule { names, action: act, args });
        }
    }
    let default_action = action(s.default_action(), s.default_errno_ret(), "linux.seccomp.defaultAction")?;
    let profile = Profile { default_action, rules };
    sp::compile(&profile).map_err(|e| invalid("linux.seccomp", e.to_string()))?;
    Ok(profile)
}

fn ns_kind(t: LinuxNamespaceType) -> Result<Namespace, Error> {
    Ok(match t {
        LinuxNamespaceType::Pid => Namespace::Pid,
        LinuxNamespaceType::Network => Namespace::Net,
        LinuxNamespaceType::Mount => Namespace::Mount,
        LinuxNamespaceType::Ipc => Namespace::Ipc,
        LinuxNamespaceType::Uts => Namespace::Uts,
        LinuxNamespaceType::User => Namespace::User,
        LinuxNamespaceType::Cgroup => Namespace::Cgroup,
        LinuxNamespaceType::Time => {
            return Err(invalid("linux.namespaces[].type", "time namespaces are not supported"))
        }
    })
}

/// Convert a parsed runtime spec.
pub fn convert(spec: &Spec, bundle: &Path, run_root: &Path) -> Result<Bundle, Error> {
    let mut cfg = ContainerConfig {
        run_root: run_root.to_path_buf(),
        namespaces: Default::default(),
        exact_mounts: true,
        hostname: String::new(),
        env: Vec::new(),
        ..Default::default()
    };
    let p = spec.process().as_ref().ok_or_else(|| invalid("process", "missing"))?;
    // A terminal is set up by the verb that starts the container (`run` relays it, `create`
    // needs a console socket: see `console`).
    cfg.terminal = p.terminal() == Some(true);
    if let Some(b) = p.console_size() {
        if !cfg.terminal {
            return Err(invalid("process.consoleSize", "set without process.terminal"));
        }
        let dim = |v: u64, what: &str| {
            u16::try_from(v).map_err(|_| invalid("process.consoleSize", format!("{what} {v} is out of range")))
        };
        cfg.console_size = Some((dim(b.height(), "height")?, dim(b.width(), "width")?));
    }
    cfg.args = p.args().clone().unwrap_or_default();
    if cfg.args.is_empty() {
        return Err(invalid("process.args", "must name the program to run"));
    }
    cfg.env = p.env().clone().unwrap_or_default();
    cfg.cwd = p.cwd().to_string_lossy().into_owned();
    if !p.cwd().is_absolute() {
        return Err(invalid("process.cwd", "must be an absolute path"));
    }
    let u = p.user();
    cfg.user = User { uid: u.uid(), gid: u.gid(), additional_gids: u.additional_gids().clone().unwrap_or_default() };
    cfg.umask = u.umask();
    if let Some(c) = p.capabilities() {
        cfg.capability_sets = Some(caps(c)?);
    } else {
        cfg.capability_sets = Some(CapSets::default());
    }
    let mut seen = std::collections::BTreeSet::new();
    for r in p.rlimits().iter().flatten() {
        let resource = rlimit_number(r.typ());
        if !seen.insert(resource) {
            return Err(invalid("process.rlimits", format!("{:?} is given twice", r.typ())));
        }
        if r.soft() > r.hard() {
            return Err(invalid("process.rlimits", format!("{:?}: soft limit above the hard limit", r.typ())));
        }
        cfg.rlimits.push(Rlimit { resource, soft: r.soft(), hard: r.hard() });
    }
    cfg.no_new_privileges = Some(p.no_new_privileges().unwrap_or(false));
    if let Some(adj) = p.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(invalid("process.oomScoreAdj", "must lie in -1000..=1000"));
        }
        cfg.oom_score_adj = Some(adj);
    }
    if let Some(profile) = p.apparmor_profile().as_ref().filter(|s| !s.is_empty()) {
        crate::process::privileges::AppArmorExec::new(profile)
            .map_err(|reason| invalid("process.apparmorProfile", reason))?;
        if lsm_enabled("apparmor") {
            cfg.apparmor_profile = Some(profile.clone());
        } else {
            eprintln!(
                "cvbench-runtime: warning: process.apparmorProfile {profile:?} ignored: AppArmor is not enabled on this host"
            );
        }
    }
    if p.selinux_label().as_ref().is_some_and(|s| !s.is_empty()) && lsm_enabled("selinux") {
        return Err(unsupported("process.selinuxLabel (SELinux is enabled and not supported)"));
    }
    let root = spec.root().as_ref().ok_or_else(|| invalid("root", "missing"))?;
    let rp = root.path();
    let rp = if rp.is_absolute() { rp.clone() } else { bundle.join(rp) };
    if !rp.is_dir() {
        return Err(invalid("root.path", format!("{} is not a directory", rp.display())));
    }
    cfg.rootfs = RootfsSource::Dir(rp);
    cfg.readonly_rootfs = root.readonly().unwrap_or(false);
    if spec.domainname().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(unsupported("domainname"));
    }
    for m in spec.mounts().iter().flatten() {
        let dest = m.destination().clone();
        let opts = m.options().clone().unwrap_or_default();
        let ty = m.typ().clone().unwrap_or_default();
        let bind = opts.iter().any(|o| o == "bind" || o == "rbind") || ty == "bind";
        let kind = if bind { "bind".to_string() } else { ty.clone() };
        if !matches!(kind.as_str(), "bind" | "tmpfs" | "proc" | "sysfs" | "mqueue" | "devpts" | "cgroup" | "cgroup2") {
            return Err(unsupported(&format!("mounts[].type {ty:?} at {}", dest.display())));
        }
        let src = m.source().clone().unwrap_or_else(|| PathBuf::from(&kind));
        let src = if kind == "bind" && !src.is_absolute() { bundle.join(src) } else { src };
        cfg.mounts.push(MountSpec {
            kind,
            source: src,
            destination: dest,
            readonly: opts.iter().any(|o| o == "ro"),
            options: opts,
        });
    }
    if let Some(h) = spec.hostname() {
        cfg.hostname = h.clone();
    }
    let l = spec.linux().as_ref().ok_or_else(|| invalid("linux", "missing (only Linux containers run here)"))?;
    for ns in l.namespaces().iter().flatten() {
        let kind = ns_kind(ns.typ())?;
        match ns.path() {
            Some(path) => cfg.join_namespaces.push((kind, path.clone())),
            None => {
                cfg.namespaces.insert(kind);
            }
        }
    }
    // Without a "mount" entry the container would share the runtime's mount namespace, and its
    // rootfs set-up (the bind of root.path, /proc, /dev, pivot_root) would change the host's
    // mounts: refused by name rather than done.
    if !cfg.has_mount_ns() {
        return Err(invalid(
            "linux.namespaces",
            "has no \"mount\" entry: sharing the runtime's mount namespace is not supported \
             (the rootfs set-up would change the host's mounts); give a new one or a path to join",
        ));
    }
    // No net namespace of its own: the container shares the host's (joined or inherited)
    // network, and nothing else about it changes (caps, seccomp, masks stay as the spec says).
    cfg.net = if cfg.has(Namespace::Net) { NetMode::Loopback } else { NetMode::Host };
    cfg.host_net_allowed = true;
    // A hostname changes the container's own uts namespace: a new one, or one it joins by path
    // (as with runc); never the runtime's.
    if !cfg.hostname.is_empty()
        && !cfg.has(Namespace::Uts)
        && !cfg.join_namespaces.iter().any(|(k, _)| *k == Namespace::Uts)
    {
        return Err(invalid("hostname", "needs a uts namespace (new, or joined by path)"));
    }
    let id_map = |v: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| -> Vec<IdMap> {
        v.iter()
            .flatten()
            .map(|m| IdMap { container_id: m.container_id(), host_id: m.host_id(), size: m.size() })
            .collect()
    };
    cfg.uid_map = id_map(l.uid_mappings());
    cfg.gid_map = id_map(l.gid_mappings());
    if !cfg.has(Namespace::User) && (!cfg.uid_map.is_empty() || !cfg.gid_map.is_empty()) {
        return Err(invalid("linux.uidMappings", "mappings need a new user namespace"));
    }
    for (k, v) in l.sysctl().iter().flatten() {
        if k.contains('/') || k.contains("..") || k.is_empty() {
            return Err(invalid("linux.sysctl", format!("bad key {k:?}")));
        }
        cfg.sysctl.insert(k.clone(), v.clone());
    }
    if let Some(s) = l.seccomp() {
        cfg.seccomp_profile = Some(seccomp(s)?);
    } else {
        // The spec asks for no filter: honour it (the runtime's default profile is for its
        // own containers, not for bundles that say otherwise).
        cfg.seccomp_unconfined = true;
    }
    cfg.masked_paths = Some(l.masked_paths().clone().unwrap_or_default());
    cfg.readonly_paths = Some(l.readonly_paths().clone().unwrap_or_default());
    if let Some(prop) = l.rootfs_propagation() {
        cfg.rootfs_propagation = match prop.as_str() {
            "" | "private" => 0,
            "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
            "shared" => libc::MS_SHARED,
            "rshared" => libc::MS_SHARED | libc::MS_REC,
            "slave" => libc::MS_SLAVE,
            "rslave" => libc::MS_SLAVE | libc::MS_REC,
            "unbindable" => libc::MS_UNBINDABLE,
            "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
            other => return Err(invalid("linux.rootfsPropagation", format!("unknown value {other:?}"))),
        };
    }
    if l.mount_label().as_ref().is_some_and(|s| !s.is_empty()) && lsm_enabled("selinux") {
        return Err(unsupported("linux.mountLabel (SELinux is enabled and not supported)"));
    }
    // An empty cgroupsPath is no cgroupsPath (runc's reading): the runtime names the cgroup.
    if let Some(cp) = l.cgroups_path().as_ref().filter(|p| !p.as_os_str().is_empty()) {
        cfg.cgroups_path = Some(cp.clone());
    }
    for d in l.devices().iter().flatten() {
        cfg.devices.push(crate::config::DeviceNode {
            path: d.path().clone(),
            kind: match d.typ() {
                oci_spec::runtime::LinuxDeviceType::C | oci_spec::runtime::LinuxDeviceType::U => 'c',
                oci_spec::runtime::LinuxDeviceType::B => 'b',
                oci_spec::runtime::LinuxDeviceType::P => 'p',
                oci_spec::runtime::LinuxDeviceType::A => {
                    return Err(invalid("linux.devices[].type", "`a` is not a node type"))
                }
            },
            major: d.major(),
            minor: d.minor(),
            mode: d.file_mode().unwrap_or(0o666),
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }
    if let Some(r) = l.resources() {
        cfg.resources = resources(r, &cfg)?;
    }
    let annotations = spec.annotations().clone().unwrap_or_default().into_iter().collect();
    Ok(Bundle {
        config: cfg,
        hooks: spec.hooks().clone().unwrap_or_default(),
        annotations,
        ignored: Vec::new(),
        deprecated: Vec::new(),
    })
}

/// Device nodes the runtime itself makes (and allows after the bundle's rules, as runc
/// does): null, zero, full, random, urandom, tty, /dev/pts/*, ptmx.
const DEFAULT_ALLOWED: &[(char, i64, Option<i64>)] = &[
    ('c', 1, Some(3)),
    ('c', 1, Some(5)),
    ('c', 1, Some(7)),
    ('c', 1, Some(8)),
    ('c', 1, Some(9)),
    ('c', 5, Some(0)),
    ('c', 5, Some(2)),
    ('c', 136, None),
];

fn device_rules(
    rules: &[oci_spec::runtime::LinuxDeviceCgroup],
    cfg: &ContainerConfig,
) -> Result<Vec<crate::config::DeviceRule>, Error> {
    use crate::config::DeviceRule;
    let mut out = Vec::new();
    for r in rules {
        let kind = match r.typ() {
            None | Some(oci_spec::runtime::LinuxDeviceType::A) => 'a',
            Some(oci_spec::runtime::LinuxDeviceType::C) | Some(oci_spec::runtime::LinuxDeviceType::U) => 'c',
            Some(oci_spec::runtime::LinuxDeviceType::B) => 'b',
            Some(oci_spec::runtime::LinuxDeviceType::P) => {
                return Err(invalid("linux.resources.devices[].type", "`p` has no device cgroup rule"))
            }
        };
        let access = r.access().clone().unwrap_or_else(|| "rwm".into());
        if access.is_empty() || !access.chars().all(|c| "rwm".contains(c)) {
            return Err(invalid("linux.resources.devices[].access", format!("{access:?}")));
        }
        out.push(DeviceRule { allow: r.allow(), kind, major: r.major(), minor: r.minor(), access });
    }
    if !out.is_empty() {
        for (kind, major, minor) in DEFAULT_ALLOWED {
            out.push(DeviceRule { allow: true, kind: *kind, major: Some(*major), minor: *minor, access: "rwm".into() });
        }
        for d in &cfg.devices {
            if d.kind != 'p' {
                out.push(DeviceRule {
                    allow: true,
                    kind: d.kind,
                    major: Some(d.major),
                    minor: Some(d.minor),
                    access: "rwm".into(),
                });
            }
        }
    }
    Ok(out)
}

fn resources(r: &oci_spec::runtime::LinuxResources, cfg: &ContainerConfig) -> Result<Resources, Error> {
    let mut out = Resources::default();
    if let Some(d) = r.devices() {
        out.devices = device_rules(d, cfg)?;
    }
    if let Some(m) = r.memory() {
        out.memory_bytes = m.limit().map(|v| v as u64).filter(|v| *v > 0);
        out.memory_swap_bytes = m.swap().map(|v| v as u64).filter(|v| *v > 0);
        out.memory_reservation_bytes = m.reservation().map(|v| v as u64).filter(|v| *v > 0);
        out.memory_swappiness = m.swappiness();
        out.disable_oom_killer = m.disable_oom_killer() == Some(true);
    }
    if let Some(c) = r.cpu() {
        out.cpu_shares = c.shares().filter(|s| *s > 0);
        out.cpu_quota_us = c.quota().filter(|q| *q > 0);
        out.cpu_period_us = c.period().filter(|p| *p > 0);
        out.cpuset_cpus = c.cpus().clone().filter(|s| !s.is_empty());
        out.cpuset_mems = c.mems().clone().filter(|s| !s.is_empty());
    }
    if let Some(p) = r.pids() {
        out.pids_max = (p.limit() > 0).then_some(p.limit() as u64);
    }
    if let Some(b) = r.block_io() {
        out.block_io = block_io(b)?;
    }
    for l in r.hugepage_limits().iter().flatten() {
        let limit = u64::try_from(l.limit())
            .map_err(|_| invalid("linux.resources.hugepageLimits[].limit", format!("{} is negative", l.limit())))?;
        out.hugepage_limits.push(HugepageLimit { page_size: l.page_size().clone(), limit });
    }
    if let Some(n) = r.network() {
        out.net_class_id = n.class_id();
        for p in n.priorities().iter().flatten() {
            out.net_priorities.push(NetPriority { interface: p.name().clone(), priority: p.priority() });
        }
    }
    Ok(out)
}

fn device_number(v: i64, field: &str) -> Result<u32, Error> {
    u32::try_from(v).map_err(|_| invalid(field, format!("device number {v} is out of range")))
}

/// `blockIO`; a weight of 0 means unset (Docker always sends `"weight": 0`).
fn block_io(b: &oci_spec::runtime::LinuxBlockIo) -> Result<BlockIo, Error> {
    let set = |w: Option<u16>| w.filter(|w| *w != 0);
    let mut out = BlockIo { weight: set(b.weight()), leaf_weight: set(b.leaf_weight()), ..Default::default() };
    for d in b.weight_device().iter().flatten() {
        let field = "linux.resources.blockIO.weightDevice[]";
        out.weight_devices.push(WeightDevice {
            major: device_number(d.major(), field)?,
            minor: device_number(d.minor(), field)?,
            weight: set(d.weight()),
            leaf_weight: set(d.leaf_weight()),
        });
    }
    for (list, into) in [
        (b.throttle_read_bps_device(), &mut out.throttle_read_bps),
        (b.throttle_write_bps_device(), &mut out.throttle_write_bps),
        (b.throttle_read_iops_device(), &mut out.throttle_read_iops),
        (b.throttle_write_iops_device(), &mut out.throttle_write_iops),
    ] {
        for t in list.iter().flatten() {
            let field = "linux.resources.blockIO.throttle*Device[]";
            into.push(ThrottleDevice {
                major: device_number(t.major(), field)?,
                minor: device_number(t.minor(), field)?,
                rate: t.rate(),
            });
        }
    }
    Ok(out)
}
