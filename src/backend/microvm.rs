//! The `microvm` backend: the workload in a Linux guest booted by our own VMM
//! (`cvbench-vmm linux`), from the cached cvbench guest kernel and an initramfs
//! holding busybox, the guest `/init` and the workload. The serial console is
//! relayed line by line to the harness; the VMM's own timings (start → first
//! KVM_RUN, boot timer milestones) come back through its `--stats-json` file
//! and go into the record. Under kvm_pvm the guest reaches `/init` but its
//! first system call faults, and the record says exactly that.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cvbench_microvm::builder::{BlkConfig, Config, NetConfig};
use cvbench_microvm::stats::{GuestEnd, LinuxStats};
use cvbench_microvm::{kvm_probe, KvmKind};

use super::console;
use super::guestkit::guest::{GuestIo, GuestProcess};
use super::guestkit::initrd::{shared_initrd, InitrdSlot};
use super::guestkit::kernel::{kernel, vmm_binary};
use super::guestkit::peer::{GUEST_IP, HOST_IP};
use super::guestkit::vmm::{vmm_timeout_ms, write_vmm_config};
use super::guestkit::DEFAULT_MEM_MIB;
use super::peers::{launch_err, scratch};
use super::{Backend, BackendError, BackendId, Instance, LaunchSpec};
use crate::record::ExitInfo;

const BACKEND: &str = BackendId::Microvm.name();
/// `cvbench-vmm linux`'s exit code when the guest powered off without reporting a status.
const VMM_NO_STATUS: i32 = 126;

/// One launch's Linux VM, before it becomes the VMM's [`Config`].
pub(crate) struct LinuxPlan {
    pub(crate) kernel: PathBuf,
    pub(crate) initrd: PathBuf,
    pub(crate) workload: String,
    /// The workload's arguments, `--peer`/`--dir` included.
    pub(crate) args: Vec<String>,
    pub(crate) mem_mib: u32,
    pub(crate) vcpus: u8,
    pub(crate) net: Option<NetConfig>,
    pub(crate) blk: Option<PathBuf>,
    pub(crate) timeout: Duration,
}

impl LinuxPlan {
    /// The config `cvbench-vmm linux --config` boots: quiet kernel, the VMM's own console
    /// (stdout), jailed, kvm_pvm workarounds detected.
    pub(crate) fn config(&self) -> Config {
        Config {
            kernel: self.kernel.clone(),
            initrd: Some(self.initrd.clone()),
            cmdline_extra: "quiet".into(),
            init_args: std::iter::once(self.workload.clone()).chain(self.args.iter().cloned()).collect(),
            mem_mib: u64::from(self.mem_mib),
            vcpus: self.vcpus,
            net: self.net.clone(),
            blk: self.blk.clone().map(|path| BlkConfig { path, read_only: false }),
            console: None,
            timeout_ms: Some(vmm_timeout_ms(self.timeout)),
            pvm_workarounds: None,
            jail: true,
            snapshot_to: None,
            console_input: false,
        }
    }
}

/// The Linux micro-VM backend. The initramfs is built once per backend object.
#[derive(Default)]
pub struct MicroVm {
    initrd: InitrdSlot,
}

impl MicroVm {
    pub fn new() -> MicroVm {
        MicroVm::default()
    }

    /// A backend booting `initrd` instead of the standard guest image (the cold-start
    /// scenario's image flattened to an initramfs; it must hold `/init` and the workload).
    pub fn with_initrd(initrd: tempfile::NamedTempFile) -> MicroVm {
        MicroVm { initrd: Mutex::new(Some(Arc::new(initrd))) }
    }

    fn initrd(&self) -> Result<Arc<tempfile::NamedTempFile>, String> {
        shared_initrd(&self.initrd, "cvbench-microvm-initrd", &std::env::temp_dir())
    }
}

struct MicroVmInstance {
    vm: GuestProcess,
    stats_path: PathBuf,
    kvm: KvmKind,
    _scratch: tempfile::TempDir,
    _initrd: Arc<tempfile::NamedTempFile>,
    /// The workload's status read from /init's console line because the VMM saw none.
    status_from_console: Option<i32>,
}

impl Backend for MicroVm {
    fn id(&self) -> BackendId {
        BackendId::Microvm
    }

