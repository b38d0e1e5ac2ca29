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

/// `create ID --bundle BUNDLE`: its status and what it printed on stderr. The container's init
/// keeps stdout and stderr open after create returns, so they go to a file, not a pipe.
fn create(run_root: &Path, id: &str, bundle: &Path) -> (std::process::ExitStatus, String) {
    let err_path = bundle.join("create.err");
    let status = Command::new(BIN)
        .arg("--run-root")
        .arg(run_root)
        .args(["create", id, "--bundle"])
        .arg(bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_path).unwrap())
        .status()
        .unwrap();
    (status, fs::read_to_string(&err_path).unwrap_or_default())
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

    let (created, create_err) = create(run_root, &guard.id, b.path());
    assert!(created.success(), "{create_err}");
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

/// A busybox bundle running `args` with `linux` merged over pid+mount namespaces.
fn bundle_with(dir: &Path, args: &[&str], linux: serde_json::Value) {
    fs::create_dir_all(dir.join("rootfs/bin")).unwrap();
    fs::copy("/bin/busybox", dir.join("rootfs/bin/busybox")).unwrap();
    let mut l = serde_json::json!({"namespaces": [{"type": "pid"}, {"type": "mount"}]});
    for (k, v) in linux.as_object().unwrap() {
        l[k] = v.clone();
    }
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 0, "gid": 0}, "args": args, "cwd": "/"},
        "root": {"path": "rootfs", "readonly": true},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": l
    });
    fs::write(dir.join("config.json"), spec.to_string()).unwrap();
}

/// True on a host with v1 hierarchies; otherwise a loud skip.
fn v1_host(test: &str) -> bool {
    if Path::new(V1).join("memory/memory.limit_in_bytes").is_file() {
        return true;
    }
    cvbench_testkit::skip(cvbench_testkit::Need::Other, &format!("{test} needs cgroup v1 hierarchies"));
    false
}

/// `major:minor` of the first block device the host lists.
fn a_block_device() -> Option<String> {
    let mut devs: Vec<String> = fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("dev")).ok())
        .map(|s| s.trim().to_string())
        .collect();
    devs.sort();
    devs.into_iter().next()
}

#[test]
fn block_io_throttle_reaches_the_v1_blkio_cgroup() {
    let test = "block_io_throttle_reaches_the_v1_blkio_cgroup";
    if !root(test) || !v1_host(test) {
        return;
    }
    let Some(dev) = a_block_device().filter(|_| Path::new(V1).join("blkio/blkio.throttle.read_bps_device").exists())
    else {
        cvbench_testkit::skip(
            cvbench_testkit::Need::Other,
            &format!("{test} needs blkio throttling and a block device"),
        );
        return;
    };
    let (major, minor) = dev.split_once(':').unwrap();
    let b = tempfile::tempdir().unwrap();
    let top = format!("cvbench-{}-blkio", std::process::id());
    bundle_with(
        b.path(),
        &["/bin/busybox", "sleep", "30"],
        serde_json::json!({"cgroupsPath": format!("/{top}/a/b"), "resources": {"blockIO": {
            "weight": 0,
            "throttleReadBpsDevice": [{"major": major.parse::<i64>().unwrap(), "minor": minor.parse::<i64>().unwrap(), "rate": 1048576}],
            "throttleWriteIOPSDevice": [{"major": major.parse::<i64>().unwrap(), "minor": minor.parse::<i64>().unwrap(), "rate": 100}]
        }}}),
    );
    let guard = Cleanup {
        run_root: tempfile::Builder::new().prefix("cvbench-test-cgv1-").tempdir_in(common::run_parent()).unwrap(),
        id: format!("cgv1-blkio-{}", std::process::id()),
        top: top.clone(),
    };
    let run_root = guard.run_root.path();

    let (created, create_err) = create(run_root, &guard.id, b.path());
    let leaf = Path::new(V1).join("blkio").join(&top).join("a/b");
    let read_bps = fs::read_to_string(leaf.join("blkio.throttle.read_bps_device")).unwrap_or_default();
    let write_iops = fs::read_to_string(leaf.join("blkio.throttle.write_iops_device")).unwrap_or_default();
    let deleted = rt(run_root, &["delete", "--force", &guard.id]);

    assert!(created.success(), "{create_err}");
    assert_eq!(read_bps.trim(), format!("{dev} 1048576"));
    assert_eq!(write_iops.trim(), format!("{dev} 100"));
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    assert_eq!(levels_left(&top), Vec::<PathBuf>::new());
}

