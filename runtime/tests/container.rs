//! Real containers, as root: isolation seen from inside, limits enforced by the kernel,
//! seccomp and capabilities, lifecycle operations.

mod common;

use common::{root, run_capture, Env};
use cvbench_runtime::config::{IdMap, NetMode};
use cvbench_runtime::container::{Container, Stdio};
use cvbench_runtime::namespaces::Namespace;
use std::time::Duration;

fn sh(env: &Env, script: &str) -> cvbench_runtime::ContainerConfig {
    let img = env.busybox_image();
    env.config(img, &["/bin/busybox", "sh", "-c", script])
}

#[test]
fn isolation_is_visible_from_inside() {
    if !root("isolation_is_visible_from_inside") {
        return;
    }
    let env = Env::new();
    let mut cfg =
        sh(&env, "echo pid=$$; hostname; ls /sys/class/net; grep CapEff /proc/self/status; cat /proc/self/uid_map");
    cfg.net = NetMode::Veth;
    let (r, out, err) = run_capture(&cfg);
    let r = r.unwrap();
    assert_eq!(r.exit.code, Some(0), "stdout {out} stderr {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1", "{out}");
    assert_eq!(lines[1], "cvb-test", "{out}");
    // Only lo and the veth end: no host interfaces.
    let mut nets: Vec<&str> = lines[2].split_whitespace().collect();
    if nets.len() == 1 {
        nets = vec![lines[2], lines[3]];
    }
    nets.sort();
    assert_eq!(nets, ["eth0", "lo"], "{out}");
    // Docker's default capability set.
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    println!("inside: {out}");
}

#[test]
fn veth_carries_workload_traffic_to_the_peer_namespace() {
    if !root("veth_carries_workload_traffic_to_the_peer_namespace") {
        return;
    }
    let env = Env::new();
    let img = env.workload_image();
    let mut cfg = env.config(img, &["/cvbench-workload", "net-rr", "--peer", "{peer_ip}:5201", "--requests", "200"]);
    cfg.net = NetMode::Veth;
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let mut c = Container::create(&cfg, Stdio { stdout: Some(out_w), ..Default::default() }).unwrap();
    let (srv_r, srv_w) = nix::unistd::pipe().unwrap();
    let v = c.veth_mut().unwrap();
    let listen = format!("{}:5201", v.peer_ip);
    let mut cmd = std::process::Command::new(common::workload());
    cmd.args(["serve", "--listen", &listen, "--max-conns", "1"]).stdout(std::process::Stdio::from(srv_w));
    v.spawn_in_peer(cmd).unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(std::fs::File::from(srv_r)), &mut line).unwrap();
    assert_eq!(line.trim(), "READY");
    c.start().unwrap();
    let exit = c.wait(Some(Duration::from_secs(60))).unwrap();
    c.delete().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(out_r), &mut out).unwrap();
    assert_eq!(exit.code, Some(0), "{out}");
    assert!(out.contains("\"workload\":\"net-rr\""), "{out}");
}

#[test]
fn memory_limit_is_enforced_by_a_reported_oom_kill() {
    if !root("memory_limit_is_enforced_by_a_reported_oom_kill") {
        return;
    }
    let env = Env::new();
    let img = env.workload_image();
    let mut cfg = env.config(img, &["/cvbench-workload", "mem-touch", "--touch-mib", "128", "--chase-mib", "1"]);
    cfg.resources.memory_bytes = Some(32 << 20);
    let (r, out, _) = run_capture(&cfg);
    let r = r.unwrap();
    assert_eq!(r.exit.signal, Some(libc::SIGKILL), "{r:?} {out}");
    assert!(r.exit.oom_killed, "{r:?}");
    assert!(r.stats.oom_kills >= 1);
    assert!(!out.contains("\"metrics\""), "the workload must not finish: {out}");
}

#[test]
fn pids_limit_is_enforced() {
    if !root("pids_limit_is_enforced") {
        return;
    }
    let env = Env::new();
    let mut cfg = sh(&env, "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait; echo done");
    cfg.resources.pids_max = Some(4);
    let (r, _out, err) = run_capture(&cfg);
    r.unwrap();
    assert!(err.contains("Resource temporarily unavailable"), "{err}");
}