    fn check(&self) -> Result<(), String> {
        kvm_probe().usable()?;
        vmm_binary()?;
        if !Path::new("/bin/busybox").is_file() {
            return Err("/bin/busybox missing (apt-get install busybox-static)".into());
        }
        kernel().map(|_| ())
    }

    fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn Instance>, BackendError> {
        let w = spec.workload.name();
        let kvm =
            kvm_probe().usable().map_err(|reason| BackendError::Unavailable { backend: BACKEND.into(), reason })?;
        let kernel = kernel().map_err(|e| launch_err(BACKEND, w, e))?;
        let vmm = vmm_binary().map_err(|e| launch_err(BACKEND, w, e))?;
        let initrd = self.initrd().map_err(|e| launch_err(BACKEND, w, e))?;
        let dir = scratch("cvbench-microvm-").map_err(|e| launch_err(BACKEND, w, e))?;
        let stats_path = dir.path().join("vmm-stats.json");

        let mem = spec.options.guest_mem_mib.unwrap_or(DEFAULT_MEM_MIB);
        let vcpus = spec.options.vcpus.unwrap_or(1);
        let io = GuestIo::prepare(BACKEND, &spec, dir.path())?;
        let net = io.peer.as_ref().map(|p| NetConfig {
            netns: p.netns(),
            tap: format!("cvbvm{}", p.proc.pid()),
            host_ip: HOST_IP,
            guest_ip: GUEST_IP,
            prefix_len: 30,
        });
        let plan = LinuxPlan {
            kernel,
            initrd: initrd.path().to_path_buf(),
            workload: w.to_string(),
            args: io.args.clone(),
            mem_mib: mem,
            vcpus,
            net,
            blk: io.disk.clone(),
            timeout: spec.timeout,
        };
        let config = plan.config();
        let config_path = dir.path().join("vmm-config.json");
        write_vmm_config(&config_path, &config).map_err(|e| launch_err(BACKEND, w, e))?;
        let mut cmd = Command::new(&vmm);
        cmd.arg("linux").arg("--config").arg(&config_path).arg("--stats-json").arg(&stats_path);
        let vm = GuestProcess::spawn(BACKEND, cmd, spec, io, mem)?;
        Ok(Box::new(MicroVmInstance { vm, stats_path, kvm, _scratch: dir, _initrd: initrd, status_from_console: None }))
    }
}

impl MicroVmInstance {
    /// The VMM's own report, once it has exited.
    fn stats(&self) -> Option<LinuxStats> {
        let text = std::fs::read_to_string(&self.stats_path).ok()?;
        serde_json::from_str(&text).ok()
    }
}

impl Instance for MicroVmInstance {
    fn pids(&self) -> Vec<i32> {
        vec![self.vm.child.pid()]
    }

    fn close_stdin(&mut self) {
        self.vm.close_stdin();
    }

    fn effective_args(&self) -> Option<Vec<String>> {
        Some(self.vm.args.clone())
    }

    fn stopped_instead_of_closing_stdin(&self) -> bool {
        self.vm.stdin_stop.requested()
    }

    fn guest_ram_bytes(&self) -> Option<u64> {
        Some(self.vm.guest_ram_bytes())
    }

    fn wait(&mut self, timeout: Duration) -> Result<ExitInfo, BackendError> {
        let r = self.vm.child.wait(timeout);
        self.vm.finish();
        match r {
            // The VMM ends with 128 + signal when stopped: that is success when we asked for it.
            Ok(e) if self.vm.stdin_stop.requested() && e.code == Some(128 + libc::SIGTERM) => {
                Ok(ExitInfo { code: Some(0), ..e })
            }
            // The VMM saw the guest power off without the boot-timer exit-status write; when
            // /init's console line says how the workload ended, that is the workload's status
            // (and the record says where it came from).
            Ok(e) if e.code == Some(VMM_NO_STATUS) => {
                match self.vm.console.lock().ok().and_then(|c| console::reported_status(&c.tail)) {
                    Some(code) => {
                        self.status_from_console = Some(code);
                        Ok(ExitInfo { code: Some(code), ..e })
                    }
                    None => Ok(e),
                }
            }
            other => other,
        }
    }

