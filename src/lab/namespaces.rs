//! Lab 1 (namespaces): hold an idle container and read from the host what
//! each namespace gives it (PID 1, its hostname, its interfaces, its root
//! mount, its namespace inodes), then time `noop` with one namespace more
//! each time and show the phase breakdown.

use crate::backend::BackendId;
use crate::workload::Workload;
use std::collections::BTreeMap;
use std::time::Duration;

use super::live::{self, Held};
use super::{backend_ready, ms, progress, run_once, yes, LabOptions, LabReport, Table};
use crate::backend::{Backend, BackendOptions};
use crate::figures::fixed;
use crate::stats;

/// The namespace sets timed, each adding kinds to the previous. The runtime
/// needs mount (the rootfs lives in it) and net (host networking is only for
/// privileged containers, which `BackendOptions` cannot ask for), so both are
/// in every set; the net namespace's own price shows in the `cleanup` phase.
const SETS: [&str; 4] = ["mount,net", "mount,net,pid", "mount,net,pid,uts,ipc", "mount,net,pid,uts,ipc,cgroup"];

/// `/proc/<pid>/ns` names of the namespaces the container gets by default.
const DEFAULT_NS: [&str; 6] = ["cgroup", "ipc", "mnt", "net", "pid", "uts"];

pub fn run(opts: &LabOptions, r: &mut LabReport) {
    let ct = match backend_ready(crate::backend::BackendId::Container) {
        Ok(b) => b,
        Err(reason) => {
            r.unavailable(reason);
            return;
        }
    };
    isolation(ct.as_ref(), r);
    startup(ct.as_ref(), opts, r);
}

fn isolation(ct: &dyn Backend, r: &mut LabReport) {
    progress("starting an idle container (default namespaces, --net none) and reading it from the host");
    let held = match Held::start(ct, Workload::Idle, &[], &BackendOptions::default(), Duration::from_secs(60)) {
        Ok(h) => h,
        Err(e) => {
            r.check("an idle container starts", false, live::error_chain(&e));
            return;
        }
    };
    let Some(pid) = held.payload_pid() else {
        r.check("the container's process is visible from the host", false, format!("pids {:?}", held.pids()));
        return;
    };
    let me = std::process::id().to_string();
    let mut t = Table::new(
        "What the container's process sees, read from the host via /proc/<pid>",
        &["", "host (this process)", "container (workload process)"],
    );
    let inside = live::nspid(pid).unwrap_or_default();
    let inner = inside.last().copied();
    t.row([
        "PID".to_string(),
        me.clone(),
        format!("{} (host pid {pid}; NSpid {:?})", fixed(inner.map(|p| p as f64), 0), inside),
    ]);
    let host_name = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    let their_name = live::hostname_of(pid);
    t.row([
        "hostname".to_string(),
        host_name.clone(),
        their_name.clone().unwrap_or_else(|e| format!("unreadable: {e}")),
    ]);
    let host_if = live::interfaces(std::process::id() as i32).unwrap_or_default();
    let their_if = live::interfaces(pid);
    t.row([
        "network interfaces".to_string(),
        host_if.join(", "),
        their_if.clone().map(|v| v.join(", ")).unwrap_or_else(|| "unreadable".into()),
    ]);
    let host_root = live::root_mount(std::process::id() as i32);
    let their_root = live::root_mount(pid);
    let lowers = their_root
        .as_ref()
        .and_then(|(_, o)| o.split(',').find_map(|kv| kv.strip_prefix("lowerdir=")))
        .map(|l| l.split(':').count());
    t.row([
        "root filesystem".to_string(),
        host_root.as_ref().map(|(f, _)| f.clone()).unwrap_or_default(),
        match (&their_root, lowers) {
            (Some((f, _)), Some(n)) => format!("{f} ({n} lower layer(s))"),
            (Some((f, _)), None) => f.clone(),
            (None, _) => "unreadable".into(),
        },
    ]);
    let mut own = Vec::new();
    for kind in DEFAULT_NS {
        let mine = live::ns_link(&me, kind);
        let theirs = live::ns_link(&pid.to_string(), kind);
        let separate = theirs.is_some() && theirs != mine;
        if separate {
            own.push(kind);
        }
        t.row([
            format!("/proc/<pid>/ns/{kind}"),
            mine.unwrap_or_default(),
            format!("{} ({})", theirs.unwrap_or_default(), if separate { "own" } else { "SHARED" }),
        ]);
    }
    r.tables.push(t);
    r.check("PID inside container is 1", inner == Some(1), format!("{} (NSpid {inside:?})", yes(inner == Some(1))));
    let differs = matches!(&their_name, Ok(n) if *n != host_name);
    r.check(
        "container has its own hostname",
        differs,
        format!("{} ({:?} vs host {host_name:?})", yes(differs), their_name.unwrap_or_default()),
    );
    let only_lo = their_if.as_deref() == Some(&["lo".to_string()][..]);
    r.check(
        "container network namespace holds only lo",
        only_lo,
        format!("{} ({})", yes(only_lo), their_if.map(|v| v.join(", ")).unwrap_or_default()),
    );
    let overlay = their_root.as_ref().map(|(f, _)| f.as_str()) == Some("overlay");
    r.check("container root is an overlay mount", overlay, yes(overlay).to_string());
    let all_own = own.len() == DEFAULT_NS.len();
    r.check(
        "every default namespace differs from the host's",
        all_own,
        format!("{} (own: {})", yes(all_own), own.join(", ")),
    );
    drop(held);
}