#[test]
fn seccomp_denied_syscall_fails_with_eperm() {
    if !root("seccomp_denied_syscall_fails_with_eperm") {
        return;
    }
    let env = Env::new();
    // unshare(CLONE_NEWUSER) needs no capability, so only seccomp can refuse it.
    let cfg = sh(&env, "unshare -U true && echo allowed");
    let (r, out, err) = run_capture(&cfg);
    assert_ne!(r.unwrap().exit.code, Some(0));
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(!out.contains("allowed"));

    let mut open = sh(&env, "unshare -U true && echo allowed");
    open.seccomp_unconfined = true;
    let (r, out, err) = run_capture(&open);
    assert_eq!(r.unwrap().exit.code, Some(0), "{err}");
    assert!(out.contains("allowed"), "unconfined should allow it: {out} {err}");
}

#[test]
fn masked_and_readonly_paths_hold() {
    if !root("masked_and_readonly_paths_hold") {
        return;
    }
    let env = Env::new();
    let cfg =
        sh(&env, "cat /proc/kcore | wc -c; echo 1 > /proc/sys/vm/drop_caches || echo ro-ok; ls /sys/firmware | wc -l");
    let (r, out, err) = run_capture(&cfg);
    r.unwrap();
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines, ["0", "ro-ok", "0"], "{out} {err}");
}

#[test]
fn privileged_keeps_every_capability() {
    if !root("privileged_keeps_every_capability") {
        return;
    }
    let env = Env::new();
    let mut cfg = sh(&env, "grep CapEff /proc/self/status");
    cfg.privileged = true;
    let (r, out, _) = run_capture(&cfg);
    r.unwrap();
    // Everything the host process itself has (this sandbox may lack a few).
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    let host_eff = host.lines().find(|l| l.starts_with("CapEff")).unwrap();
    assert!(out.contains(host_eff), "{out} vs host {host_eff}");
}

#[test]
fn user_namespace_maps_container_root() {
    if !root("user_namespace_maps_container_root") {
        return;
    }
    let env = Env::new();
    let mut cfg = sh(&env, "cat /proc/self/uid_map; id -u");
    cfg.namespaces.insert(Namespace::User);
    let map = IdMap { container_id: 0, host_id: 200_000, size: 65_536 };
    cfg.uid_map = vec![map];
    cfg.gid_map = vec![map];
    let (r, out, err) = run_capture(&cfg);
    let r = r.unwrap();
    assert_eq!(r.exit.code, Some(0), "{err}");
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words, ["0", "200000", "65536", "0"], "{out}");
    // It ran inside its cgroups (it attached itself before entering the user namespace).
    assert!(r.stats.cpu_usage_ns.unwrap_or(0) > 0, "{:?}", r.stats);
    assert!(r.stats.memory_peak_bytes.unwrap_or(0) > 0, "{:?}", r.stats);
}

#[test]
fn cgroup_namespace_hides_host_paths() {
    if !root("cgroup_namespace_hides_host_paths") {
        return;
    }
    let env = Env::new();
    let cfg = sh(&env, "cat /proc/self/cgroup");
    let (r, out, _) = run_capture(&cfg);
    r.unwrap();
    // v1: one line per hierarchy (`N:memory:/…`); pure v2: the single `0::/…` line. Either way
    // the container's own cgroup is its namespace root: no host path shows through.
    let line = if pure_v2() {
        out.lines().find(|l| l.starts_with("0::")).unwrap_or_else(|| panic!("no 0:: line in {out}"))
    } else {
        out.lines().find(|l| l.contains(":memory:")).unwrap_or_else(|| panic!("no memory line in {out}"))
    };
    assert!(line.ends_with(":/"), "{out}");
}

#[test]
fn freeze_thaw_stats_and_timeout_kill() {
    if !root("freeze_thaw_stats_and_timeout_kill") {
        return;
    }
    let env = Env::new();
    let cfg = sh(&env, "sleep 30");
    let mut c = Container::create_started(&cfg, Stdio::default()).unwrap();
    c.freeze().unwrap();
    c.thaw().unwrap();
    let st = c.stats().unwrap();
    assert!(st.memory_usage_bytes.unwrap() > 0, "{st:?}");
    assert!(st.cpu_usage_ns.unwrap() > 0, "{st:?}");
    assert!(matches!(c.wait(Some(Duration::from_millis(200))), Err(cvbench_runtime::Error::Timeout(_))));
    let dir = c.state().run_dir.clone();
    c.delete().unwrap();
    assert!(!dir.exists());
    let names: Vec<&str> = c.phases().iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"clone") && names.contains(&"cleanup"), "{names:?}");
}

