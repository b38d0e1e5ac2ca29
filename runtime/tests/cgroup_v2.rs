//! cgroup v2 for real. This host runs cgroup v1 with an empty-ish cgroup2 hierarchy at
//! /sys/fs/cgroup/unified whose controllers are bound to v1, so the test exercises what a v2
//! hierarchy offers without controllers and says so: mkdir/rmdir, clone3(CLONE_INTO_CGROUP),
//! cgroup.procs, cgroup.freeze + cgroup.events, and the clear error for a limit needing a
//! missing controller. Limits (memory.max, cpu.max, pids.max) are covered by unit tests
//! against a temp dir only.

mod common;

use common::{root, Env};
use cvbench_runtime::cgroups::{v2::V2, CgroupManager};
use cvbench_runtime::config::{CgroupChoice, Resources};
use cvbench_runtime::container::{Container, Stdio};
use std::path::Path;
use std::time::Duration;

const UNIFIED: &str = "/sys/fs/cgroup/unified";

fn unified_available() -> bool {
    match nix::sys::statfs::statfs(UNIFIED) {
        Ok(s) if s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => true,
        _ => {
            eprintln!("SKIPPED: no cgroup2 mount at {UNIFIED}");
            false
        }
    }
}

#[test]
fn v2_container_uses_clone_into_cgroup_and_freezes() {
    if !root("v2_container_uses_clone_into_cgroup_and_freezes") || !unified_available() {
        return;
    }
    let env = Env::new();
    let img = env.busybox_image();
    let mut cfg = env.config(img, &["/bin/busybox", "sleep", "30"]);
    cfg.cgroup = CgroupChoice::V2(UNIFIED.into());
    cfg.namespaces.remove(&cvbench_runtime::namespaces::Namespace::Cgroup);
    let mut c = Container::create_started(&cfg, Stdio::default()).unwrap();
    assert_eq!(c.cgroup_version(), "v2");
    assert!(c.notes().iter().any(|n| n.contains("CLONE_INTO_CGROUP")));
    let dir = c.state().cgroups[0].clone();
    // The process was born in the cgroup: no attach write happened.
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|l| l.trim() == c.pid().to_string()), "{procs}");
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", c.pid())).unwrap();
    let leaf = dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(own.lines().any(|l| l.starts_with("0::") && l.ends_with(&leaf)), "{own}");
    c.freeze().unwrap();
    let events = std::fs::read_to_string(dir.join("cgroup.events")).unwrap();
    assert!(events.contains("frozen 1"), "{events}");
    c.thaw().unwrap();
    let events = std::fs::read_to_string(dir.join("cgroup.events")).unwrap();
    assert!(events.contains("frozen 0"), "{events}");
    assert!(matches!(c.wait(Some(Duration::from_millis(100))), Err(cvbench_runtime::Error::Timeout(_))));
    c.delete().unwrap();
    assert!(!dir.exists());
    println!(
        "cgroup v2 exercised at {UNIFIED}: mkdir, clone3(CLONE_INTO_CGROUP), cgroup.procs, \
         cgroup.freeze/cgroup.events, rmdir. SKIPPED on this host: memory/cpu/pids limits and \
         stats (those controllers are bound to v1; the v2 root offers only {:?})",
        std::fs::read_to_string(Path::new(UNIFIED).join("cgroup.controllers")).unwrap_or_default().trim()
    );
}

#[test]
fn v2_manager_attach_by_pid_and_missing_controller_error() {
    if !root("v2_manager_attach_by_pid_and_missing_controller_error") || !unified_available() {
        return;
    }
    let own = cvbench_runtime::cgroups::parse_proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").unwrap());
    let name = format!("cvbench-{}-v2test", std::process::id());
    let mut cg = V2::new(Path::new(UNIFIED), &own, &name).unwrap();
    let limits = Resources { pids_max: Some(8), ..Default::default() };
    let err = cg.create(&limits).unwrap_err();
    assert!(err.to_string().contains("`pids` is not available"), "{err}");
    assert!(!cg.dir().exists());

    cg.create(&Resources::default()).unwrap();
    let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
    cg.attach(child.id() as i32).unwrap();
    assert_eq!(cg.procs().unwrap(), vec![child.id() as i32]);
    child.kill().unwrap();
    child.wait().unwrap();
    cg.remove().unwrap();
    assert!(!cg.dir().exists());
    println!("cgroup v2 exercised: cgroup.procs attach by pid, controller-missing error");
}
