//! 100 consecutive runs leak nothing: mounts, cgroups, links, network namespaces and state
//! dirs are counted before and after. Every tenth run uses `--net veth` (peer namespace,
//! veth pair, subnet claim), the rest the default loopback mode.

mod common;

use common::{counts, root, run_capture, Env};
use cvbench_runtime::config::NetMode;

#[test]
fn hundred_consecutive_runs_leak_nothing() {
    if !root("hundred_consecutive_runs_leak_nothing") {
        return;
    }
    let _serial = common::serial();
    let env = Env::new();
    let img = env.workload_image();
    let before = counts(env.run_root.path());
    for i in 0..100 {
        let mut cfg = env.config(img, &["/cvbench-workload", "noop"]);
        if i % 10 == 0 {
            cfg.net = NetMode::Veth;
        }
        if i % 7 == 0 {
            cfg.resources.memory_bytes = Some(64 << 20);
            cfg.resources.pids_max = Some(16);
            cfg.resources.cpu_quota_us = Some(50_000);
        }
        let (r, out, err) = run_capture(&cfg);
        let r = r.unwrap_or_else(|e| panic!("run {i}: {e} ({err})"));
        assert_eq!(r.exit.code, Some(0), "run {i}: {out} {err}");
    }
    let after = counts(env.run_root.path());
    println!("before {before:?}\nafter  {after:?}");
    assert_eq!(after, before);
    let slots = std::fs::read_dir(env.run_root.path().join("net")).map(|r| r.count()).unwrap_or(0);
    assert_eq!(slots, 0, "subnet claims left behind");
}

#[test]
fn gc_removes_leftovers_of_a_crashed_run() {
    if !root("gc_removes_leftovers_of_a_crashed_run") {
        return;
    }
    let _serial = common::serial();
    let env = Env::new();
    let img = env.workload_image();
    let before = counts(env.run_root.path());
    // A child process creates a veth container and dies without cleaning up.
    let state = env.state.path().to_path_buf();
    let run_root = env.run_root.path().to_path_buf();
    // SAFETY: the forked child only runs runtime code and then _exit()s; this test binary
    // runs no other threads at this point that the child depends on.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let mut cfg = env.config(img, &["/cvbench-workload", "idle"]);
            cfg.state_dir = state;
            cfg.run_root = run_root;
            cfg.net = NetMode::Veth;
            let code = match cvbench_runtime::Container::create_started(&cfg, Default::default()) {
                Ok(c) => {
                    std::mem::forget(c);
                    0
                }
                Err(_) => 1,
            };
            // SAFETY: leave without running destructors: a crash.
            unsafe { libc::_exit(code) };
        }
        nix::unistd::ForkResult::Parent { child } => {
            let st = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
        }
    }
    let leaked = counts(env.run_root.path());
    assert_ne!(leaked, before, "the crashed run should have left things behind");
    let removed = cvbench_runtime::cleanup::gc(env.state.path(), env.run_root.path());
    println!("gc removed: {removed:#?}");
    assert!(removed.iter().any(|r| r.starts_with("cgroup")), "{removed:?}");
    assert!(removed.iter().any(|r| r.starts_with("netns")), "{removed:?}");
    // The orphaned container (idle, stdin at EOF) may take a moment to be reaped by init.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(counts(env.run_root.path()), before);
}
