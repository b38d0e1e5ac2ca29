//! The `qemu` backend: `qemu-system-x86_64 -M microvm` booting the same guest
//! kernel (from `scripts/build-guest-kernel`'s cache) and the same initramfs
//! (busybox, /init, the workload) as our Linux micro-VM. The serial console
//! is relayed line by line to the harness, which sees READY and the JSON
//! line as from any backend; the relay also times the first console output
//! and keeps the last lines for the record when the guest does not get far.

use crate::backend::console::{self, Console};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cvbench_microvm::linux::{cmdline, kernel_cache};

use super::launch_err;
use crate::backend::process::ChildProcess;
use crate::backend::{Backend, BackendError, Instance, LaunchSpec};
use crate::env::{self, KvmKind};
use crate::record::ExitInfo;

const GUEST_MEM_MIB: u32 = 128;

pub struct Qemu {
    initrd: Mutex<Option<Arc<tempfile::NamedTempFile>>>,
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
        crate::backend::microvm::shared_initrd(&self.initrd, "cvbench-qemu-initrd", std::path::Path::new("/run"))
    }
}

fn kernel() -> Result<PathBuf, String> {
    kernel_cache::cached_kernel().ok_or_else(|| {
        format!(
            "guest kernel not built (expected at {}; run {})",
            kernel_cache::expected_path()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "~/.cache/cvbench/kernel/<key>/vmlinux".into()),
            kernel_cache::BUILD_COMMAND
        )
    })
}

/// What the console relay saw.
struct QemuInstance {
    child: ChildProcess,
    console: Arc<Mutex<Console>>,
    launched: Instant,
    relay: Option<std::thread::JoinHandle<()>>,
    kvm: KvmKind,
    _initrd: Arc<tempfile::NamedTempFile>,
}

impl Backend for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn check(&self) -> Result<(), String> {
        if !super::on_path("qemu-system-x86_64") {
            return Err("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into());
        }
        if env::kvm_kind() == KvmKind::Absent {
            return Err("no usable /dev/kvm".into());
        }
        if !std::path::Path::new("/bin/busybox").is_file() {
            return Err("/bin/busybox missing (apt-get install busybox-static)".into());
        }
        kernel().map(|_| ())
    }

    fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn Instance>, BackendError> {
        let w = spec.workload.clone();
        if spec.needs().network || spec.needs().disk {
            return Err(BackendError::Unsupported {
                backend: "qemu".into(),
                workload: w,
                reason: "this backend attaches no virtio-net tap or virtio-blk disk".into(),
            });
        }
        let kernel = kernel().map_err(|e| launch_err("qemu", &w, e))?;
        let initrd = self.initrd().map_err(|e| launch_err("qemu", &w, e))?;
        let kvm = env::kvm_kind();
        let mut append = format!("{} quiet", cmdline::BASE);
        if kvm == KvmKind::SoftwarePvm {
            append.push(' ');
            append.push_str(cmdline::PVM_WORKAROUNDS);
        }
        append.push_str(" -- ");
        append.push_str(&w);
        for a in &spec.args {
            append.push(' ');
            append.push_str(a);
        }
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-M",
            "microvm,x-option-roms=off,rtc=off",
            "-enable-kvm",
            "-cpu",
            "host,-arch-capabilities",
            "-m",
            &GUEST_MEM_MIB.to_string(),
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            "-serial",
            "stdio",
            "-kernel",
        ])
        .arg(&kernel)
        .arg("-initrd")
        .arg(initrd.path())
        .arg("-append")
        .arg(&append);
        // The console goes through our relay, then to the harness's pipe.
        let LaunchSpec { workload, args, stdout, stderr, timeout, options, .. } = spec;
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| launch_err("qemu", &w, e))?;
        let child_spec = LaunchSpec {
            workload,
            args,
            // The guest's console is its only input; idle cannot be ended by
            // closing stdin here (the instance is stopped instead).
            stdin_pipe: false,
            stdout: wr,
            stderr,
            timeout,
            options,
        };
        let launched = Instant::now();
        let child = ChildProcess::spawn("qemu", cmd, child_spec)?;
        let (console, relay) = console::relay(rd, stdout);
        Ok(Box::new(QemuInstance { child, console, launched, relay: Some(relay), kvm, _initrd: initrd }))
    }
}

impl Instance for QemuInstance {
    fn pids(&self) -> Vec<i32> {
        vec![self.child.pid()]
    }

    fn close_stdin(&mut self) {
        // Nothing to close: see `launch`. A guest blocked in `idle` is
        // stopped by `stop`/drop.
    }

    fn wait(&mut self, timeout: Duration) -> Result<ExitInfo, BackendError> {
        let r = self.child.wait(timeout);
        if let Some(h) = self.relay.take() {
            let _ = h.join();
        }
        r.map_err(|e| {
            let console = self
                .console
                .lock()
                .ok()
                .and_then(|c| c.tail.iter().rev().find(|l| !l.trim().is_empty()).cloned())
                .map(|l| format!("last console line: {l:?}"))
                .unwrap_or_else(|| "the guest printed nothing on its console (booted with `quiet`)".into());
            BackendError::Other {
                backend: "qemu".into(),
                what: format!("running the guest ({:.1} s after launch)", self.launched.elapsed().as_secs_f64()),
                source: format!("{e}; {console}").into(),
            }
        })
    }

    fn stop(&mut self) -> Result<ExitInfo, BackendError> {
        self.child.stop(Duration::from_secs(2))
    }

    fn phases(&self) -> Vec<(String, u64)> {
        let Ok(c) = self.console.lock() else {
            return Vec::new();
        };
        c.first_output
            .map(|t| {
                vec![("qemu+kernel→first console line".to_string(), t.duration_since(self.launched).as_nanos() as u64)]
            })
            .unwrap_or_default()
    }

    fn notes(&self) -> Vec<String> {
        let mut v = vec![format!(
            "qemu: -M microvm, {GUEST_MEM_MIB} MiB, 1 vCPU, same vmlinux and initramfs as the microvm backend; {}",
            self.kvm.describe()
        )];
        if self.kvm == KvmKind::SoftwarePvm {
            v.push(
                "qemu: workload not run: under kvm_pvm (software nested KVM) the guest kernel boots but its \
                 user space cannot make system calls, and QEMU -M microvm has no i8042 to power off through, \
                 so the guest never reports; on hardware KVM the same guest runs the workload"
                    .into(),
            );
        }
        if let Ok(c) = self.console.lock() {
            if !c.tail.iter().any(|l| l.trim() == "READY") && !c.tail.is_empty() {
                v.push(format!("qemu: guest console ended with: {}", c.tail_text()));
            }
        }
        v
    }
}

impl Drop for QemuInstance {
    fn drop(&mut self) {
        let _ = self.child.stop(Duration::from_millis(500));
        if let Some(h) = self.relay.take() {
            let _ = h.join();
        }
    }
}
