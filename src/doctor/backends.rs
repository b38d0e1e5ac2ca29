//! Which backends can run their workloads on this host, decided from host
//! facts alone (files, modules, uid, free space): no launch, no daemon, no
//! timeout, so `cargo bench` and `cvbench run` learn it in milliseconds. Each
//! "no" carries what is missing, why it matters and the one command that
//! fixes it.

use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use crate::backend::{self, id::Need, id::PeerTool, BackendId};
use crate::env::{self, KvmKind};
use crate::paths;
use cvbench_microvm::linux::kernel_cache::GuestKernel;

/// Below this much free space under the state dir an image unpack or a disk
/// workload fails half-way with ENOSPC; better to say so before starting.
pub const MIN_STATE_FREE_MIB: u64 = 256;

/// Why a backend cannot run here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    /// What is missing or wrong, and why the backend needs it.
    pub reason: String,
    /// The one command that fixes it, when there is one.
    pub fix: Option<String>,
    /// The backend can still be started, but will not reach the workload
    /// (a Linux guest under kvm_pvm): left out of benches, allowed for one
    /// `cvbench run` that shows how far it gets.
    pub starts_anyway: bool,
}

impl Blocker {
    fn new(reason: impl Into<String>, fix: Option<&str>) -> Blocker {
        Blocker { reason: reason.into(), fix: fix.map(str::to_string), starts_anyway: false }
    }
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)?;
        if let Some(fix) = &self.fix {
            write!(f, " (fix: {fix})")?;
        }
        Ok(())
    }
}

/// The host facts a verdict depends on, gathered once.
#[derive(Clone, Debug)]
pub struct Host {
    pub root: bool,
    pub kvm: KvmKind,
    pub overlayfs: bool,
    pub workload_binary: bool,
    pub vmm_binary: bool,
    /// The guest kernel, probed on first use: finding its source version runs `dpkg-query`
    /// (tens of ms), which only the Linux-guest backends' verdicts need, not a
    /// `cvbench run` of any other backend.
    pub guest_kernel: OnceLock<GuestKernel>,
    pub busybox: bool,
    /// Free MiB under the runtime's state dir (or its nearest existing parent).
    pub state_free_mib: Option<u64>,
    /// Which peer commands are on `PATH` (runc, crun, dockerd, qemu-system-x86_64).
    pub on_path: fn(&str) -> bool,
    /// Which of the peers cvbench installs into its cache (or finds on `PATH`) are there.
    pub peer_found: fn(PeerTool) -> bool,
}

impl Host {
    /// A host with everything present and the given KVM (for verdict tests here and in bench).
    #[cfg(test)]
    pub(crate) fn complete(kvm: KvmKind) -> Host {
        Host {
            root: true,
            kvm,
            overlayfs: true,
            workload_binary: true,
            vmm_binary: true,
            guest_kernel: OnceLock::from(GuestKernel::Built("/cache/vmlinux".into())),
            busybox: true,
            state_free_mib: Some(10_000),
            on_path: |_| true,
            peer_found: |_| true,
        }
    }

    pub fn probe() -> Host {
        Host {
            root: env::is_root(),
            kvm: env::kvm_kind(),
            overlayfs: env::overlayfs_available(),
            workload_binary: paths::workload_binary().is_ok(),
            vmm_binary: paths::sibling_binary("cvbench-vmm", "CVBENCH_VMM").is_ok(),
            guest_kernel: OnceLock::new(),
            busybox: Path::new("/bin/busybox").is_file(),
            state_free_mib: free_mib(Path::new(cvbench_runtime::DEFAULT_STATE_DIR)),
            on_path: backend::peers::on_path,
            peer_found: |t| backend::peers::find_peer(t).is_some(),
        }
    }

    /// The guest kernel's state, probed now if no verdict asked before.
    pub fn guest_kernel(&self) -> &GuestKernel {
        self.guest_kernel.get_or_init(backend::guestkit::guest_kernel)
    }
}

