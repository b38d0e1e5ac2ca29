//! What each backend is, in the report's words: what the harness exec'd,
//! what one row's figures include, which kind of isolation it is, its fixed
//! chart colour, and the network path its net rows took (from the records'
//! own `net:` notes, so the report states what ran, not what was planned).

use super::aggregate::Aggregate;

/// The kind of isolation a backend provides; ratios are summarised per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Native,
    Container,
    Vm,
}

impl Kind {
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Native => "native",
            Kind::Container => "containers",
            Kind::Vm => "VMs",
        }
    }
}

/// Static facts about one backend.
pub struct Profile {
    pub name: &'static str,
    pub kind: Kind,
    /// What the harness starts for one run.
    pub execs: &'static str,
    /// What a row's launch and footprint figures include.
    pub includes: &'static str,
    /// The planned network path, used when no net record states one.
    pub net: &'static str,
    /// Fixed chart colour (RGB), the same in every chart.
    pub rgb: (u8, u8, u8),
}

const fn p(
    name: &'static str,
    kind: Kind,
    execs: &'static str,
    includes: &'static str,
    net: &'static str,
    rgb: (u8, u8, u8),
) -> Profile {
    Profile { name, kind, execs, includes, net, rgb }
}

/// Every known backend, in report order.
pub const PROFILES: &[Profile] = &[
    p(
        "native",
        Kind::Native,
        "fork+exec of cvbench-workload",
        "the workload process only",
        "veth pair on a /30 between two namespaces the run created",
        (40, 40, 40),
    ),
    p(
        "container",
        Kind::Container,
        "in-process runtime (cvbench-runtime): clone into namespaces, overlay rootfs, cgroup, seccomp, exec",
        "image check, rootfs, cgroup and namespace set-up, the workload; no daemon",
        "veth pair on a /30 into a server namespace the run created",
        (31, 119, 180),
    ),
    p(
        "microvm-bare",
        Kind::Vm,
        "cvbench-vmm bare: a KVM VM running the ELF at CPL3, every syscall forwarded to the VMM",
        "VMM process start, VM and memory set-up, guest run",
        "forwarded TCP from the VMM's own namespace, veth on a /30 to the run's peer namespace",
        (148, 103, 189),
    ),
    p(
        "microvm",
        Kind::Vm,
        "cvbench-vmm linux: Linux guest via PVH with an initramfs",
        "VMM process, guest kernel boot, /init, the workload",
        "virtio-net tap in a peer namespace the run created",
        (227, 119, 194),
    ),
    p(
        "runc",
        Kind::Container,
        "`runc run` on a generated OCI bundle",
        "the runc process (the container's parent) and the container",
        "veth pair on a /30 into a server namespace the run created",
        (255, 127, 14),
    ),
    p(
        "crun",
        Kind::Container,
        "`crun run` on a generated OCI bundle",
        "the crun process and the container",
        "veth pair on a /30 into a server namespace the run created",
        (44, 160, 44),
    ),
    p(
        "docker",
        Kind::Container,
        "`docker run --rm` against a private dockerd → containerd → shim → runc",
        "the docker CLI, shim and container; not the shared dockerd and containerd",
        "veth pair on a /30 into a server namespace the run created",
        (214, 39, 40),
    ),
    p(
        "qemu",
        Kind::Vm,
        "qemu-system-x86_64 with the same guest kernel and initramfs",
        "the QEMU process, guest boot and the workload",
        "virtio-net tap in a peer namespace the run created (same as microvm)",
        (140, 86, 75),
    ),
    p(
        "cvbench-runtime",
        Kind::Container,
        "`cvbench-runtime run` exec'd on the same generated OCI bundle as runc and crun",
        "the cvbench-runtime process and the container",
        "veth pair on a /30 into a server namespace the run created",
        (23, 190, 207),
    ),
    p(
        "docker-cvbench",
        Kind::Container,
        "`docker run --rm --runtime cvbench` against the private dockerd → containerd → shim → cvbench-runtime",
        "the docker CLI, shim and container; not the shared dockerd and containerd",
        "veth pair on a /30 into a server namespace the run created",
        (188, 189, 34),
    ),
];

/// The profile of `name`, if it is a known backend.
pub fn profile(name: &str) -> Option<&'static Profile> {
    PROFILES.iter().find(|p| p.name == name)
}

/// The kind of `name` (unknown names count as containers: never as native).
pub fn kind(name: &str) -> Kind {
    profile(name).map(|p| p.kind).unwrap_or(Kind::Container)
}

/// A backend's fixed colour; unknown names get grey.
pub fn rgb(name: &str) -> (u8, u8, u8) {
    profile(name).map(|p| p.rgb).unwrap_or((127, 127, 127))
}

/// The network path as the backend's net records state it (`net:` or
/// `veth:` notes), else the planned path marked as such.
pub fn net_path(a: &Aggregate, backend: &str) -> String {
    for sc in ["net-stream", "net-rr"] {
        let stated = a
            .records(sc, backend)
            .iter()
            .flat_map(|r| &r.notes)
            .find_map(|n| n.strip_prefix("net: ").map(str::to_string));
        if let Some(s) = stated {
            return s;
        }
    }
    match profile(backend) {
        Some(p) => format!("{} (planned; no net record states it)", p.net),
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_backend_has_a_profile_and_a_distinct_colour() {
        for b in crate::backend::ALL {
            assert!(profile(b).is_some(), "{b}");
        }
        let mut c: Vec<_> = PROFILES.iter().map(|p| p.rgb).collect();
        c.sort();
        c.dedup();
        assert_eq!(c.len(), PROFILES.len());
    }

    #[test]
    fn net_path_comes_from_the_records_note() {
        let r = crate::record::RunRecord {
            backend: "crun".into(),
            scenario: "net-rr".into(),
            notes: vec!["net: veth into namespace X".into()],
            ..Default::default()
        };
        let a = Aggregate::new(&[r]);
        assert_eq!(net_path(&a, "crun"), "veth into namespace X");
        assert!(net_path(&a, "runc").ends_with("(planned; no net record states it)"));
    }
}
