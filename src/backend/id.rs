//! The one name of every backend: [`BackendId`], the enum the CLI parses, the
//! records spell and the harness matches on, with the facts each backend owns
//! (its kind of isolation, what is exec'd, what a row includes, what the host
//! needs, where its instances join a parent cgroup, its network path). It
//! depends on nothing else in the crate, so every module can import it.

use std::fmt;
use std::str::FromStr;

use clap::builder::PossibleValue;
use clap::ValueEnum;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Every backend the suite knows: ours, then the peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendId {
    Native,
    Container,
    /// Our container without the memory cgroup controller (the lecture's "optional accounting").
    ContainerNomemcg,
    /// Our container in the host's network namespace (no veth; peer on 127.0.0.1).
    ContainerHostnet,
    MicrovmBare,
    Microvm,
    Runc,
    Crun,
    CvbenchRuntime,
    Docker,
    DockerCvbench,
    Qemu,
    Youki,
    Podman,
    Gvisor,
    GvisorPtrace,
    GvisorKvm,
}

/// The kind of isolation a backend provides; the report summarises ratios per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A plain host process: the baseline.
    Native,
    /// Namespaces, cgroups and a root filesystem on the host kernel.
    Container,
    /// A user-space kernel between the workload and the host (gVisor's sentry).
    Sandbox,
    /// The bare VM: the workload at guest CPL3 under KVM with no guest kernel, every system call
    /// a VM exit serviced by the VMM. It isolates the cost of hardware virtualisation from the
    /// cost of a guest OS, so the report never counts it among the VMs.
    BareVm,
    /// A guest Linux kernel under KVM.
    Vm,
}

impl Kind {
    /// The kinds the report summarises against native, in its order.
    pub const COMPARED: [Kind; 4] = [Kind::Container, Kind::Sandbox, Kind::BareVm, Kind::Vm];

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Native => "native",
            Kind::Container => "containers",
            Kind::Sandbox => "sandboxes",
            Kind::BareVm => "the bare VM (no guest kernel)",
            Kind::Vm => "Linux-guest VMs",
        }
    }

    /// Whether a figure of this kind runs guest code under `/dev/kvm` (so a software KVM
    /// such as kvm_pvm shapes it).
    pub fn under_kvm(self) -> bool {
        matches!(self, Kind::BareVm | Kind::Vm)
    }
}

/// How an instance of a backend joins the density unit's parent cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The harness spawns the instance's process: it joins between fork and exec.
    Spawned,
    /// Our runtime creates the container's cgroup below the parent.
    Below,
}

/// One thing a backend needs from the host; `doctor::backends` checks them in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Root,
    Overlayfs,
    StateSpace,
    Workload,
    Kvm,
    Vmm,
    /// Guest kernel built, busybox for its init, a KVM that runs guest user space.
    LinuxGuest,
    /// A command on `PATH` and the Debian package that provides it.
    Tool {
        cmd: &'static str,
        package: &'static str,
    },
    /// A peer that `scripts/install-peers` puts in cvbench's cache (or one on `PATH`).
    Peer(PeerTool),
    /// A KVM whose guest ring-0 code runs natively: gVisor's KVM platform runs its sentry as a
    /// guest kernel, which kvm_pvm would emulate instruction by instruction.
    KvmRing0,
}

/// A peer binary cvbench installs into its own cache rather than from the host's apt sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerTool {
    /// gVisor's runsc from bookworm-backports (the first Debian build with the systrap platform).
    Runsc,
    /// youki, built by `cargo install`.
    Youki,
}

impl PeerTool {
    /// The command's name (also how it is looked up on `PATH`).
    pub const fn cmd(self) -> &'static str {
        match self {
            PeerTool::Runsc => "runsc",
            PeerTool::Youki => "youki",
        }
    }

    /// Where `scripts/install-peers` puts the binary, relative to `<cache>/cvbench/peers`.
    pub const fn cache_path(self) -> &'static str {
        match self {
            PeerTool::Runsc => "runsc/usr/bin/runsc",
            PeerTool::Youki => "youki/bin/youki",
        }
    }

    /// The command that installs it.
    pub const fn install(self) -> &'static str {
        match self {
            PeerTool::Runsc => "scripts/install-peers runsc",
            PeerTool::Youki => "scripts/install-peers youki",
        }
    }
}

