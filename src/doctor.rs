//! `cvbench doctor`: what this host can run, and for each thing it cannot, why.

pub mod backends;

use serde::Serialize;

use crate::env::{self, CgroupMode, KvmKind};
use crate::paths;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, with a caveat the user must know.
    Warn,
    /// Missing: the backends that need it are skipped.
    Missing,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// Part of the core suite (native + container + microvm-bare).
    pub core: bool,
}

fn check(name: &str, ok: bool, core: bool, yes: String, no: String) -> Check {
    Check {
        name: name.to_string(),
        status: if ok { Status::Ok } else { Status::Missing },
        detail: if ok { yes } else { no },
        core,
    }
}

pub fn run_checks() -> Vec<Check> {
    let mut v = Vec::new();
    v.push(match paths::workload_binary() {
        Ok(p) => check("workload binary", true, true, p.display().to_string(), String::new()),
        Err(e) => check("workload binary", false, true, String::new(), e.to_string()),
    });
    v.push(check(
        "root",
        env::is_root(),
        true,
        "running as root".into(),
        "not root: containers, cgroups, tap devices and the peers need root".into(),
    ));
    let kvm = env::kvm_kind();
    v.push(Check {
        name: "kvm".into(),
        status: match kvm {
            KvmKind::Hardware => Status::Ok,
            KvmKind::SoftwarePvm | KvmKind::Unknown => Status::Warn,
            KvmKind::Absent => Status::Missing,
        },
        detail: match kvm {
            KvmKind::SoftwarePvm => format!(
                "{}; microvm-bare runs fully; a Linux guest boots only to the kernel (its user space cannot make system calls here), so the microvm and qemu backends stop before the workload",
                kvm.describe()
            ),
            KvmKind::Absent | KvmKind::Unknown => match cvbench_microvm::kvm_probe().usable() {
                Err(why) => format!("{why}: microvm-bare, microvm and qemu are skipped"),
                Ok(other) => format!("{}: the VMM will try it", other.name()),
            },
            _ => kvm.describe().into(),
        },
        core: true,
    });
    let cpu = crate::hostkind::host_cpu();
    v.push(Check {
        name: "host cpu".to_string(),
        status: if cpu.emulated { Status::Warn } else { Status::Ok },
        detail: match (cpu.emulated, kvm) {
            (true, KvmKind::Hardware) => format!(
                "{}; /dev/kvm has hardware-KVM semantics (nested SVM/VMX emulated by the outer QEMU), so every \
                 backend runs as on an ordinary host, only far slower — this is the cvbench test host \
                 (scripts/testhost)",
                cpu.describe()
            ),
            _ => cpu.describe(),
        },
        core: false,
    });
    let cg = env::cgroup_mode();
    v.push(Check {
        name: "cgroups".into(),
        status: if cg == CgroupMode::Absent { Status::Missing } else { Status::Ok },
        detail: match cg {
            CgroupMode::V2 => "cgroup v2 (unified) at /sys/fs/cgroup".into(),
            CgroupMode::Hybrid => "cgroup v1 controllers at /sys/fs/cgroup/<controller>, cgroup2 at /sys/fs/cgroup/unified (hybrid); the runtime uses v1".into(),
            CgroupMode::V1 => "cgroup v1 controllers at /sys/fs/cgroup/<controller>".into(),
            CgroupMode::Absent => "no cgroup hierarchy mounted at /sys/fs/cgroup".into(),
        },
        core: true,
    });
    v.push(check(
        "overlayfs",
        env::overlayfs_available(),
        true,
        "overlay listed in /proc/filesystems".into(),
        "overlay not in /proc/filesystems (modprobe overlay)".into(),
    ));
    v.push(check(
        "tun",
        std::path::Path::new("/dev/net/tun").exists(),
        false,
        "/dev/net/tun present (virtio-net tap devices)".into(),
        "/dev/net/tun missing: VM network workloads are skipped".into(),
    ));
    let kernel = crate::backend::guestkit::guest_kernel();
    v.push(match (kernel.path(), kernel.missing()) {
        (Some(p), _) => check("guest kernel", true, false, p.display().to_string(), String::new()),
        (None, missing) => {
            let (reason, fix) = missing.unwrap_or_default();
            check("guest kernel", false, false, String::new(), format!("{reason} (fix: {fix})"))
        }
    });
    v.push(snapshots_check(kvm));
    let swarm_missing = crate::swarm::host_missing();
    v.push(check(
        "swarm",
        swarm_missing.is_empty(),
        false,
        "private dockerds in run-created namespaces, registry on their bridge (bench --workloads swarm)".into(),
        format!("the swarm scenario needs {}", swarm_missing.join(", ")),
    ));
    for (name, ver) in env::peer_versions() {
        let name: &'static str = match name.as_str() {
            "runc" => "peer runc",
            "crun" => "peer crun",
            "qemu" => "peer qemu",
            _ => "peer docker",
        };
        v.push(match ver {
            Some(ver) => check(name, true, false, ver, String::new()),
            None => check(name, false, false, String::new(), "not installed (apt-get install it to compare)".into()),
        });
    }
    v
}

