//! The `microvm-bare` backend: the workload ELF run directly at guest CPL3 in a KVM VM with no
//! guest kernel (`cvbench-vmm bare`); the VMM services its system calls. The VMM is one host
//! process: the harness times and samples it like any other; its own phase timings, exit and
//! syscall counters and peak RSS come back through its typed `--stats-json` file.
//!
//! Network and disk workloads run with forwarded I/O: for `net-*` the VMM moves itself into a
//! private network namespace with one veth (a /30) to the namespace of the run's peer server,
//! and may connect to that server only; for `disk` the guest may use regular files beneath the
//! run's scratch directory only. Each forwarded call is one VM exit.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use cvbench_microvm::bare::net::NetConfig;
use cvbench_microvm::bare::{self, BareConfig};
use cvbench_microvm::jail::seccomp::EXIT_SECCOMP;
use cvbench_microvm::stats::BareStats;
use cvbench_microvm::{kvm_probe, KvmKind};

use super::guestkit::kernel::vmm_binary;
use super::guestkit::peer::PeerServer;
use super::guestkit::vmm::{vmm_timeout, write_vmm_config};
use super::peers::{launch_err, scratch};
use super::process::ChildProcess;
use super::{Backend, BackendError, BackendId, Instance, LaunchSpec};
use crate::paths;
use crate::record::{ExitInfo, RunRecord};
use crate::workload::Workload;
use crate::workload::{Needs, SERVE_PORT};

const BACKEND: &str = BackendId::MicrovmBare.name();
/// Enough for every supported workload's defaults (mem-touch: 128 + 32 MiB); host memory is
/// only used for pages the guest touches.
pub const DEFAULT_MEM_MIB: u32 = 512;
/// The /30 between the VMM's private namespace and the peer's.
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 204, 0, 1);
const VMM_IP: Ipv4Addr = Ipv4Addr::new(10, 204, 0, 2);

/// The bare VM's counters in a record's `extra`: the one key table, written by this backend
/// from the VMM's typed [`BareStats`] and read back by the labs through [`BareCounter::of`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BareCounter {
    VmExits,
    Syscalls,
    SyscallServiceNs,
    GuestMemKib,
    GuestResidentKib,
    /// VmHWM of the VMM process: its true peak, which a periodic sampler can miss.
    PeakRssKib,
    ForwardedCalls,
    RefusedCalls,
    VmmJailed,
    VmmSeccompAllowedSyscalls,
}

impl BareCounter {
    pub const ALL: [BareCounter; 10] = [
        BareCounter::VmExits,
        BareCounter::Syscalls,
        BareCounter::SyscallServiceNs,
        BareCounter::GuestMemKib,
        BareCounter::GuestResidentKib,
        BareCounter::PeakRssKib,
        BareCounter::ForwardedCalls,
        BareCounter::RefusedCalls,
        BareCounter::VmmJailed,
        BareCounter::VmmSeccompAllowedSyscalls,
    ];

    /// The record's key (part of the record schema: do not rename).
    pub const fn key(self) -> &'static str {
        match self {
            BareCounter::VmExits => "vm_exits",
            BareCounter::Syscalls => "syscalls",
            BareCounter::SyscallServiceNs => "syscall_service_ns",
            BareCounter::GuestMemKib => "guest_mem_kib",
            BareCounter::GuestResidentKib => "guest_resident_kib",
            BareCounter::PeakRssKib => "peak_rss_kib",
            BareCounter::ForwardedCalls => "forwarded_calls",
            BareCounter::RefusedCalls => "refused_calls",
            BareCounter::VmmJailed => "vmm_jailed",
            BareCounter::VmmSeccompAllowedSyscalls => "vmm_seccomp_allowed_syscalls",
        }
    }

    fn in_stats(self, s: &BareStats) -> Option<u64> {
        match self {
            BareCounter::VmExits => Some(s.vm_exits),
            BareCounter::Syscalls => Some(s.syscalls),
            BareCounter::SyscallServiceNs => Some(s.syscall_service_ns),
            BareCounter::GuestMemKib => Some(s.guest_mem_kib),
            BareCounter::GuestResidentKib => s.guest_resident_kib,
            BareCounter::PeakRssKib => s.vmm_peak_rss_kib,
            BareCounter::ForwardedCalls => Some(s.forwarded_calls),
            BareCounter::RefusedCalls => Some(s.refused_calls),
            BareCounter::VmmJailed => Some(u64::from(s.jailed)),
            BareCounter::VmmSeccompAllowedSyscalls => s.seccomp_allowed_syscalls.map(|n| n as u64),
        }
    }

    /// This counter in a bare-VM record, if the VMM reported it.
    pub fn of(self, record: &RunRecord) -> Option<f64> {
        record.extra.get(self.key()).copied()
    }
}

