//! cgroup v1 for real, on a host with v1 controller hierarchies (this development machine is
//! hybrid): a bundle whose cgroupsPath names levels that do not exist yet gets each level made,
//! the cpuset ones given their parent's cpus and mems so the container's own `cpuset.cpus`
//! can be written, and `delete` removes every level it made.

mod common;

use common::root;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_cvbench-runtime");
const V1: &str = "/sys/fs/cgroup";

fn rt(run_root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN).arg("--run-root").arg(run_root).args(args).stdin(Stdio::null()).output().unwrap()
}

/// Removes the container and every level under `top` in each v1 hierarchy, also when the test
/// fails halfway.
struct Cleanup {
    run_root: tempfile::TempDir,
    id: String,
    top: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = rt(self.run_root.path(), &["delete", "--force", &self.id]);
        for h in fs::read_dir(V1).into_iter().flatten().flatten() {
            let top = h.path().join(&self.top);
            for level in ["a/b", "a", ""] {
                let _ = fs::remove_dir(top.join(level));
            }
        }
    }
}

fn levels_left(top: &str) -> Vec<PathBuf> {
    fs::read_dir(V1).unwrap().flatten().map(|h| h.path().join(top)).filter(|p| p.exists()).collect()
}

#[test]
fn nested_cgroups_path_gets_inherited_cpusets_and_every_level_removed() {
    let test = "nested_cgroups_path_gets_inherited_cpusets_and_every_level_removed";
    if !root(test) {
        return;
    }
    let cpuset = Path::new(V1).join("cpuset");
    if !cpuset.join("cpuset.cpus").is_file() {
        cvbench_testkit::skip(cvbench_testkit::Need::Other, &format!("{test} needs a cgroup v1 cpuset hierarchy"));
        return;
    }
    let b = tempfile::tempdir().unwrap();
    fs::create_dir_all(b.path().join("rootfs/bin")).unwrap();
    fs::copy("/bin/busybox", b.path().join("rootfs/bin/busybox")).unwrap();
    let top = format!("cvbench-{}-nest", std::process::id());
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["/bin/busybox", "sleep", "30"], "cwd": "/"},
        "root": {"path": "rootfs", "readonly": true},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}],
                  "cgroupsPath": format!("/{top}/a/b"),
                  "resources": {"cpu": {"cpus": "0"}}}
    });
    fs::write(b.path().join("config.json"), spec.to_string()).unwrap();
    let guard = Cleanup {
        run_root: tempfile::Builder::new().prefix("cvbench-test-cgv1-").tempdir_in(common::run_parent()).unwrap(),
        id: format!("cgv1-{}", std::process::id()),
        top: top.clone(),
    };
    let run_root = guard.run_root.path();
    assert!(levels_left(&top).is_empty(), "fresh path");

    let err = fs::File::create(b.path().join("create.err")).unwrap();
    let created = Command::new(BIN)
        .arg("--run-root")
        .arg(run_root)
        .args(["create", &guard.id, "--bundle"])
        .arg(b.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .status()
        .unwrap();
    assert!(created.success(), "{}", fs::read_to_string(b.path().join("create.err")).unwrap());
    let start = rt(run_root, &["start", &guard.id]);
    let leaf = cpuset.join(&top).join("a/b");
    let leaf_cpus = fs::read_to_string(leaf.join("cpuset.cpus")).unwrap_or_default();
    let mid_mems = fs::read_to_string(cpuset.join(&top).join("a/cpuset.mems")).unwrap_or_default();
    let state: serde_json::Value = serde_json::from_slice(&rt(run_root, &["state", &guard.id]).stdout).unwrap();
    let pid = state["pid"].as_i64().unwrap_or(0);
    let allowed = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    let in_leaf = fs::read_to_string(leaf.join("cgroup.procs")).unwrap_or_default();
    assert!(rt(run_root, &["kill", &guard.id, "KILL"]).status.success());
    let mut deleted = rt(run_root, &["delete", &guard.id]);
    for _ in 0..100 {
        if deleted.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        deleted = rt(run_root, &["delete", &guard.id]);
    }

    assert!(start.status.success(), "{}", String::from_utf8_lossy(&start.stderr));
    assert_eq!(leaf_cpus.trim(), "0");
    assert_eq!(mid_mems.trim(), fs::read_to_string(cpuset.join("cpuset.mems")).unwrap().trim(), "inherited");
    assert_eq!(allowed, "0");
    assert!(in_leaf.lines().any(|l| l.trim() == pid.to_string()), "{in_leaf}");
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    assert_eq!(levels_left(&top), Vec::<PathBuf>::new(), "every level made is removed");
}

#[test]
fn cgroups_path_climbing_out_of_the_hierarchy_is_refused() {
    if !root("cgroups_path_climbing_out_of_the_hierarchy_is_refused") {
        return;
    }
    let b = tempfile::tempdir().unwrap();
    fs::create_dir_all(b.path().join("rootfs/bin")).unwrap();
    fs::copy("/bin/busybox", b.path().join("rootfs/bin/busybox")).unwrap();
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["/bin/busybox", "true"], "cwd": "/"},
        "root": {"path": "rootfs"},
        "linux": {"namespaces": [{"type": "mount"}], "cgroupsPath": "/../../../tmp/cvbench-escape"}
    });
    fs::write(b.path().join("config.json"), spec.to_string()).unwrap();
    let run_root = tempfile::Builder::new().prefix("cvbench-test-cgv1-").tempdir_in(common::run_parent()).unwrap();

    let out = rt(run_root.path(), &["run", "cgv1-escape", "--bundle", b.path().to_str().unwrap()]);

    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cgroup path"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!Path::new("/tmp/cvbench-escape").exists());
}