#[test]
fn noop_workload_reports_phases() {
    if !root("noop_workload_reports_phases") {
        return;
    }
    let env = Env::new();
    let img = env.workload_image();
    let cfg = env.config(img, &["/cvbench-workload", "noop"]);
    let (r, out, _) = run_capture(&cfg);
    let r = r.unwrap();
    assert_eq!(r.exit.code, Some(0));
    assert!(out.starts_with("READY\n"), "{out}");
    assert!(r.stats.cpu_usage_ns.unwrap_or(0) > 0, "{:?}", r.stats);
    let names: Vec<&str> = r.phases.iter().map(|(n, _)| n.as_str()).collect();
    for want in ["prepare", "cgroup_create", "clone", "child_setup", "exec", "run", "cleanup"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for (n, ns) in &r.phases {
        println!("phase {n:<14} {:>8.3} ms", *ns as f64 / 1e6);
    }
}

#[test]
fn cpu_cpuset_memory_and_swap_limits_reach_the_kernel() {
    if !root("cpu_cpuset_memory_and_swap_limits_reach_the_kernel") {
        return;
    }
    let env = Env::new();
    let mut cfg = sh(&env, "grep Cpus_allowed_list /proc/self/status; sleep 30");
    cfg.resources.cpu_quota_us = Some(20_000);
    cfg.resources.cpu_period_us = Some(100_000);
    cfg.resources.cpu_shares = Some(512);
    cfg.resources.cpuset_cpus = Some("0".into());
    cfg.resources.memory_bytes = Some(64 << 20);
    cfg.resources.memory_swap_bytes = Some(96 << 20);
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let mut c = Container::create_started(&cfg, Stdio { stdout: Some(out_w), ..Default::default() }).unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(std::fs::File::from(out_r)), &mut line).unwrap();
    assert_eq!(line.split_whitespace().last(), Some("0"), "{line}");
    let dirs = c.state().cgroups.clone();
    if pure_v2() {
        // One directory holds every controller's files on v2.
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        let read = |file: &str| std::fs::read_to_string(dirs[0].join(file)).unwrap().trim().to_string();
        assert_eq!(read("cpu.max"), "20000 100000");
        let weight = cvbench_runtime::cgroups::v2::shares_to_weight(512);
        assert_eq!(read("cpu.weight"), weight.to_string());
        assert_eq!(read("cpuset.cpus"), "0");
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        // v2 limits swap on its own: memsw (96 MiB) minus memory (64 MiB).
        if dirs[0].join("memory.swap.max").exists() {
            assert_eq!(read("memory.swap.max"), (32u64 << 20).to_string());
        }
        c.delete().unwrap();
        assert!(!dirs[0].exists(), "{} left behind", dirs[0].display());
        return;
    }
    let read = |ctrl: &str, file: &str| {
        let d = dirs
            .iter()
            .find(|d| d.to_string_lossy().contains(&format!("/{ctrl}/")))
            .unwrap_or_else(|| panic!("no {ctrl} cgroup in {dirs:?}"));
        std::fs::read_to_string(d.join(file)).unwrap().trim().to_string()
    };
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "20000");
    assert_eq!(read("cpu", "cpu.shares"), "512");
    assert_eq!(read("cpuset", "cpuset.cpus"), "0");
    assert_eq!(read("memory", "memory.limit_in_bytes"), (64u64 << 20).to_string());
    assert_eq!(read("memory", "memory.memsw.limit_in_bytes"), (96u64 << 20).to_string());
    c.delete().unwrap();
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

/// `/sys/fs/cgroup` is a cgroup2 mount (the test host; most current distributions).
fn pure_v2() -> bool {
    matches!(
        cvbench_runtime::cgroups::probe(std::path::Path::new("/sys/fs/cgroup")),
        cvbench_runtime::config::CgroupChoice::V2(_)
    )
}