/// One launch's bare VM, before it becomes the VMM's [`BareConfig`].
pub(crate) struct BarePlan {
    pub(crate) elf: PathBuf,
    pub(crate) workload: String,
    /// The workload's arguments, `--peer`/`--dir` included.
    pub(crate) args: Vec<String>,
    pub(crate) mem_mib: u32,
    pub(crate) run_dir: Option<PathBuf>,
    pub(crate) net: Option<NetConfig>,
    pub(crate) timeout: Duration,
    pub(crate) jail: bool,
}

impl BarePlan {
    /// The config `cvbench-vmm bare --config` runs.
    pub(crate) fn config(&self) -> BareConfig {
        BareConfig {
            elf: self.elf.clone(),
            // argv[0] is the ELF path, as an unset `--argv0` gives.
            argv: [self.elf.display().to_string(), self.workload.clone()]
                .into_iter()
                .chain(self.args.iter().cloned())
                .collect(),
            env: Vec::new(),
            mem_mib: self.mem_mib,
            timeout: Some(vmm_timeout(self.timeout)),
            // The harness always asks for the stats file, and that measures memory.
            measure_memory: true,
            run_dir: self.run_dir.clone(),
            max_file_mib: bare::default_max_file_mib(),
            net: self.net.clone(),
            jail: self.jail,
            selftest_forbidden_syscall: false,
            snapshot_to: None,
        }
    }
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
    args: Vec<String>,
    peer: Option<PeerServer>,
    exit: Option<ExitInfo>,
    _scratch: tempfile::TempDir,
}

impl Backend for MicroVmBare {
    fn id(&self) -> BackendId {
        BackendId::MicrovmBare
    }

    fn check(&self) -> Result<(), String> {
        kvm_probe().usable()?;
        vmm_binary()?;
        paths::workload_binary().map(|_| ()).map_err(|e| e.to_string())
    }

    fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn Instance>, BackendError> {
        let w = spec.workload.name();
        // Every workload runs: network and file calls are forwarded by the VMM (confined).
        if w.parse::<Workload>().is_err() {
            return Err(BackendError::Unsupported {
                backend: BACKEND.into(),
                workload: w.to_string(),
                reason: "the bare VM runs only the workloads whose system calls the VMM serves".into(),
            });
        }
        let kvm =
            kvm_probe().usable().map_err(|reason| BackendError::Unavailable { backend: BACKEND.into(), reason })?;
        let vmm = vmm_binary().map_err(|e| launch_err(BACKEND, w, e))?;
        let elf = paths::workload_binary().map_err(|e| launch_err(BACKEND, w, e))?;
        let dir = scratch("cvbench-microvm-bare-").map_err(|e| launch_err(BACKEND, w, e))?;
        let stats_path = dir.path().join("vmm-stats.json");
        let mem = spec.options.guest_mem_mib.unwrap_or(DEFAULT_MEM_MIB);
        let mut args = spec.args.clone();
        let mut peer = None;
        let mut net = None;
        let mut run_dir = None;
        match spec.needs() {
            Needs { network: true, .. } => {
                let p = PeerServer::start(&elf)?;
                let addr = SocketAddrV4::new(PEER_IP, SERVE_PORT);
                net = Some(NetConfig { peer_pid: p.proc.pid(), peer: addr, local_ip: VMM_IP });
                args.extend(["--peer".to_string(), addr.to_string()]);
                peer = Some(p);
            }
            Needs { disk: true, .. } => {
                let files = dir.path().join("files");
                std::fs::create_dir(&files).map_err(|e| launch_err(BACKEND, w, e))?;
                args.extend(["--dir".to_string(), files.display().to_string()]);
                run_dir = Some(files);
            }
            _ => {}
        }
        let plan = BarePlan {
            elf,
            workload: w.to_string(),
            args: args.clone(),
            mem_mib: mem,
            run_dir,
            net,
            timeout: spec.timeout,
            jail: !spec.options.vmm_no_jail,
        };
        let config = plan.config();
        let config_path = dir.path().join("vmm-config.json");
        write_vmm_config(&config_path, &config).map_err(|e| launch_err(BACKEND, w, e))?;
        let mut cmd = Command::new(&vmm);
        cmd.arg("bare").arg("--config").arg(&config_path).arg("--stats-json").arg(&stats_path);
        let spec = LaunchSpec { args: args.clone(), ..spec };
        let child = ChildProcess::spawn(BACKEND, cmd, spec)?;
        Ok(Box::new(BareInstance { child, stats_path, kvm, args, peer, exit: None, _scratch: dir }))
    }
}

