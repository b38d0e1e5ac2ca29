//! The security-surface probe: start one `idle` instance, and from the host
//! read what isolates its most isolated process — namespaces it does not
//! share with the harness, effective and bounding capabilities, seccomp mode
//! and filter count, no_new_privs — from `/proc/<pid>/{status,ns}`, how many
//! system calls its seccomp filters let through (the filters read back with
//! ptrace and run by `seccomp_bpf`), and whether any process of the instance
//! execs the workload on the host kernel at all. The same reading for every
//! backend; for a VM it describes the VMM process, for gVisor also the
//! sentry's own host filter.

use std::path::Path;
use std::time::Duration;

use super::seccomp_bpf::{self, AllowList};
use crate::backend::{Backend, Instance, Kind};
use crate::record::RunRecord;
use crate::runner::{self, RunRequest};
use crate::workload::Workload;

const NAMESPACES: &[&str] = &["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"];

const CAPS: &[&str] = &[
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// What the host sees of one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcSurface {
    pub pid: i32,
    pub name: String,
    pub own_namespaces: Vec<String>,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub seccomp_mode: Option<u32>,
    pub seccomp_filters: Option<u32>,
    pub no_new_privs: Option<bool>,
}

fn field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':'))).map(str::trim)
}

/// Parse the fields of a `/proc/<pid>/status` text this probe uses.
pub fn parse_status(pid: i32, status: &str) -> ProcSurface {
    ProcSurface {
        pid,
        name: field(status, "Name").unwrap_or("?").to_string(),
        own_namespaces: Vec::new(),
        cap_eff: field(status, "CapEff").and_then(|v| u64::from_str_radix(v, 16).ok()).unwrap_or(0),
        cap_bnd: field(status, "CapBnd").and_then(|v| u64::from_str_radix(v, 16).ok()).unwrap_or(0),
        seccomp_mode: field(status, "Seccomp").and_then(|v| v.parse().ok()),
        seccomp_filters: field(status, "Seccomp_filters").and_then(|v| v.parse().ok()),
        no_new_privs: field(status, "NoNewPrivs").map(|v| v == "1"),
    }
}

/// Capability names of a CapEff mask; "all N" when every known one is set.
pub fn cap_names(mask: u64) -> String {
    let set: Vec<&str> = CAPS.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, n)| *n).collect();
    if set.len() == CAPS.len() {
        format!("all {}", set.len())
    } else if set.len() > CAPS.len() / 2 {
        let missing: Vec<&str> =
            CAPS.iter().enumerate().filter(|(i, _)| mask & (1 << i) == 0).map(|(_, n)| *n).collect();
        format!("{} of {} (all but {})", set.len(), CAPS.len(), missing.join(", "))
    } else if set.is_empty() {
        "none".into()
    } else {
        format!("{}: {}", set.len(), set.join(", "))
    }
}

fn inspect(proc_root: &Path, pid: i32) -> Option<ProcSurface> {
    let dir = proc_root.join(pid.to_string());
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let mut s = parse_status(pid, &status);
    // runsc re-execs itself (comm `exe`); its argv[0] says which part it is (runsc-gofer, runsc-sandbox).
    if s.name == "exe" {
        if let Some(a) = argv0(pid).filter(|a| !a.is_empty()) {
            s.name = a;
        }
    }
    let me = proc_root.join("self/ns");
    for ns in NAMESPACES {
        let theirs = std::fs::read_link(dir.join("ns").join(ns)).ok();
        let mine = std::fs::read_link(me.join(ns)).ok();
        if theirs.is_some() && theirs != mine {
            s.own_namespaces.push(ns.to_string());
        }
    }
    Some(s)
}

fn notes_for(s: &ProcSurface) -> Vec<String> {
    vec![
        format!("surface.process: {} (pid {})", s.name, s.pid),
        format!(
            "surface.namespaces: {}",
            if s.own_namespaces.is_empty() {
                "none (host namespaces)".to_string()
            } else {
                s.own_namespaces.join(", ")
            }
        ),
        format!("surface.capabilities: {}", cap_names(s.cap_eff)),
        format!("surface.bounding: {}", cap_names(s.cap_bnd)),
        format!(
            "surface.seccomp: {}",
            match (s.seccomp_mode, s.seccomp_filters) {
                (Some(0), _) => "none".to_string(),
                (Some(1), _) => "strict mode".to_string(),
                (Some(2), Some(n)) => format!("filter mode, {n} filter(s)"),
                (Some(2), None) => "filter mode".to_string(),
                _ => "unknown".to_string(),
            }
        ),
        format!(
            "surface.no_new_privs: {}",
            match s.no_new_privs {
                Some(true) => "yes",
                Some(false) => "no",
                None => "unknown",
            }
        ),
    ]
}

/// The allow-list of `pid`'s seccomp filters, as a note value.
fn allow_list(s: &ProcSurface) -> String {
    if s.seccomp_mode != Some(2) {
        return format!("all {} (no filter)", seccomp_bpf::SYSCALL_RANGE);
    }
    match seccomp_bpf::read_filters(s.pid) {
        Ok(Some(f)) => AllowList::measure(&f).map(|m| m.to_string()).unwrap_or_else(|e| format!("unreadable: {e}")),
        Ok(None) => format!("all {} (no filter)", seccomp_bpf::SYSCALL_RANGE),
        Err(e) => format!("not readable ({e})"),
    }
}

fn argv0(pid: i32) -> Option<String> {
    let c = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    c.split(|b| *b == 0).next().map(|a| String::from_utf8_lossy(a).into_owned())
}