/// `run` of a bundle asking for a v1 controller's limit: honoured where the hierarchy is
/// mounted (the file shows the value), else refused naming the field, leaving nothing.
fn v1_controller_field(test: &str, ctrl: &str, resources: serde_json::Value, field: &str, file: &str, want: &str) {
    if !root(test) || !v1_host(test) {
        return;
    }
    let b = tempfile::tempdir().unwrap();
    // Named after the file, so two tests of one controller do not share a cgroup or an id.
    let tag = file.replace('.', "_");
    let top = format!("cvbench-{}-{tag}", std::process::id());
    let show = format!("/bin/busybox cat /sys/fs/cgroup/{ctrl}/{top}/{file}");
    // The container reads its own limit through a bind of the host's cgroupfs.
    bundle_with(
        b.path(),
        &["/bin/busybox", "sh", "-c", &show],
        serde_json::json!({"cgroupsPath": format!("/{top}"), "resources": resources}),
    );
    let cfg = b.path().join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&fs::read(&cfg).unwrap()).unwrap();
    spec["mounts"].as_array_mut().unwrap().push(serde_json::json!(
        {"destination": "/sys/fs/cgroup", "type": "bind", "source": "/sys/fs/cgroup", "options": ["rbind", "ro"]}));
    fs::write(&cfg, spec.to_string()).unwrap();
    let guard = Cleanup {
        run_root: tempfile::Builder::new().prefix("cvbench-test-cgv1-").tempdir_in(common::run_parent()).unwrap(),
        id: format!("cgv1-{tag}-{}", std::process::id()),
        top: top.clone(),
    };
    let before = common::counts(guard.run_root.path());

    let out = rt(guard.run_root.path(), &["run", &guard.id, "--bundle", b.path().to_str().unwrap()]);

    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if Path::new(V1).join(ctrl).is_dir() {
        assert!(out.status.success(), "{stdout}{stderr}");
        assert_eq!(stdout.trim(), want);
    } else {
        eprintln!("{test}: no v1 `{ctrl}` hierarchy here: checking the refusal");
        assert!(!out.status.success(), "{stdout}{stderr}");
        assert!(stderr.contains(&format!("`{field}` needs the v1 `{ctrl}` controller")), "{stderr}");
    }
    assert_eq!(levels_left(&top), Vec::<PathBuf>::new());
    assert_eq!(common::counts(guard.run_root.path()), before);
}

#[test]
fn hugepage_limits_reach_hugetlb_or_name_the_field() {
    v1_controller_field(
        "hugepage_limits_reach_hugetlb_or_name_the_field",
        "hugetlb",
        serde_json::json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]}),
        "linux.resources.hugepageLimits",
        "hugetlb.2MB.limit_in_bytes",
        "4194304",
    );
}

#[test]
fn network_class_id_reaches_net_cls_or_names_the_field() {
    v1_controller_field(
        "network_class_id_reaches_net_cls_or_names_the_field",
        "net_cls",
        serde_json::json!({"network": {"classID": 1048577}}),
        "linux.resources.network.classID",
        "net_cls.classid",
        "1048577",
    );
}

/// One test for both memory settings: the leak count is per process, so two tests' cgroups
/// of one run would see each other.
#[test]
fn memory_swappiness_and_soft_limit_reach_the_v1_memory_cgroup() {
    let test = "memory_swappiness_and_soft_limit_reach_the_v1_memory_cgroup";
    let swappiness = serde_json::json!({"memory": {"swappiness": 17}});
    v1_controller_field(test, "memory", swappiness, "linux.resources.memory.swappiness", "memory.swappiness", "17");
    let reservation = serde_json::json!({"memory": {"reservation": 33554432}});
    let (field, file) = ("linux.resources.memory.reservation", "memory.soft_limit_in_bytes");
    v1_controller_field(test, "memory", reservation, field, file, "33554432");
}