impl BareInstance {
    fn stop_peer(&mut self) {
        if let Some(mut p) = self.peer.take() {
            let _ = p.proc.stop(Duration::from_secs(2));
        }
    }

    /// The VMM's report, once it has exited normally.
    fn stats(&self) -> Option<BareStats> {
        let text = std::fs::read_to_string(&self.stats_path).ok()?;
        serde_json::from_str(&text).ok()
    }
}

impl Instance for BareInstance {
    fn pids(&self) -> Vec<i32> {
        vec![self.child.pid()]
    }

    fn close_stdin(&mut self) {
        // The guest's stdin is the VMM's: closing it ends `idle` in the guest.
        self.child.close_stdin();
    }

    fn effective_args(&self) -> Option<Vec<String>> {
        Some(self.args.clone())
    }

    fn wait(&mut self, timeout: Duration) -> Result<ExitInfo, BackendError> {
        let r = self.child.wait(timeout);
        self.stop_peer();
        self.exit = r.as_ref().ok().cloned();
        r
    }

    fn stop(&mut self) -> Result<ExitInfo, BackendError> {
        let r = self.child.stop(Duration::from_secs(2));
        self.stop_peer();
        self.exit = r.as_ref().ok().cloned();
        r
    }

    fn phases(&self) -> Vec<(String, u64)> {
        let Some(s) = self.stats() else { return Vec::new() };
        s.phases.into_iter().map(|(name, ns)| (format!("vmm {name}"), ns)).collect()
    }