/// What the report says about a backend.
pub struct Profile {
    /// What the harness starts for one run.
    pub execs: &'static str,
    /// What a row's launch and footprint figures include.
    pub includes: &'static str,
    /// The planned network path, used when no net record states one.
    pub net: &'static str,
    /// Fixed chart colour (RGB), the same in every chart.
    pub rgb: (u8, u8, u8),
}

/// A name that is not a backend.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("no backend named {0:?} (known: {known})", known = BackendId::names().join(", "))]
pub struct UnknownBackend(pub String);

const DOCKERD: Need = Need::Tool { cmd: "dockerd", package: "docker.io   # or keep Docker's own docker-ce" };
const OCI_NET: &str = "veth pair on a /30 into a server namespace the run created";
const PODMAN: Need = Need::Tool { cmd: "podman", package: "podman" };
const GVISOR_NET: &str = "veth pair on a /30 into a server namespace the run created, through gVisor's own netstack (part of what is measured)";

impl BackendId {
    /// Every backend, in report order (also the order `--help` lists them).
    pub const ALL: [BackendId; 17] = [
        BackendId::Native,
        BackendId::Container,
        BackendId::ContainerNomemcg,
        BackendId::ContainerHostnet,
        BackendId::MicrovmBare,
        BackendId::Microvm,
        BackendId::Runc,
        BackendId::Crun,
        BackendId::CvbenchRuntime,
        BackendId::Docker,
        BackendId::DockerCvbench,
        BackendId::Youki,
        BackendId::Podman,
        BackendId::Gvisor,
        BackendId::GvisorPtrace,
        BackendId::GvisorKvm,
        BackendId::Qemu,
    ];