    fn stop(&mut self) -> Result<ExitInfo, BackendError> {
        self.vm.stop()
    }

    fn phases(&self) -> Vec<(String, u64)> {
        let mut v = Vec::new();
        let ns = |ms: f64| (ms * 1e6) as u64;
        if let Some(s) = self.stats() {
            if let Some(ms) = s.first_kvm_run_ms {
                v.push(("vmm start→first KVM_RUN".to_string(), ns(ms)));
            }
            if let Some(ms) = s.kernel_init_ms {
                v.push(("vmm start→guest kernel starts /init (boot timer)".to_string(), ns(ms)));
            }
            if let Some(ms) = s.user_init_ms {
                v.push(("vmm start→/init in user space (boot timer)".to_string(), ns(ms)));
            }
        }
        if let Ok(c) = self.vm.console.lock() {
            if let Some(t) = c.first_output {
                v.push(("launch→first console line".to_string(), t.duration_since(self.vm.launched).as_nanos() as u64));
            }
        }
        v
    }

    fn extra(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        if let Some(s) = self.stats() {
            let fields = [
                ("first_kvm_run_ms", s.first_kvm_run_ms),
                ("kernel_init_ms", s.kernel_init_ms),
                ("user_init_ms", s.user_init_ms),
                ("total_ms", Some(s.total_ms)),
            ];
            for (key, v) in fields {
                if let Some(v) = v {
                    m.insert(format!("vmm_{key}"), v);
                }
            }
        }
        m
    }

