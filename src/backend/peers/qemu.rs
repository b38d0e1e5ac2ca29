//! The `qemu` backend: `qemu-system-x86_64 -M microvm` booting the same guest kernel (from
//! `scripts/build-guest-kernel`'s cache), the same initramfs (busybox, /init, the workload) and the
//! same guest command line as our Linux micro-VM, with the same devices: virtio-net on a tap in
//! the run's own network namespace (the peer server's, one /30) and a virtio-blk ext4 disk. The
//! serial console is relayed to the harness like ours. QEMU's microvm has no i8042 and no boot
//! timer, so the guest ends by triple fault (`reboot=t`, QEMU exits on `-no-reboot`) and reports
//! the workload's exit status as a console line from `/init`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cvbench_microvm::linux::cmdline::{self, CmdlineSpec, GuestNet, Reboot};
use cvbench_netlink::tap;

use super::launch_err;
use crate::backend::console;
use crate::backend::guestkit::guest::{GuestIo, GuestProcess};
use crate::backend::guestkit::initrd::{shared_initrd, InitrdSlot};
use crate::backend::guestkit::kernel::kernel;
use crate::backend::guestkit::peer::{GUEST_IP, HOST_IP};
use crate::backend::guestkit::DEFAULT_MEM_MIB;
use crate::backend::{Backend, BackendError, BackendId, Instance, LaunchSpec};
use crate::env::{self, KvmKind};
use crate::record::ExitInfo;

const BACKEND: &str = BackendId::Qemu.name();
const GUEST_MEM_MIB: u32 = DEFAULT_MEM_MIB;

pub struct Qemu {
    initrd: InitrdSlot,
}

impl Default for Qemu {
    fn default() -> Self {
        Qemu::new()
    }
}

impl Qemu {
    pub fn new() -> Qemu {
        Qemu { initrd: Mutex::new(None) }
    }

    fn initrd(&self) -> Result<Arc<tempfile::NamedTempFile>, String> {
        shared_initrd(&self.initrd, "cvbench-qemu-initrd", &std::env::temp_dir())
    }
}

/// What QEMU boots and attaches.
struct QemuArgs<'a> {
    kernel: &'a Path,
    initrd: &'a Path,
    append: String,
    /// A tap device that already exists in QEMU's network namespace.
    tap: Option<String>,
    disk: Option<PathBuf>,
}

/// `qemu-system-x86_64 -M microvm` with KVM, no option ROMs, no RTC, no ACPI (the guest kernel has
/// none: with ACPI off QEMU describes its virtio-mmio devices on the kernel command line, as our
/// VMM does), CPU `host` without ARCH_CAPABILITIES (kvm_pvm cannot emulate its MSR), console on
/// stdio, no reboot (the guest's triple fault ends QEMU, as a reset ends our VMM).
fn command(a: &QemuArgs<'_>) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-M", "microvm,x-option-roms=off,rtc=off,acpi=off", "-enable-kvm"])
        .args(["-cpu", "host,-arch-capabilities"])
        .args(["-m", &GUEST_MEM_MIB.to_string(), "-smp", "1"])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .args(["-serial", "stdio", "-kernel"])
        .arg(a.kernel)
        .arg("-initrd")
        .arg(a.initrd);
    if let Some(tap) = &a.tap {
        c.args(["-netdev", &format!("tap,id=n0,ifname={tap},script=no,downscript=no,vhost=off")])
            .args(["-device", "virtio-net-device,netdev=n0"]);
    }
    if let Some(disk) = &a.disk {
        c.arg("-drive")
            .arg(format!("id=d0,file={},format=raw,if=none", disk.display()))
            .args(["-device", "virtio-blk-device,drive=d0"]);
    }
    c.arg("-append").arg(&a.append);
    c
}

/// The guest command line: ours, with the triple-fault reboot QEMU's microvm needs.
fn append(kvm: KvmKind, net: bool, workload: &str, args: &[String]) -> Result<String, cmdline::CmdlineError> {
    let mut init_args = vec![workload.to_string()];
    init_args.extend(args.iter().cloned());
    cmdline::build(&CmdlineSpec {
        extra: "quiet".into(),
        pvm_workarounds: kvm == KvmKind::SoftwarePvm,
        virtio: Vec::new(),
        net: net.then_some(GuestNet { guest_ip: GUEST_IP, host_ip: HOST_IP, prefix_len: 30 }),
        init_args,
        reboot: Reboot::TripleFault,
    })
}