    /// The name table: how the CLI, the records and the report spell each backend.
    pub const fn name(self) -> &'static str {
        match self {
            BackendId::Native => "native",
            BackendId::Container => "container",
            BackendId::ContainerNomemcg => "container-nomemcg",
            BackendId::ContainerHostnet => "container-hostnet",
            BackendId::MicrovmBare => "microvm-bare",
            BackendId::Microvm => "microvm",
            BackendId::Runc => "runc",
            BackendId::Crun => "crun",
            BackendId::CvbenchRuntime => "cvbench-runtime",
            BackendId::Docker => "docker",
            BackendId::DockerCvbench => "docker-cvbench",
            BackendId::Qemu => "qemu",
            BackendId::Youki => "youki",
            BackendId::Podman => "podman",
            BackendId::Gvisor => "gvisor",
            BackendId::GvisorPtrace => "gvisor-ptrace",
            BackendId::GvisorKvm => "gvisor-kvm",
        }
    }

    /// Every name, in [`BackendId::ALL`] order.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|b| b.name()).collect()
    }

    /// One line for `--help`.
    fn help(self) -> &'static str {
        match self {
            BackendId::Native => "The workload as a plain host process (fork + exec): the baseline",
            BackendId::Container => "Our container runtime (namespaces, cgroups, overlayfs, seccomp)",
            BackendId::ContainerNomemcg => "Our container without the memory cgroup controller (not charged)",
            BackendId::ContainerHostnet => "Our container in the host's network namespace (peer on 127.0.0.1)",
            BackendId::MicrovmBare => "Our VMM: the workload ELF at CPL3 in KVM, every syscall a VM exit",
            BackendId::Microvm => "Our VMM booting a Linux guest that runs the workload",
            BackendId::Runc => "Peer: runc on an OCI bundle of the same image",
            BackendId::Crun => "Peer: crun on an OCI bundle of the same image",
            BackendId::CvbenchRuntime => "Ours exec'd as an OCI runtime on the same bundle as runc and crun",
            BackendId::Docker => "Peer: Docker (a private dockerd the suite starts and stops)",
            BackendId::DockerCvbench => "Docker's engine over our runtime (`--runtime cvbench`)",
            BackendId::Qemu => "Peer: qemu-system-x86_64 -M microvm, same kernel and initramfs",
            BackendId::Youki => "Peer: youki (the OCI runtime in Rust) on the same bundle as runc and crun",
            BackendId::Podman => "Peer: podman run (daemonless engine, its default OCI runtime)",
            BackendId::Gvisor => "Sandbox: gVisor's runsc (systrap platform) on the same bundle as runc",
            BackendId::GvisorPtrace => "Sandbox: gVisor's runsc with the ptrace platform",
            BackendId::GvisorKvm => "Sandbox: gVisor's runsc with the KVM platform (needs hardware KVM)",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            BackendId::Native => Kind::Native,
            BackendId::Container
            | BackendId::ContainerNomemcg
            | BackendId::ContainerHostnet
            | BackendId::Runc
            | BackendId::Crun
            | BackendId::CvbenchRuntime
            | BackendId::Docker
            | BackendId::DockerCvbench
            | BackendId::Youki
            | BackendId::Podman => Kind::Container,
            BackendId::Gvisor | BackendId::GvisorPtrace | BackendId::GvisorKvm => Kind::Sandbox,
            BackendId::MicrovmBare => Kind::BareVm,
            BackendId::Microvm | BackendId::Qemu => Kind::Vm,
        }
    }

    /// What the host must provide, in the order the doctor checks it (the first missing one
    /// is the reason given).
    pub fn needs(self) -> &'static [Need] {
        use Need::*;
        match self {
            BackendId::Native => &[Workload],
            BackendId::Container | BackendId::ContainerNomemcg | BackendId::ContainerHostnet => {
                &[Root, Overlayfs, StateSpace, Workload]
            }
            BackendId::MicrovmBare => &[Kvm, Vmm, Workload],
            BackendId::Microvm => &[Kvm, Vmm, LinuxGuest],
            BackendId::Qemu => &[Tool { cmd: "qemu-system-x86_64", package: "qemu-system-x86" }, Kvm, LinuxGuest],
            BackendId::CvbenchRuntime => &[Root, StateSpace, Workload],
            BackendId::Runc => &[Tool { cmd: "runc", package: "runc" }, Root, StateSpace, Workload],
            BackendId::Crun => &[Tool { cmd: "crun", package: "crun" }, Root, StateSpace, Workload],
            BackendId::Docker | BackendId::DockerCvbench => &[DOCKERD, Root, StateSpace, Workload],
            BackendId::Youki => &[Peer(PeerTool::Youki), Root, StateSpace, Workload],
            BackendId::Podman => &[PODMAN, Root, StateSpace, Workload],
            BackendId::Gvisor | BackendId::GvisorPtrace => &[Peer(PeerTool::Runsc), Root, StateSpace, Workload],
            BackendId::GvisorKvm => &[Peer(PeerTool::Runsc), Root, Kvm, KvmRing0, StateSpace, Workload],
        }
    }

    /// The scenario families a variant is measured in (`None`: every family). A variant of our
    /// container differs from it in one respect, and runs only where that respect is measured.
    pub fn only_families(self) -> Option<&'static [&'static str]> {
        match self {
            BackendId::ContainerNomemcg => Some(&["mem-bw", "mem-touch"]),
            BackendId::ContainerHostnet => Some(&["net-stream", "net-rr"]),
            _ => None,
        }
    }

    /// Where the instances can be put in the density unit's parent cgroup, or `None` (runc,
    /// crun, Docker: their runtime picks the container's cgroup).
    pub fn placement(self) -> Option<Placement> {
        match self {
            BackendId::Native | BackendId::Microvm | BackendId::MicrovmBare | BackendId::Qemu => {
                Some(Placement::Spawned)
            }
            BackendId::Container | BackendId::ContainerHostnet => Some(Placement::Below),
            // Its memory is charged to no cgroup, so a parent cgroup would not see it.
            BackendId::ContainerNomemcg => None,
            BackendId::Runc
            | BackendId::Crun
            | BackendId::CvbenchRuntime
            | BackendId::Docker
            | BackendId::DockerCvbench
            | BackendId::Youki
            | BackendId::Podman
            | BackendId::Gvisor
            | BackendId::GvisorPtrace
            | BackendId::GvisorKvm => None,
        }
    }

    /// What the report says the backend execs and includes, its planned network path and colour.
    pub fn profile(self) -> Profile {
        let p = |execs, includes, net, rgb| Profile { execs, includes, net, rgb };
        match self {
            BackendId::Native => p(
                "fork+exec of cvbench-workload",
                "the workload process only",
                "veth pair on a /30 between two namespaces the run created",
                (40, 40, 40),
            ),
            BackendId::Container => p(
                "in-process runtime (cvbench-runtime): clone into namespaces, overlay rootfs, cgroup, seccomp, exec",
                "image check, rootfs, cgroup and namespace set-up, the workload; no daemon",
                OCI_NET,
                (31, 119, 180),
            ),
            BackendId::ContainerNomemcg => p(
                "in-process runtime as `container`, but no memory cgroup: the container joins the root memory \
                 cgroup, which the kernel does not charge (v1; refused under v2 where the subtree enables memory)",
                "as `container`; no cgroup memory figures",
                OCI_NET,
                (158, 218, 229),
            ),
            BackendId::ContainerHostnet => p(
                "in-process runtime as `container`, but in the host's network namespace (no veth)",
                "as `container`",
                "host network namespace: the peer server listens on 127.0.0.1 in the root namespace",
                (219, 219, 141),
            ),
            BackendId::MicrovmBare => p(
                "cvbench-vmm bare: a KVM VM running the ELF at CPL3, every syscall forwarded to the VMM",
                "VMM process start, VM and memory set-up, guest run",
                "forwarded TCP from the VMM's own namespace, veth on a /30 to the run's peer namespace",
                (148, 103, 189),
            ),
            BackendId::Microvm => p(
                "cvbench-vmm linux: Linux guest via PVH with an initramfs",
                "VMM process, guest kernel boot, /init, the workload",
                "virtio-net tap in a peer namespace the run created",
                (227, 119, 194),
            ),
            BackendId::Runc => p(
                "`runc run` on a generated OCI bundle",
                "the runc process (the container's parent) and the container",
                OCI_NET,
                (255, 127, 14),
            ),
            BackendId::Crun => {
                p("`crun run` on a generated OCI bundle", "the crun process and the container", OCI_NET, (44, 160, 44))
            }
            BackendId::Docker => p(
                "`docker run --rm` against a private dockerd → containerd → shim → runc",
                "the docker CLI and the container; dockerd, containerd and the shims apart (shared daemon)",
                OCI_NET,
                (214, 39, 40),
            ),
            BackendId::Qemu => p(
                "qemu-system-x86_64 with the same guest kernel and initramfs",
                "the QEMU process, guest boot and the workload",
                "virtio-net tap in a peer namespace the run created (same as microvm)",
                (140, 86, 75),
            ),
            BackendId::CvbenchRuntime => p(
                "`cvbench-runtime run` exec'd on the same generated OCI bundle as runc and crun",
                "the cvbench-runtime process and the container",
                OCI_NET,
                (23, 190, 207),
            ),
            BackendId::DockerCvbench => p(
                "`docker run --rm --runtime cvbench` against the private dockerd → containerd → shim → cvbench-runtime",
                "the docker CLI and the container; dockerd, containerd and the shims apart (shared daemon)",
                OCI_NET,
                (188, 189, 34),
            ),
            BackendId::Youki => p(
                "`youki run` on the same generated OCI bundle as runc and crun",
                "the youki process and the container",
                OCI_NET,
                (255, 187, 120),
            ),
            BackendId::Podman => p(
                "`podman run --rm` (no daemon): podman → conmon → its default OCI runtime (crun on Debian 12)",
                "the podman CLI, conmon and the container",
                OCI_NET,
                (152, 223, 138),
            ),
            BackendId::Gvisor => p(
                "`runsc --platform=systrap run` on the same generated OCI bundle as runc",
                "runsc, its gofer, the sandbox (sentry) and its systrap stub processes",
                GVISOR_NET,
                (174, 199, 232),
            ),
            BackendId::GvisorPtrace => p(
                "`runsc --platform=ptrace run` on the same generated OCI bundle as runc",
                "runsc, its gofer, the sandbox (sentry) and its traced stub processes",
                GVISOR_NET,
                (197, 176, 213),
            ),
            BackendId::GvisorKvm => p(
                "`runsc --platform=kvm run` on the same generated OCI bundle as runc",
                "runsc, its gofer and the sandbox (sentry running as a KVM guest kernel)",
                GVISOR_NET,
                (196, 156, 148),
            ),
        }
    }
}