pub use cvbench_runtime::checkpoint::criu::CriuFacts;

/// Snapshots and checkpoints: the bare VM's own (wherever microvm-bare runs), the Linux guest's
/// (where its user space runs: hardware KVM), gVisor's (wherever runsc runs) and CRIU's for runc
/// and cvbench-runtime. Decided from host facts only (KVM kind, the criu binary's version, the
/// kernel's vDSO mappings), never by a probe that could hang.
fn snapshots_check(kvm: KvmKind) -> Check {
    let bare = match kvm {
        KvmKind::Absent => "microvm-bare snapshots need /dev/kvm".to_string(),
        _ => concat!(
            "microvm-bare: `cvbench-vmm bare --snapshot-to DIR` / `bare-restore` (lazy or eager memory), ",
            "`cvbench run --from-snapshot`, bench family restore-start"
        )
        .to_string(),
    };
    let bare = match kvm {
        KvmKind::Absent => bare,
        KvmKind::SoftwarePvm => format!(
            "{bare}; microvm (the Linux guest) snapshots need the guest's user space to reach its READY, which \
             kvm_pvm does not run (they run in the test host)"
        ),
        _ => format!("{bare}; microvm (the Linux guest): `cvbench-vmm linux --snapshot-to DIR` / `linux-restore`"),
    };
    let gvisor = if crate::backend::peers::find_peer(crate::backend::id::PeerTool::Runsc).is_some() {
        "gvisor: `runsc checkpoint`/`restore` (no CRIU)"
    } else {
        "gvisor checkpoints need runsc (scripts/install-peers)"
    };
    let criu = CriuFacts::probe().verdict();
    let ok = kvm != KvmKind::Absent && criu.is_ok();
    Check {
        name: "snapshots".into(),
        status: if kvm == KvmKind::Absent {
            Status::Missing
        } else if ok {
            Status::Ok
        } else {
            Status::Warn
        },
        detail: format!("{bare}; {gvisor}; {}", criu.unwrap_or_else(|e| e)),
        core: false,
    }
}

/// The core suite can run when no core check is missing.
pub fn core_ok(checks: &[Check]) -> bool {
    checks.iter().all(|c| !c.core || c.status != Status::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_ok_ignores_missing_optional_checks() {
        let c = vec![
            Check { name: "a".into(), status: Status::Ok, detail: String::new(), core: true },
            Check { name: "b".into(), status: Status::Missing, detail: String::new(), core: false },
        ];
        assert!(core_ok(&c));
    }

    #[test]
    fn core_ok_fails_on_a_missing_core_check() {
        let c = vec![Check { name: "a".into(), status: Status::Missing, detail: String::new(), core: true }];
        assert!(!core_ok(&c));
    }
}