/// Free space on the filesystem holding `dir` (or its closest existing parent).
fn free_mib(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let s = nix::sys::statvfs::statvfs(existing).ok()?;
    Some((s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64) >> 20)
}

fn need_root(backend: &str, h: &Host) -> Result<(), Blocker> {
    if h.root {
        return Ok(());
    }
    Err(Blocker::new(
        format!("not root: {backend} creates namespaces, mounts, cgroups or network devices, which needs root"),
        Some("sudo -E cvbench ... (or run the suite as root)"),
    ))
}

fn need_workload(h: &Host) -> Result<(), Blocker> {
    if h.workload_binary {
        return Ok(());
    }
    Err(Blocker::new("the workload binary is not built", Some("cargo build --release --workspace --bins")))
}

fn need_kvm(backend: &str, h: &Host) -> Result<(), Blocker> {
    match h.kvm {
        KvmKind::Hardware | KvmKind::SoftwarePvm | KvmKind::Unknown => Ok(()),
        KvmKind::Absent => Err(Blocker::new(
            format!("no usable /dev/kvm: {backend} runs its guest on KVM"),
            Some("modprobe kvm_intel   # or kvm_amd; in a VM, enable nested virtualisation"),
        )),
    }
}

fn need_state_space(backend: &str, h: &Host) -> Result<(), Blocker> {
    match h.state_free_mib {
        Some(free) if free < MIN_STATE_FREE_MIB => Err(Blocker::new(
            format!(
                "only {free} MiB free under {}: {backend} unpacks images and scratch disks there and would fail with \
                 'No space left on device' (needs {MIN_STATE_FREE_MIB} MiB)",
                cvbench_runtime::DEFAULT_STATE_DIR
            ),
            Some("cvbench gc   # then: df -h /var/lib/cvbench"),
        )),
        _ => Ok(()),
    }
}

fn need_tool(cmd: &str, package: &str, h: &Host) -> Result<(), Blocker> {
    if (h.on_path)(cmd) {
        return Ok(());
    }
    Err(Blocker::new(format!("{cmd} is not installed"), Some(&format!("apt-get install {package}"))))
}

fn need_peer(tool: PeerTool, h: &Host) -> Result<(), Blocker> {
    if (h.peer_found)(tool) {
        return Ok(());
    }
    let whence = match tool {
        PeerTool::Runsc => "bookworm-backports' runsc (with systrap) is unpacked into cvbench's cache",
        PeerTool::Youki => "youki is built into cvbench's cache by cargo install",
    };
    Err(Blocker::new(format!("{} is not installed ({whence})", tool.cmd()), Some(tool.install())))
}

/// gVisor's KVM platform runs the sentry as a guest kernel: on kvm_pvm that ring-0 code is
/// emulated (about 2 MIPS), and runsc was measured to hang there until killed.
fn need_kvm_ring0(backend: &str, h: &Host) -> Result<(), Blocker> {
    match h.kvm {
        KvmKind::SoftwarePvm => Err(Blocker::new(
            format!(
                "/dev/kvm is kvm_pvm (software nested KVM): {backend}'s sentry runs as a guest kernel, whose ring-0 \
                 code kvm_pvm emulates; runsc --platform=kvm hangs here instead of running the workload"
            ),
            Some("run on a host with hardware KVM (kvm_intel/kvm_amd), e.g. scripts/testhost"),
        )),
        _ => Ok(()),
    }
}

/// A Linux guest: kernel built, busybox for its init, and a KVM that runs
/// guest user space (kvm_pvm does not: the run would only end at its timeout).
fn need_linux_guest(backend: &str, h: &Host) -> Result<(), Blocker> {
    if let Some((reason, fix)) = h.guest_kernel().missing() {
        return Err(Blocker::new(reason, Some(fix)));
    }
    if !h.busybox {
        return Err(Blocker::new("/bin/busybox is missing (the guest's init)", Some("apt-get install busybox-static")));
    }
    if h.kvm == KvmKind::SoftwarePvm {
        return Err(Blocker {
            starts_anyway: true,
            ..Blocker::new(
                format!(
                    "/dev/kvm is kvm_pvm (software nested KVM): a Linux guest's user space cannot make system calls, \
                     so {backend} never reaches the workload and each run would end only at its timeout"
                ),
                Some("run on a host with hardware KVM (kvm_intel/kvm_amd)"),
            )
        });
    }
    Ok(())
}