impl FromStr for BackendId {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<BackendId, UnknownBackend> {
        BackendId::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| UnknownBackend(s.to_string()))
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl ValueEnum for BackendId {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()).help(self.help()))
    }
}

impl Serialize for BackendId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for BackendId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BackendId, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_backend() {
        for b in BackendId::ALL {
            assert_eq!(b.name().parse::<BackendId>(), Ok(b));
            assert_eq!(b.to_string(), b.name());
        }
    }

    #[test]
    fn unknown_name_is_rejected_with_the_known_list() {
        let e = "teleport".parse::<BackendId>().unwrap_err();
        assert!(e.to_string().contains("microvm-bare"), "{e}");
    }

    #[test]
    fn serde_spells_the_name() {
        let json = serde_json::to_string(&BackendId::MicrovmBare).unwrap();
        assert_eq!(json, "\"microvm-bare\"");
        assert_eq!(serde_json::from_str::<BackendId>(&json).unwrap(), BackendId::MicrovmBare);
        assert!(serde_json::from_str::<BackendId>("\"teleport\"").is_err());
    }

    #[test]
    fn clap_values_are_the_names() {
        for b in BackendId::value_variants() {
            assert_eq!(b.to_possible_value().unwrap().get_name(), b.name());
        }
    }

    #[test]
    fn the_bare_vm_is_never_called_vms() {
        assert_eq!(BackendId::MicrovmBare.kind(), Kind::BareVm);
        assert!(!Kind::BareVm.plural().contains("VMs"), "{}", Kind::BareVm.plural());
        assert!(Kind::BareVm.plural().contains("no guest kernel"));
        assert!(Kind::BareVm.under_kvm() && Kind::Vm.under_kvm() && !Kind::Container.under_kvm());
    }

    #[test]
    fn colours_are_distinct() {
        let mut c: Vec<_> = BackendId::ALL.iter().map(|b| b.profile().rgb).collect();
        c.sort();
        c.dedup();
        assert_eq!(c.len(), BackendId::ALL.len());
    }

    #[test]
    fn only_spawned_processes_and_our_runtime_have_a_placement() {
        assert_eq!(BackendId::Native.placement(), Some(Placement::Spawned));
        assert_eq!(BackendId::MicrovmBare.placement(), Some(Placement::Spawned));
        assert_eq!(BackendId::Container.placement(), Some(Placement::Below));
        for b in
            [BackendId::Runc, BackendId::Crun, BackendId::Docker, BackendId::DockerCvbench, BackendId::ContainerNomemcg]
        {
            assert_eq!(b.placement(), None, "{b}");
        }
    }

    #[test]
    fn gvisor_is_a_sandbox_and_youki_and_podman_are_containers() {
        for b in [BackendId::Gvisor, BackendId::GvisorPtrace, BackendId::GvisorKvm] {
            assert_eq!(b.kind(), Kind::Sandbox, "{b}");
            assert!(b.needs().contains(&Need::Peer(PeerTool::Runsc)), "{b}");
        }
        assert!(BackendId::GvisorKvm.needs().contains(&Need::KvmRing0));
        assert_eq!(BackendId::Youki.kind(), Kind::Container);
        assert_eq!(BackendId::Podman.kind(), Kind::Container);
    }
}