fn startup(ct: &dyn Backend, opts: &LabOptions, r: &mut LabReport) {
    let reps = opts.reps();
    let native = match backend_ready(crate::backend::BackendId::Native) {
        Ok(b) => b,
        Err(reason) => {
            r.unavailable(reason);
            return;
        }
    };
    progress(&format!("timing noop natively and with {} namespace sets, {reps} runs each, interleaved", SETS.len()));
    // Interleaved: run i of every set before run i+1 of any (machine state drifts).
    let mut exit_ns: Vec<Vec<f64>> = vec![Vec::new(); SETS.len() + 1];
    let mut phases: Vec<BTreeMap<String, Vec<f64>>> = vec![BTreeMap::new(); SETS.len() + 1];
    let mut order: Vec<String> = Vec::new();
    let mut failures = Vec::new();
    for _ in 0..reps {
        for (i, set) in std::iter::once(None).chain(SETS.iter().map(Some)).enumerate() {
            let (b, options) = match set {
                None => (native.as_ref(), BackendOptions::default()),
                Some(s) => (
                    ct,
                    BackendOptions {
                        namespaces: Some(s.split(',').map(str::to_string).collect()),
                        ..Default::default()
                    },
                ),
            };
            let rec = run_once(b, Workload::Noop, &[], &options, Duration::from_secs(60));
            if let Some(e) = rec.error {
                failures.push(format!("{}: {e}", set.copied().unwrap_or(BackendId::Native.name())));
                continue;
            }
            if let Some(ns) = rec.host.launch_to_exit_ns {
                exit_ns[i].push(ns as f64);
            }
            for (name, ns) in rec.host.phases {
                if !order.contains(&name) {
                    order.push(name.clone());
                }
                phases[i].entry(name).or_default().push(ns as f64);
            }
        }
    }
    let mut t = Table::new(
        &format!("noop launch→exit with one namespace more each time (median of {reps}, ms)"),
        &["backend / namespaces", "n", "launch→exit", "MAD", "phases (median ms)"],
    );
    for (i, label) in std::iter::once("native (none)").chain(SETS).enumerate() {
        let s = stats::summarize(&exit_ns[i]);
        let ph: Vec<String> = order
            .iter()
            .filter_map(|n| phases[i].get(n).and_then(|v| stats::median(v)).map(|m| format!("{n} {:.2}", m / 1e6)))
            .collect();
        t.row([
            label.to_string(),
            s.map(|s| s.n.to_string()).unwrap_or_else(|| "0".into()),
            ms(s.map(|s| s.median as u64)),
            ms(s.map(|s| s.mad as u64)),
            ph.join(", "),
        ]);
    }
    r.tables.push(t);
    r.check(
        "every timed run succeeded",
        failures.is_empty(),
        if failures.is_empty() {
            format!("yes ({} runs)", reps * (SETS.len() + 1))
        } else {
            format!("no: {}", failures.join(" | "))
        },
    );
    r.note("one run is noise: compare medians only where they differ by more than the MAD");
    r.note("every container set includes mount and net (the runtime needs both unless privileged with host networking); `clone` is where the kernel creates the namespaces, `cleanup` where the runtime removes what it made");
}