    fn notes(&self) -> Vec<String> {
        let mut v = vec![format!(
            "microvm: cvbench-vmm linux, vmlinux via PVH, initramfs (busybox + /init + workload); {}",
            self.kvm
        )];
        if let Some(code) = self.status_from_console {
            v.push(format!(
                "microvm: the VMM saw no boot-timer exit-status write; status {code} taken from /init's console line"
            ));
        }
        if self.vm.peer.is_some() {
            v.push("net: virtio-net tap in a server namespace the run created (a /30 of its own)".to_string());
        }
        let Some(s) = self.stats() else {
            v.push("microvm: the VMM wrote no stats (it was killed or failed before the guest ended)".into());
            return v;
        };
        let kernel_init = s.kernel_init_ms;
        let user_init = s.user_init_ms;
        let end = match &s.end {
            GuestEnd::Exited(code) => format!("exited {code}"),
            GuestEnd::Signalled(sig) => format!("stopped by signal {sig}"),
            GuestEnd::PowerOff => "power_off".into(),
            GuestEnd::Timeout => "timeout".into(),
            GuestEnd::Failed(why) => format!("failed: {why}"),
            GuestEnd::Snapshotted => "snapshotted".into(),
        };
        v.push(format!(
            "microvm: guest end = {end}; kernel reached /init: {}; /init ran in user space: {}; workload exit status reported: {}",
            kernel_init.map_or("no".to_string(), |ms| format!("yes, {ms:.1} ms after VMM start")),
            user_init.map_or("no".to_string(), |ms| format!("yes, {ms:.1} ms")),
            s.exit_status.map_or("none".to_string(), |x| x.to_string()),
        ));
        v.push(match &s.seccomp_allowed_syscalls {
            Some(n) if s.jailed => format!(
                "microvm: VMM jailed: own mount/IPC/UTS namespaces, empty read-only root, 0 capabilities, \
                 no_new_privs, seccomp allow-lists of {n:?} system calls (main, vCPU, device threads)"
            ),
            _ => "microvm: VMM NOT jailed (--no-jail)".into(),
        });
        if self.kvm == KvmKind::SoftwarePvm && user_init.is_none() {
            v.push(
                "microvm: workload not run: under kvm_pvm (software nested KVM) the guest kernel boots to /init, \
                 but the guest's first user-space system call faults (bogus page fault at entry_SYSCALL_64), so \
                 the kernel panics and the VMM powers off; on hardware KVM the same guest runs the workload"
                    .into(),
            );
        }
        if let Ok(c) = self.vm.console.lock() {
            if !c.milestones.is_empty() {
                v.push(format!("microvm: guest console: {}", c.milestones.join(" / ")));
            } else if !c.tail.iter().any(|l| crate::record::is_ready_line(l)) && !c.tail.is_empty() {
                v.push(format!("microvm: guest console ended with: {}", c.tail_text()));
            }
        }
        v
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::guestkit::vmm::test_support::{print_config, vmm_or_skip};
    use std::ffi::OsString;

    /// The flags the harness passed before it passed the config (the removed code, verbatim in
    /// effect), with `--print-config` inserted before `--`.
    fn legacy_flags(plan: &LinuxPlan, stats_path: &Path) -> Vec<OsString> {
        let mut cmd = Command::new("cvbench-vmm");
        cmd.arg("linux")
            .arg("--kernel")
            .arg(&plan.kernel)
            .arg("--initrd")
            .arg(&plan.initrd)
            .args(["--cmdline", "quiet"])
            .args(["--mem-mib", &plan.mem_mib.to_string(), "--vcpus", &plan.vcpus.to_string()])
            .args(["--timeout-s", &format!("{:.3}", plan.timeout.as_secs_f64())])
            .arg("--stats-json")
            .arg(stats_path);
        if let Some(n) = &plan.net {
            cmd.arg("--net-netns").arg(&n.netns).args(["--net-tap", &n.tap]).args([
                "--net-host-ip",
                &n.host_ip.to_string(),
                "--net-guest-ip",
                &n.guest_ip.to_string(),
            ]);
        }
        if let Some(img) = &plan.blk {
            cmd.arg("--blk").arg(img);
        }
        cmd.arg("--print-config").arg("--").arg(&plan.workload).args(&plan.args);
        cmd.get_args().map(|a| a.to_os_string()).collect()
    }

    fn plan(workload: &str, args: &[&str]) -> LinuxPlan {
        LinuxPlan {
            kernel: "/var/cache/cvbench/vmlinux".into(),
            initrd: "/tmp/cvbench-microvm-initrd-1-x".into(),
            workload: workload.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            mem_mib: DEFAULT_MEM_MIB,
            vcpus: 1,
            net: None,
            blk: None,
            timeout: Duration::from_secs(60),
        }
    }

    /// Representative requests: plain, network (tap in the peer's namespace), disk, odd sizes.
    fn representative_plans() -> Vec<LinuxPlan> {
        let mut net = plan("net-rr", &["--requests", "1000", "--peer", "10.203.0.1:5201"]);
        net.net = Some(NetConfig {
            netns: "/proc/4242/ns/net".into(),
            tap: "cvbvm4242".into(),
            host_ip: HOST_IP,
            guest_ip: GUEST_IP,
            prefix_len: 30,
        });
        let mut disk = plan("disk", &["--size-mib", "8", "--dir", "/mnt"]);
        disk.blk = Some("/tmp/cvbench-microvm-x/disk.ext4".into());
        let mut big = plan("cpu", &["--sha-mib", "4", "--matmul-n", "80"]);
        big.mem_mib = 1024;
        big.vcpus = 2;
        big.timeout = Duration::from_millis(1234);
        let mut short = plan("idle", &[]);
        short.timeout = Duration::from_secs_f64(0.1);
        vec![plan("noop", &[]), net, disk, big, short]
    }

    #[test]
    fn linux_config_equals_what_the_old_flags_gave() {
        let Some(vmm) = vmm_or_skip() else { return };
        for p in representative_plans() {
            let from_flags: Config = print_config(&vmm, &legacy_flags(&p, Path::new("/tmp/stats.json")));
            assert_eq!(p.config(), from_flags, "{} {:?}", p.workload, p.args);
        }
    }

    #[test]
    fn linux_config_survives_the_file_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        for p in representative_plans() {
            let path = dir.path().join("vmm-config.json");
            write_vmm_config(&path, &p.config()).unwrap();
            let read: Config = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            assert_eq!(read, p.config());
        }
    }

    #[test]
    fn vmm_config_file_is_what_the_vmm_reads() {
        let Some(vmm) = vmm_or_skip() else { return };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmm-config.json");
        let p = representative_plans().remove(1);
        write_vmm_config(&path, &p.config()).unwrap();
        let flags: Vec<OsString> =
            ["linux".into(), "--config".into(), path.into_os_string(), "--print-config".into()].into();
        let read: Config = print_config(&vmm, &flags);
        assert_eq!(read, p.config());
    }
}