    fn extra(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        let Some(s) = self.stats() else { return m };
        for c in BareCounter::ALL {
            if let Some(v) = c.in_stats(&s) {
                m.insert(c.key().to_string(), v as f64);
            }
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
                v.push(format!(
                    "microvm-bare: {} system calls serviced in {} vCPU exits; registers via {}",
                    s.syscalls,
                    s.vm_exits,
                    if s.sync_regs { "the shared kvm_run page (KVM_CAP_SYNC_REGS)" } else { "KVM_GET/SET_REGS ioctls" },
                ));
                v.push(match s.seccomp_allowed_syscalls {
                    Some(n) if s.jailed => format!(
                        "microvm-bare: VMM jailed: own mount/IPC/UTS namespaces, empty read-only root, \
                         0 capabilities, no_new_privs, seccomp allow-list of {n} system calls"
                    ),
                    _ => "microvm-bare: VMM NOT jailed (--no-jail): full privileges of its caller".into(),
                });
                if s.forwarded_calls > 0 {
                    v.push(format!(
                        "microvm-bare: {} network/file calls forwarded to the host, each one VM exit",
                        s.forwarded_calls
                    ));
                }
                if !s.refusals.is_empty() {
                    v.push(format!("microvm-bare: refused by the VMM's confinement: {}", s.refusals.join("; ")));
                }
                if !s.unsupported_syscalls.is_empty() {
                    let nrs: Vec<String> = s.unsupported_syscalls.iter().map(|n| n.to_string()).collect();
                    v.push(format!("microvm-bare: unsupported system calls answered -ENOSYS: {}", nrs.join(", ")));
                }
            }
            None if self.exit.as_ref().and_then(|e| e.code) == Some(EXIT_SECCOMP) => v.push(
                "microvm-bare: the VMM was stopped by its own seccomp filter: it made a system call outside its \
                 allow-list (stderr names the call)"
                    .into(),
            ),
            None => v.push(
                "microvm-bare: the VMM wrote no stats (the guest faulted, timed out or was killed; see stderr)".into(),
            ),
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::guestkit::vmm::test_support::{print_config, vmm_or_skip};
    use std::ffi::OsString;

    /// The flags the harness passed before it passed the config, with `--print-config`.
    fn legacy_flags(plan: &BarePlan, stats_path: &std::path::Path) -> Vec<OsString> {
        let mut cmd = Command::new("cvbench-vmm");
        cmd.arg("bare")
            .arg("--elf")
            .arg(&plan.elf)
            .args(["--mem-mib", &plan.mem_mib.to_string()])
            .args(["--timeout-s", &format!("{:.3}", plan.timeout.as_secs_f64())])
            .arg("--stats-json")
            .arg(stats_path);
        if !plan.jail {
            cmd.arg("--no-jail");
        }
        if let Some(n) = &plan.net {
            cmd.args(["--net-peer-pid", &n.peer_pid.to_string(), "--net-peer", &n.peer.to_string()])
                .args(["--net-local-ip", &n.local_ip.to_string()]);
        }
        if let Some(dir) = &plan.run_dir {
            cmd.arg("--run-dir").arg(dir);
        }
        cmd.arg("--print-config").arg("--").arg(&plan.workload).args(&plan.args);
        cmd.get_args().map(|a| a.to_os_string()).collect()
    }

    fn plan(workload: &str, args: &[&str]) -> BarePlan {
        BarePlan {
            elf: "/work/workload/target/release/cvbench-workload".into(),
            workload: workload.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            mem_mib: DEFAULT_MEM_MIB,
            run_dir: None,
            net: None,
            timeout: Duration::from_secs(60),
            jail: true,
        }
    }

    fn representative_plans() -> Vec<BarePlan> {
        let addr = SocketAddrV4::new(PEER_IP, SERVE_PORT);
        let mut net = plan("net-stream", &["--mib", "16", "--peer", "10.204.0.1:5201"]);
        net.net = Some(NetConfig { peer_pid: 4242, peer: addr, local_ip: VMM_IP });
        let mut disk = plan("disk", &["--size-mib", "8", "--dir", "/tmp/cvbench-microvm-bare-x/files"]);
        disk.run_dir = Some("/tmp/cvbench-microvm-bare-x/files".into());
        let mut unjailed = plan("syscall", &["--iters", "2000"]);
        unjailed.jail = false;
        unjailed.mem_mib = 256;
        unjailed.timeout = Duration::from_millis(1234);
        vec![plan("noop", &[]), net, disk, unjailed]
    }

    #[test]
    fn bare_config_equals_what_the_old_flags_gave() {
        let Some(vmm) = vmm_or_skip() else { return };
        for p in representative_plans() {
            let from_flags: BareConfig = print_config(&vmm, &legacy_flags(&p, std::path::Path::new("/tmp/stats.json")));
            assert_eq!(p.config(), from_flags, "{} {:?}", p.workload, p.args);
        }
    }

    #[test]
    fn counter_keys_are_the_record_schema() {
        let keys: Vec<&str> = BareCounter::ALL.iter().map(|c| c.key()).collect();
        assert_eq!(
            keys,
            [
                "vm_exits",
                "syscalls",
                "syscall_service_ns",
                "guest_mem_kib",
                "guest_resident_kib",
                "peak_rss_kib",
                "forwarded_calls",
                "refused_calls",
                "vmm_jailed",
                "vmm_seccomp_allowed_syscalls",
            ]
        );
    }

    #[test]
    fn bare_config_survives_the_file_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        for p in representative_plans() {
            let path = dir.path().join("vmm-config.json");
            write_vmm_config(&path, &p.config()).unwrap();
            let read: BareConfig = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            assert_eq!(read, p.config());
        }
    }
}