/// Whether a process of the instance execs the workload binary on the host kernel, measured from
/// `/proc/<pid>/exe`; otherwise what serves the workload's system calls instead.
fn kernel_between(kind: Kind, pids: &[i32]) -> String {
    let on_host = pids.iter().find(|p| {
        std::fs::read_link(format!("/proc/{p}/exe"))
            .ok()
            .and_then(|e| e.file_name().map(|n| n.to_string_lossy().starts_with("cvbench-workload")))
            .unwrap_or(false)
    });
    match (on_host, kind) {
        (Some(p), _) => format!("none: pid {p} execs cvbench-workload, its system calls go to the host kernel"),
        (None, Kind::Sandbox) => {
            "user-space kernel: no process of the instance execs the workload; gVisor's sentry serves its system calls".into()
        }
        (None, Kind::Vm | Kind::BareVm) => {
            "guest: no process of the instance execs the workload; a guest kernel (or, for microvm-bare, the VMM) serves its system calls".into()
        }
        (None, _) => "unknown: no process of the instance execs the workload binary".into(),
    }
}

/// Probe `b` once through the runner's one path: an `idle` instance, read from the host at
/// READY; the record's notes carry `surface.*` facts, or its error.
pub fn probe(b: &dyn Backend, req: &RunRequest) -> RunRecord {
    let mut idle = req.clone();
    idle.workload = Workload::Idle;
    idle.args = Vec::new();
    idle.sample_footprint = false;
    idle.hold = Duration::ZERO;
    // The probe reads the instance; it measures no time, so it is not pinned.
    idle.pin_instance_cpu = None;
    runner::run_with(b, &idle, &mut Surface { kind: b.id().kind() })
}

/// The probe's phase at READY.
struct Surface {
    kind: Kind,
}

impl runner::Phases for Surface {
    fn at_ready(&mut self, inst: &dyn Instance, rec: &mut RunRecord) -> Result<(), String> {
        let pids = inst.pids();
        let seen: Vec<ProcSurface> = pids.iter().filter_map(|p| inspect(Path::new("/proc"), *p)).collect();
        // The most isolated process; on a tie the later one (the payload
        // comes after the runtime or shim in a backend's pid list).
        let Some(s) = seen.iter().rev().max_by_key(|s| s.own_namespaces.len()) else {
            return Err("none of the instance's processes could be read in /proc".to_string());
        };
        rec.notes.extend(notes_for(s));
        rec.notes.push(format!("surface.seccomp_allowed: {}", allow_list(s)));
        rec.notes.push(format!("surface.kernel_between: {}", kernel_between(self.kind, &pids)));
        // gVisor: the sentry's own filter bounds what the whole sandbox can ask of the host.
        if let Some(sentry) = pids.iter().copied().find(|p| argv0(*p).as_deref() == Some("runsc-sandbox")) {
            if let Some(ss) = inspect(Path::new("/proc"), sentry) {
                rec.notes.push(format!(
                    "surface.sentry_filter: pid {sentry}, seccomp mode {}, {}; capabilities {}",
                    ss.seccomp_mode.map_or("?".into(), |m| m.to_string()),
                    allow_list(&ss),
                    cap_names(ss.cap_eff)
                ));
            }
        }
        Ok(())
    }

    fn judges_the_end(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_status_reads_caps_and_seccomp() {
        let s = parse_status(
            7,
            "Name:\tcvbench-worklo\nCapEff:\t00000000a80425fb\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n",
        );
        assert_eq!(s.name, "cvbench-worklo");
        assert_eq!(s.cap_eff, 0xa80425fb);
        assert_eq!((s.seccomp_mode, s.seccomp_filters, s.no_new_privs), (Some(2), Some(1), Some(true)));
    }

    #[test]
    fn a_process_without_a_filter_allows_every_call_and_runs_on_the_host_kernel() {
        let me = std::process::id() as i32;
        let s = inspect(Path::new("/proc"), me).unwrap();
        assert_eq!(allow_list(&s), format!("all {} (no filter)", seccomp_bpf::SYSCALL_RANGE));
        // The test binary is not the workload: nothing of this "instance" execs it.
        assert!(kernel_between(Kind::Sandbox, &[me]).starts_with("user-space kernel"));
        assert!(kernel_between(Kind::Container, &[me]).starts_with("unknown"));
        // The bare VM is a VM here: its VMM serves the workload's system calls.
        assert!(kernel_between(Kind::BareVm, &[me]).starts_with("guest"));
    }

    #[test]
    fn docker_default_caps_are_fourteen() {
        assert!(cap_names(0xa80425fb).starts_with("14: chown, dac_override"));
        assert_eq!(cap_names(0), "none");
    }

    #[test]
    fn own_process_shares_every_namespace_with_itself() {
        let s = inspect(Path::new("/proc"), std::process::id() as i32).unwrap();
        assert!(s.own_namespaces.is_empty(), "{:?}", s.own_namespaces);
    }

    #[test]
    fn the_probe_reads_a_native_idle_instance_through_the_runner() {
        let b = crate::backend::BackendId::Native.backend();
        let mut req = RunRequest::new(Workload::Noop, vec!["--ignored".into()]);
        req.timeout = Duration::from_secs(30);
        let rec = probe(b.as_ref(), &req);
        assert_eq!(rec.error, None, "{rec:?}");
        assert_eq!((rec.workload.as_str(), rec.args.len()), ("idle", 0));
        assert!(rec.notes.iter().any(|n| n.starts_with("surface.process: cvbench-worklo")), "{:?}", rec.notes);
        assert!(rec.notes.iter().any(|n| n.starts_with("surface.kernel_between: none: pid")), "{:?}", rec.notes);
        assert!(rec.host.launch_to_ready_ns.is_some());
    }
}
