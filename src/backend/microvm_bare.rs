//! The `microvm-bare` backend: the workload ELF run directly at guest CPL3 in a KVM VM with no
//! guest kernel (`cvbench-vmm bare`); the VMM services its system calls. The VMM is one host
//! process: the harness times and samples it like any other; its own phase timings, exit and
//! syscall counters and peak RSS come back through its `--stats-json` file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use cvbench_microvm::{kvm_kind, KvmKind};

use super::peers::{launch_err, scratch};
use super::process::ChildProcess;
use super::{Backend, BackendError, Instance, LaunchSpec};
use crate::paths;
use crate::record::ExitInfo;
use crate::workload::Workload;

const BACKEND: &str = "microvm-bare";
/// Enough for every supported workload's defaults (mem-touch: 128 + 32 MiB); host memory is
/// only used for pages the guest touches.
const DEFAULT_MEM_MIB: u32 = 512;

fn vmm_binary() -> Result<PathBuf, String> {
    paths::sibling_binary("cvbench-vmm", "CVBENCH_VMM").map_err(|e| e.to_string())
}

/// The bare micro-VM backend.
#[derive(Default)]
pub struct MicroVmBare;

impl MicroVmBare {
    pub fn new() -> MicroVmBare {
        MicroVmBare
    }
}

struct BareInstance {
    child: ChildProcess,
    stats_path: PathBuf,
    kvm: KvmKind,
    _scratch: tempfile::TempDir,
}

impl Backend for MicroVmBare {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn check(&self) -> Result<(), String> {
        if let KvmKind::Unavailable(why) = kvm_kind() {
            return Err(why);
        }
        vmm_binary()?;
        paths::workload_binary().map(|_| ()).map_err(|e| e.to_string())
    }

    fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn Instance>, BackendError> {
        let w = spec.workload.clone();
        // No guest kernel: nothing that needs a network stack or a filesystem.
        let supported = w.parse::<Workload>().is_ok_and(|x| !x.needs().network && !x.needs().disk);
        if !supported {
            return Err(BackendError::Unsupported {
                backend: BACKEND.into(),
                workload: w,
                reason: "the bare VM has no guest kernel, so no network stack or filesystem: sockets, \
                         files and fsync are answered -ENOSYS (use the container or microvm backend)"
                    .into(),
            });
        }
        let kvm = kvm_kind();
        if let KvmKind::Unavailable(why) = &kvm {
            return Err(BackendError::Unavailable { backend: BACKEND.into(), reason: why.clone() });
        }
        let vmm = vmm_binary().map_err(|e| launch_err(BACKEND, &w, e))?;
        let elf = paths::workload_binary().map_err(|e| launch_err(BACKEND, &w, e))?;
        let dir = scratch("cvbench-microvm-bare-").map_err(|e| launch_err(BACKEND, &w, e))?;
        let stats_path = dir.path().join("vmm-stats.json");
        let mem = spec.options.guest_mem_mib.unwrap_or(DEFAULT_MEM_MIB);
        let mut cmd = Command::new(&vmm);
        cmd.arg("bare")
            .arg("--elf")
            .arg(&elf)
            .args(["--mem-mib", &mem.to_string()])
            .args(["--timeout-s", &format!("{:.3}", spec.timeout.as_secs_f64())])
            .arg("--stats-json")
            .arg(&stats_path)
            .arg("--")
            .arg(&w)
            .args(&spec.args);
        let child = ChildProcess::spawn(BACKEND, cmd, spec)?;
        Ok(Box::new(BareInstance { child, stats_path, kvm, _scratch: dir }))
    }
}

impl BareInstance {
    /// The VMM's report, once it has exited normally.
    fn stats(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(&self.stats_path).ok()?;
        serde_json::from_str(&text).ok()
    }
}

fn num(v: &serde_json::Value, key: &str) -> Option<f64> {
    v.get(key).and_then(serde_json::Value::as_f64)
}

impl Instance for BareInstance {
    fn pids(&self) -> Vec<i32> {
        vec![self.child.pid()]
    }

    fn close_stdin(&mut self) {
        // The guest's stdin is the VMM's: closing it ends `idle` in the guest.
        self.child.close_stdin();
    }

    fn wait(&mut self, timeout: Duration) -> Result<ExitInfo, BackendError> {
        self.child.wait(timeout)
    }

    fn stop(&mut self) -> Result<ExitInfo, BackendError> {
        self.child.stop(Duration::from_secs(2))
    }

    fn phases(&self) -> Vec<(String, u64)> {
        let Some(s) = self.stats() else { return Vec::new() };
        let Some(list) = s.get("phases").and_then(|p| p.as_array()) else { return Vec::new() };
        list.iter().filter_map(|p| Some((format!("vmm {}", p.get(0)?.as_str()?), p.get(1)?.as_u64()?))).collect()
    }

    fn extra(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        let Some(s) = self.stats() else { return m };
        for key in ["vm_exits", "syscalls", "syscall_service_ns", "guest_mem_kib", "guest_resident_kib"] {
            if let Some(v) = num(&s, key) {
                m.insert(key.to_string(), v);
            }
        }
        if let Some(v) = num(&s, "vmm_peak_rss_kib") {
            // VmHWM of the VMM process: its true peak, which a periodic sampler can miss.
            m.insert("peak_rss_kib".to_string(), v);
        }
        m
    }

    fn notes(&self) -> Vec<String> {
        let mut v = vec![format!(
            "microvm-bare: cvbench-vmm bare, workload ELF at guest CPL3 with no guest kernel, system calls \
             forwarded to the VMM (syscall -> CPL0 stub -> one port-I/O exit); {}",
            self.kvm
        )];
        match self.stats() {
            Some(s) => {
                let sync = s.get("sync_regs").and_then(|b| b.as_bool()).unwrap_or(false);
                v.push(format!(
                    "microvm-bare: {} system calls serviced in {} vCPU exits; registers via {}",
                    num(&s, "syscalls").unwrap_or(0.0),
                    num(&s, "vm_exits").unwrap_or(0.0),
                    if sync { "the shared kvm_run page (KVM_CAP_SYNC_REGS)" } else { "KVM_GET/SET_REGS ioctls" },
                ));
                if let Some(list) = s.get("unsupported_syscalls").and_then(|l| l.as_array()) {
                    if !list.is_empty() {
                        let nrs: Vec<String> = list.iter().map(|n| n.to_string()).collect();
                        v.push(format!("microvm-bare: unsupported system calls answered -ENOSYS: {}", nrs.join(", ")));
                    }
                }
            }
            None => v.push(
                "microvm-bare: the VMM wrote no stats (the guest faulted, timed out or was killed; see stderr)".into(),
            ),
        }
        v
    }
}