/// Can `backend` run its workloads here? Decided from `h` alone, by checking the backend's
/// own [`Need`]s in order.
pub fn verdict(backend: BackendId, h: &Host) -> Result<(), Blocker> {
    let name = backend.name();
    backend.needs().iter().try_for_each(|need| match *need {
        Need::Root => need_root(name, h),
        Need::Overlayfs if !h.overlayfs => Err(Blocker::new(
            "overlayfs is not available: the container's rootfs is an overlay",
            Some("modprobe overlay"),
        )),
        Need::Overlayfs => Ok(()),
        Need::StateSpace => need_state_space(name, h),
        Need::Workload => need_workload(h),
        Need::Kvm => need_kvm(name, h),
        Need::Vmm => need_vmm(h),
        Need::LinuxGuest => need_linux_guest(name, h),
        Need::Tool { cmd, package } => need_tool(cmd, package, h),
        Need::Peer(tool) => need_peer(tool, h),
        Need::KvmRing0 => need_kvm_ring0(name, h),
    })
}

fn need_vmm(h: &Host) -> Result<(), Blocker> {
    if h.vmm_binary {
        return Ok(());
    }
    Err(Blocker::new("the VMM binary cvbench-vmm is not built", Some("cargo build --release --workspace --bins")))
}

/// Every known backend with its verdict, in report order.
pub fn verdicts(h: &Host) -> Vec<(&'static str, Result<(), Blocker>)> {
    BackendId::ALL.iter().map(|&b| (b.name(), verdict(b, h))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cvbench_microvm::linux::kernel_cache::{self, KernelSource};

    fn nothing(_: &str) -> bool {
        false
    }

    fn good_host() -> Host {
        Host::complete(KvmKind::Hardware)
    }

    #[test]
    fn a_complete_host_runs_every_backend() {
        for (name, v) in verdicts(&good_host()) {
            assert_eq!(v, Ok(()), "{name}");
        }
    }

    #[test]
    fn software_kvm_rules_out_the_linux_guests_but_not_the_bare_vm() {
        let h = Host { kvm: KvmKind::SoftwarePvm, ..good_host() };
        let b = verdict(BackendId::Microvm, &h).unwrap_err();
        assert!(b.reason.contains("kvm_pvm") && b.starts_anyway, "{b}");
        assert!(verdict(BackendId::Qemu, &h).is_err());
        assert_eq!(verdict(BackendId::MicrovmBare, &h), Ok(()));
    }

    #[test]
    fn no_kvm_names_the_module_to_load() {
        let h = Host { kvm: KvmKind::Absent, ..good_host() };
        let b = verdict(BackendId::MicrovmBare, &h).unwrap_err();
        assert!(b.fix.unwrap().contains("modprobe kvm"));
    }

    #[test]
    fn not_root_rules_out_containers_with_the_fix() {
        let h = Host { root: false, ..good_host() };
        let b = verdict(BackendId::Container, &h).unwrap_err();
        assert!(b.reason.starts_with("not root"), "{b}");
        assert!(b.fix.is_some());
        assert_eq!(verdict(BackendId::Native, &h), Ok(()));
    }

    #[test]
    fn missing_kernel_says_to_build_it() {
        let source =
            KernelSource { package: "linux-source-6.1".into(), tarball: "/usr/src/linux-source-6.1.tar.xz".into() };
        let h = Host {
            guest_kernel: OnceLock::from(GuestKernel::NotBuilt { source, expected: "/c/vmlinux".into() }),
            ..good_host()
        };
        assert_eq!(verdict(BackendId::Microvm, &h).unwrap_err().fix.as_deref(), Some("scripts/build-guest-kernel"));
    }

    #[test]
    fn missing_kernel_source_says_to_install_one_not_to_run_the_build_that_fails() {
        let no_source = kernel_cache::Error::FindSource { dir: "/usr/src".into() };
        let h = Host { guest_kernel: OnceLock::from(GuestKernel::Unbuildable(no_source)), ..good_host() };
        for backend in [BackendId::Microvm, BackendId::Qemu] {
            let b = verdict(backend, &h).unwrap_err();
            assert!(b.reason.contains("no kernel source under /usr/src"), "{b}");
            assert!(b.fix.as_deref().unwrap().starts_with("apt-get install linux-source-"), "{b}");
        }
    }

    #[test]
    fn missing_docker_says_which_package() {
        let h = Host { on_path: nothing, ..good_host() };
        let b = verdict(BackendId::Docker, &h).unwrap_err();
        assert!(b.reason.contains("dockerd is not installed"), "{b}");
        assert!(b.fix.unwrap().starts_with("apt-get install docker.io"));
    }

    #[test]
    fn missing_runsc_and_youki_name_the_install_command() {
        let h = Host { peer_found: |_| false, ..good_host() };
        for (b, fix) in [
            (BackendId::Gvisor, "scripts/install-peers runsc"),
            (BackendId::GvisorPtrace, "scripts/install-peers runsc"),
            (BackendId::GvisorKvm, "scripts/install-peers runsc"),
            (BackendId::Youki, "scripts/install-peers youki"),
        ] {
            let v = verdict(b, &h).unwrap_err();
            assert_eq!(v.fix.as_deref(), Some(fix), "{b}: {v}");
            assert!(v.reason.contains("is not installed"), "{b}: {v}");
        }
        assert_eq!(verdict(BackendId::Runc, &h), Ok(()));
    }

    #[test]
    fn missing_podman_says_which_package() {
        let h = Host { on_path: |c| c != "podman", ..good_host() };
        let b = verdict(BackendId::Podman, &h).unwrap_err();
        assert!(b.reason.contains("podman is not installed"), "{b}");
        assert_eq!(b.fix.as_deref(), Some("apt-get install podman"));
    }

    #[test]
    fn software_kvm_rules_out_gvisor_kvm_but_not_the_other_platforms() {
        let h = Host { kvm: KvmKind::SoftwarePvm, ..good_host() };
        let b = verdict(BackendId::GvisorKvm, &h).unwrap_err();
        assert!(b.reason.contains("kvm_pvm") && !b.starts_anyway, "{b}");
        assert_eq!(verdict(BackendId::Gvisor, &h), Ok(()));
        assert_eq!(verdict(BackendId::GvisorPtrace, &h), Ok(()));
        assert_eq!(verdict(BackendId::GvisorKvm, &good_host()), Ok(()));
        let none = Host { kvm: KvmKind::Absent, ..good_host() };
        assert!(verdict(BackendId::GvisorKvm, &none).unwrap_err().fix.unwrap().contains("modprobe"));
    }

    #[test]
    fn a_full_state_dir_rules_out_image_backends() {
        let h = Host { state_free_mib: Some(10), ..good_host() };
        let b = verdict(BackendId::Container, &h).unwrap_err();
        assert!(b.reason.contains("No space left on device") && !b.starts_anyway, "{b}");
        assert_eq!(verdict(BackendId::Native, &h), Ok(()));
    }

    #[test]
    fn probing_this_host_gives_native_a_verdict_like_its_check() {
        let v = verdicts(&Host::probe());
        assert_eq!(v.len(), backend::ALL.len());
        let native = BackendId::Native.backend().check();
        assert_eq!(v[0].1.is_ok(), native.is_ok(), "{:?} vs {native:?}", v[0].1);
    }
}
