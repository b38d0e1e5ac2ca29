//! cgroup v2 for real, on whichever cgroup2 hierarchy the host has: `/sys/fs/cgroup` itself on
//! a pure-v2 host (the test host, most distributions), else the controller-less
//! `/sys/fs/cgroup/unified` of a hybrid host (this development machine), where the tests
//! exercise what a v2 hierarchy offers without controllers and say so: mkdir/rmdir,
//! clone3(CLONE_INTO_CGROUP), cgroup.procs, cgroup.freeze + cgroup.events, and the clear error
//! for a limit needing a missing controller. On pure v2 the limits reach the kernel for real.

mod common;

use common::{root, Env};
use cvbench_runtime::cgroups::{v2::V2, CgroupManager};
use cvbench_runtime::config::{CgroupChoice, Resources};
use cvbench_runtime::container::{Container, Stdio};
use std::path::Path;
use std::time::Duration;

const PURE: &str = "/sys/fs/cgroup";
const HYBRID: &str = "/sys/fs/cgroup/unified";

fn is_cgroup2(p: &str) -> bool {
    matches!(nix::sys::statfs::statfs(p), Ok(s) if s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// The cgroup2 root to test on, or a loud skip (a failure inside the test host).
fn v2_root() -> Option<&'static str> {
    if is_cgroup2(PURE) {
        return Some(PURE);
    }
    if is_cgroup2(HYBRID) {
        return Some(HYBRID);
    }
    cvbench_testkit::skip(cvbench_testkit::Need::CgroupV2, &format!("no cgroup2 mount at {PURE} or {HYBRID}"));
    None
}

fn controllers(root: &str) -> String {
    std::fs::read_to_string(Path::new(root).join("cgroup.controllers")).unwrap_or_default().trim().to_string()
}

#[test]
fn v2_container_uses_clone_into_cgroup_and_freezes() {
    if !root("v2_container_uses_clone_into_cgroup_and_freezes") {
        return;
    }
    let Some(unified) = v2_root() else { return };
    let env = Env::new();
    let img = env.busybox_image();
    let mut cfg = env.config(img, &["/bin/busybox", "sleep", "30"]);
    cfg.cgroup = CgroupChoice::V2(unified.into());
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
        "cgroup v2 exercised at {unified}: mkdir, clone3(CLONE_INTO_CGROUP), cgroup.procs, \
         cgroup.freeze/cgroup.events, rmdir (controllers there: {:?})",
        controllers(unified)
    );
}

#[test]
fn v2_manager_attach_by_pid_and_missing_controller_error() {
    if !root("v2_manager_attach_by_pid_and_missing_controller_error") {
        return;
    }
    let Some(unified) = v2_root() else { return };
    let own = cvbench_runtime::cgroups::parse_proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").unwrap());
    let name = format!("cvbench-{}-v2test", std::process::id());
    let mut cg = V2::new(Path::new(unified), &own, &name).unwrap();
    let limits = Resources { pids_max: Some(8), ..Default::default() };
    if controllers(unified).split_whitespace().any(|c| c == "pids") {
        // Pure v2: the limit reaches the kernel.
        cg.create(&limits).unwrap();
        assert_eq!(std::fs::read_to_string(cg.dir().join("pids.max")).unwrap().trim(), "8");
        cg.remove().unwrap();
    } else {
        let err = cg.create(&limits).unwrap_err();
        assert!(err.to_string().contains("`pids` is not available"), "{err}");
    }
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

#[test]
fn v2_nested_cgroups_path_passes_controllers_down_every_level_it_makes() {
    let test = "v2_nested_cgroups_path_passes_controllers_down_every_level_it_makes";
    if !root(test) {
        return;
    }
    let Some(unified) = v2_root() else { return };
    if !controllers(unified).split_whitespace().any(|c| c == "pids") {
        let reason = format!("{test}: the cgroup2 root {unified} offers no pids controller (hybrid host)");
        cvbench_testkit::skip(cvbench_testkit::Need::CgroupV2, &reason);
        return;
    }
    let own = cvbench_runtime::cgroups::parse_proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").unwrap());
    let top = format!("cvbench-{}-nest", std::process::id());
    let mut cg = V2::new(Path::new(unified), &own, &format!("{top}/a/b")).unwrap();
    let top_dir = cg.dir().parent().unwrap().parent().unwrap().to_path_buf();

    let made = cg.create(&Resources { pids_max: Some(8), ..Default::default() });

    let pids_max = std::fs::read_to_string(cg.dir().join("pids.max"));
    let _ = cg.remove();
    made.unwrap();
    assert_eq!(pids_max.unwrap().trim(), "8");
    assert!(!top_dir.exists(), "the levels it made are removed");
}