/// A persistent tap with the host end of the /30, created inside `netns` (over the project's one
/// link set-up path, no `ip`); it goes away with the namespace when the peer server (its only
/// process) exits.
fn make_tap(netns: &Path, name: &str) -> Result<(), String> {
    let ns = std::fs::File::open(netns).map_err(|e| format!("open {}: {e}", netns.display()))?;
    cvbench_netlink::in_netns(&ns, || {
        drop(tap::create(name, tap::Lifetime::Persistent)?);
        let mut r = cvbench_netlink::Rtnl::open()?;
        cvbench_netlink::address_and_raise(&mut r, name, HOST_IP, 30).map(drop)
    })
    .map_err(|e| format!("tap {name} in {}: {e}", netns.display()))
}

struct QemuInstance {
    vm: GuestProcess,
    kvm: KvmKind,
    _scratch: tempfile::TempDir,
    _initrd: Arc<tempfile::NamedTempFile>,
}

impl Backend for Qemu {
    fn id(&self) -> BackendId {
        BackendId::Qemu
    }

    fn check(&self) -> Result<(), String> {
        if !super::on_path("qemu-system-x86_64") {
            return Err("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into());
        }
        if env::kvm_kind() == KvmKind::Absent {
            return Err("no usable /dev/kvm".into());
        }
        if !Path::new("/bin/busybox").is_file() {
            return Err("/bin/busybox missing (apt-get install busybox-static)".into());
        }
        kernel().map(|_| ())
    }

    fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn Instance>, BackendError> {
        let w = spec.workload.name();
        let kernel = kernel().map_err(|e| launch_err(BACKEND, w, e))?;
        let initrd = self.initrd().map_err(|e| launch_err(BACKEND, w, e))?;
        let dir = super::scratch("cvbench-qemu-").map_err(|e| launch_err(BACKEND, w, e))?;
        let kvm = env::kvm_kind();
        let io = GuestIo::prepare(BACKEND, &spec, dir.path())?;
        let tap = match &io.peer {
            Some(p) => {
                let name = format!("cvbqm{}", p.proc.pid());
                make_tap(&p.netns(), &name).map_err(|e| launch_err(BACKEND, w, e))?;
                Some(name)
            }
            None => None,
        };
        let append = append(kvm, tap.is_some(), w, &io.args).map_err(|e| launch_err(BACKEND, w, e))?;
        let qargs = QemuArgs { kernel: &kernel, initrd: initrd.path(), append, tap, disk: io.disk.clone() };
        let mut cmd = command(&qargs);
        if let Some(p) = &io.peer {
            // QEMU opens the tap inside the peer's namespace; nothing of the VM's network is
            // visible from the host's.
            let netns = std::fs::File::open(p.netns()).map_err(|e| launch_err(BACKEND, w, e))?;
            // SAFETY: the closure runs between fork and exec and only calls setns(2), which is
            // async-signal-safe; `netns` stays open until the closure has run (it is moved in).
            unsafe {
                cmd.pre_exec(move || {
                    use std::os::fd::AsRawFd;
                    if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        // The console goes through our relay, then to the harness's pipe.
        let vm = GuestProcess::spawn(BACKEND, cmd, spec, io, GUEST_MEM_MIB)?;
        Ok(Box::new(QemuInstance { vm, kvm, _scratch: dir, _initrd: initrd }))
    }
}

impl QemuInstance {
    fn last_console_line(&self) -> String {
        self.vm
            .console
            .lock()
            .ok()
            .and_then(|c| c.tail.iter().rev().find(|l| !l.trim().is_empty()).cloned())
            .map(|l| format!("last console line: {l:?}"))
            .unwrap_or_else(|| "the guest printed nothing on its console (booted with `quiet`)".into())
    }
}

impl Instance for QemuInstance {
    fn pids(&self) -> Vec<i32> {
        vec![self.vm.child.pid()]
    }

    fn close_stdin(&mut self) {
        // On SIGTERM QEMU powers the guest off and exits.
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
        let exit = r.map_err(|e| BackendError::Other {
            backend: BACKEND.into(),
            what: format!("running the guest ({:.1} s after launch)", self.vm.launched.elapsed().as_secs_f64()),
            source: format!("{e}; {}", self.last_console_line()).into(),
        })?;
        if self.vm.stdin_stop.requested() {
            // Ended on our request (QEMU exits 0 on SIGTERM): /init never got to report.
            return Ok(ExitInfo { code: Some(0), signal: None, oom_killed: false });
        }
        if !exit.success() {
            return Ok(exit);
        }
        // QEMU itself ended cleanly: the workload's status is what /init reported.
        let reported = self.vm.console.lock().ok().and_then(|c| console::reported_status(&c.tail));
        match reported {
            Some(code) => Ok(ExitInfo { code: Some(code), signal: None, oom_killed: false }),
            None => Err(BackendError::Other {
                backend: BACKEND.into(),
                what: "reading the workload's exit status".into(),
                source: format!("the guest ended without /init reporting one; {}", self.last_console_line()).into(),
            }),
        }
    }

    fn stop(&mut self) -> Result<ExitInfo, BackendError> {
        self.vm.stop()
    }

    fn phases(&self) -> Vec<(String, u64)> {
        let Ok(c) = self.vm.console.lock() else {
            return Vec::new();
        };
        c.first_output
            .map(|t| {
                vec![(
                    "qemu+kernel→first console line".to_string(),
                    t.duration_since(self.vm.launched).as_nanos() as u64,
                )]
            })
            .unwrap_or_default()
    }

    fn notes(&self) -> Vec<String> {
        let mut v = vec![format!(
            "qemu: -M microvm, {GUEST_MEM_MIB} MiB, 1 vCPU, same vmlinux, initramfs and guest command line as the \
             microvm backend (reboot=t instead of the i8042), virtio-net tap in the run's peer namespace, \
             virtio-blk ext4 disk; {}",
            self.kvm.describe()
        )];
        if self.kvm == KvmKind::SoftwarePvm {
            v.push(
                "qemu: workload not run: under kvm_pvm (software nested KVM) the guest kernel boots but its \
                 user space cannot make system calls; on hardware KVM the same guest runs the workload"
                    .into(),
            );
        }
        if let Ok(c) = self.vm.console.lock() {
            if !c.tail.iter().any(|l| crate::record::is_ready_line(l)) && !c.tail.is_empty() {
                v.push(format!("qemu: guest console ended with: {}", c.tail_text()));
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_boots_our_kernel_with_our_cmdline_and_the_same_devices() {
        let a = QemuArgs {
            kernel: Path::new("/k/vmlinux"),
            initrd: Path::new("/k/initrd"),
            append: append(KvmKind::Hardware, true, "net-rr", &["--peer".into(), "10.203.0.1:5201".into()]).unwrap(),
            tap: Some("cvbqm1".into()),
            disk: Some(PathBuf::from("/d/disk.ext4")),
        };
        let args: Vec<String> = command(&a).get_args().map(|x| x.to_string_lossy().into_owned()).collect();
        assert!(args.windows(2).any(|w| w == ["-kernel", "/k/vmlinux"]));
        assert!(args.windows(2).any(|w| w == ["-initrd", "/k/initrd"]));
        assert!(args.iter().any(|x| x.starts_with("tap,id=n0,ifname=cvbqm1,")));
        assert!(args.iter().any(|x| x == "virtio-blk-device,drive=d0"));
        let last = args.last().cloned().unwrap_or_default();
        assert!(last.contains(" reboot=t") && last.contains(" ip=10.203.0.2::10.203.0.1:255.255.255.252::eth0:off"));
        assert_eq!(
            cmdline::workload_argv(&last, cmdline::BARE_WORDS_THE_KERNEL_CONSUMES),
            Ok(vec!["net-rr", "--peer", "10.203.0.1:5201"])
        );
    }

    #[test]
    fn exit_status_comes_from_the_last_init_report() {
        let tail: std::collections::VecDeque<String> =
            ["READY", "{\"workload\":\"noop\"}", "cvbench-init: exit status 3\r"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        assert_eq!(console::reported_status(&tail), Some(3));
        let none: std::collections::VecDeque<String> = ["READY"].iter().map(|s| s.to_string()).collect();
        assert_eq!(console::reported_status(&none), None);
    }
}
