//! The `cvbench-runtime` binary driven like runc: create/state/start/state/kill/delete on a
//! bundle, and `run` returning the container's exit status.

mod common;

use common::root;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_cvbench-runtime");

fn bundle(dir: &Path, args: &[&str]) {
    let rootfs = dir.join("rootfs/bin");
    fs::create_dir_all(&rootfs).unwrap();
    fs::copy("/bin/busybox", rootfs.join("busybox")).unwrap();
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": args,
                    "env": ["PATH=/bin"], "cwd": "/"},
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "oci-test",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"},
                                 {"type": "ipc"}, {"type": "network"}],
                  "resources": {"pids": {"limit": 32}}}
    });
    fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
}

fn rt(run_root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN).arg("--run-root").arg(run_root).args(args).stdin(Stdio::null()).output().unwrap()
}

fn status(run_root: &Path, id: &str) -> String {
    let out = rt(run_root, &["state", id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["status"].as_str().unwrap().to_string()
}

#[test]
fn oci_verbs_drive_a_bundle_like_runc() {
    if !root("oci_verbs_drive_a_bundle_like_runc") {
        return;
    }
    let b = tempfile::tempdir().unwrap();
    let run_root = tempfile::Builder::new().prefix("cvbench-test-oci-").tempdir_in(common::run_parent()).unwrap();
    bundle(b.path(), &["/bin/busybox", "sleep", "30"]);
    let id = format!("oci-{}", std::process::id());
    // The container keeps `create`'s stdio (as with runc): give it files, not pipes a
    // waiting reader would hang on.
    let errlog = b.path().join("create.err");
    let create = Command::new(BIN)
        .arg("--run-root")
        .arg(run_root.path())
        .args(["create", &id, "--bundle"])
        .arg(b.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&errlog).unwrap())
        .status()
        .unwrap();
    assert!(create.success(), "{}", fs::read_to_string(&errlog).unwrap());
    assert_eq!(status(run_root.path(), &id), "created");
    let start = rt(run_root.path(), &["start", &id]);
    assert!(start.status.success(), "{}", String::from_utf8_lossy(&start.stderr));
    assert_eq!(status(run_root.path(), &id), "running");
    let del = rt(run_root.path(), &["delete", &id]);
    assert!(!del.status.success(), "deleting a running container needs --force");
    assert!(rt(run_root.path(), &["kill", &id, "KILL"]).status.success());
    for _ in 0..100 {
        if status(run_root.path(), &id) == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(status(run_root.path(), &id), "stopped");
    let del = rt(run_root.path(), &["delete", &id]);
    assert!(del.status.success(), "{}", String::from_utf8_lossy(&del.stderr));
    assert!(!rt(run_root.path(), &["state", &id]).status.success());
    let leftovers: Vec<_> = fs::read_dir(run_root.path().join("containers")).unwrap().collect();
    assert!(leftovers.is_empty());
    let cg = common::counts(run_root.path()).cgroups;
    assert_eq!(cg, 0, "cgroups left");
}

#[test]
fn oci_run_returns_the_exit_status() {
    if !root("oci_run_returns_the_exit_status") {
        return;
    }
    let b = tempfile::tempdir().unwrap();
    let run_root = tempfile::Builder::new().prefix("cvbench-test-oci-").tempdir_in(common::run_parent()).unwrap();
    bundle(b.path(), &["/bin/busybox", "sh", "-c", "hostname; exit 3"]);
    let out = Command::new(BIN)
        .arg("--run-root")
        .arg(run_root.path())
        .args(["run", "oci-run", "--bundle"])
        .arg(b.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "oci-test");
}

#[test]
fn oci_unsupported_field_is_a_clear_error() {
    if !root("oci_unsupported_field_is_a_clear_error") {
        return;
    }
    let b = tempfile::tempdir().unwrap();
    let run_root = tempfile::Builder::new().prefix("cvbench-test-oci-").tempdir_in(common::run_parent()).unwrap();
    bundle(b.path(), &["/bin/busybox", "true"]);
    let mut spec: serde_json::Value = serde_json::from_slice(&fs::read(b.path().join("config.json")).unwrap()).unwrap();
    spec["process"]["ioPriority"] = serde_json::json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0});
    fs::write(b.path().join("config.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    let out = Command::new(BIN)
        .arg("--run-root")
        .arg(run_root.path())
        .args(["run", "oci-bad", "--bundle"])
        .arg(b.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported field `process.ioPriority`"), "{err}");
}
