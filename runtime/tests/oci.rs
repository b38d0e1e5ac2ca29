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

/// Change the bundle's config.json in place.
fn edit_spec(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    f(&mut spec);
    fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
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
    create(run_root.path(), b.path(), &id);
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
    edit_spec(b.path(), |spec| {
        spec["process"]["ioPriority"] = serde_json::json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0});
    });
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

/// `create` with `--bundle`; panics with create's stderr on failure. The container keeps
/// `create`'s stdio (as with runc): it gets files, not pipes a waiting reader would hang on.
fn create(run_root: &Path, bundle: &Path, id: &str) {
    let errlog = bundle.join("create.err");
    let ok = Command::new(BIN)
        .arg("--run-root")
        .arg(run_root)
        .args(["create", id, "--bundle"])
        .arg(bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&errlog).unwrap())
        .status()
        .unwrap();
    assert!(ok.success(), "{}", fs::read_to_string(&errlog).unwrap());
}

fn state_pid(run_root: &Path, id: &str) -> i32 {
    let out = rt(run_root, &["state", id]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["pid"].as_i64().unwrap() as i32
}

/// `start` under a deadline: Some(output), or None if it was still running after `secs`.
fn start_within(run_root: &Path, id: &str, secs: u64) -> Option<std::process::Output> {
    let mut child = Command::new(BIN)
        .arg("--run-root")
        .arg(run_root)
        .args(["start", id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn force_delete(run_root: &Path, id: &str) {
    let del = rt(run_root, &["delete", "--force", id]);
    assert!(del.status.success(), "{}", String::from_utf8_lossy(&del.stderr));
    assert_eq!(common::counts(run_root).cgroups, 0, "cgroups left");
}

#[test]
fn start_of_a_container_whose_process_died_fails_instead_of_waiting() {
    if !root("start_of_a_container_whose_process_died_fails_instead_of_waiting") {
        return;
    }
    let b = tempfile::tempdir().unwrap();
    let run_root = tempfile::Builder::new().prefix("cvbench-test-oci-").tempdir_in(common::run_parent()).unwrap();
    bundle(b.path(), &["/bin/busybox", "true"]);
    let id = format!("oci-dead-{}", std::process::id());
    create(run_root.path(), b.path(), &id);
    let pid = state_pid(run_root.path(), &id);
    // The container process this test created (its pid from `state`).
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let out = start_within(run_root.path(), &id, 20).expect("start waited for a process that is gone");
    assert!(!out.status.success(), "start of a dead container succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not in the created state"), "{err}");
    force_delete(run_root.path(), &id);
}

#[test]
fn a_user_namespace_root_mapped_to_another_host_user_passes_the_start_gate() {
    if !root("a_user_namespace_root_mapped_to_another_host_user_passes_the_start_gate") {
        return;
    }
    let b = tempfile::tempdir().unwrap();
    let run_root = tempfile::Builder::new().prefix("cvbench-test-oci-").tempdir_in(common::run_parent()).unwrap();
    // The mapped root (host uid 1000) must be able to reach its FIFO in the state directory.
    fs::set_permissions(run_root.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    bundle(b.path(), &["/bin/busybox", "sleep", "30"]);
    // Mount points exist in the image: the mapped root may not create them in a root-owned tree.
    for d in ["proc", "dev", "tmp", "sys"] {
        fs::create_dir(b.path().join("rootfs").join(d)).unwrap();
    }
    edit_spec(b.path(), |spec| {
        spec["linux"]["namespaces"].as_array_mut().unwrap().push(serde_json::json!({"type": "user"}));
        // As in `runc spec`: /dev is a tmpfs the container's root owns.
        spec["mounts"].as_array_mut().unwrap().push(serde_json::json!(
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}));
        spec["linux"]["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 2000}]);
        spec["linux"]["gidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 3000, "size": 2000}]);
    });
    let id = format!("oci-userns-{}", std::process::id());
    create(run_root.path(), b.path(), &id);
    let fifo = run_root.path().join("containers").join(&id).join("exec.fifo");
    let meta = fs::metadata(&fifo).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (1000, 3000, 0o600),
        "the FIFO belongs to the mapped root only"
    );
    let out = start_within(run_root.path(), &id, 20).expect("start hung");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(status(run_root.path(), &id), "running");
    let pid = state_pid(run_root.path(), &id);
    let st = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = st.lines().find(|l| l.starts_with("Uid:")).unwrap().to_string();
    assert_eq!(uid_line.split_whitespace().nth(1), Some("1000"), "{uid_line}");
    force_delete(run_root.path(), &id);
}

/// `run` of the bundle in `b`; (success, stdout, stderr).
fn run_bundle(run_root: &Path, b: &Path, id: &str) -> (bool, String, String) {
    let out = rt(run_root, &["run", id, "--bundle", b.to_str().unwrap()]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tmpcopyup_tmpfs_shows_the_image_content_and_keeps_writes_off_the_rootfs() {
    if !root("tmpcopyup_tmpfs_shows_the_image_content_and_keeps_writes_off_the_rootfs") {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let b = tempfile::tempdir().unwrap();
    let run_root = tempfile::Builder::new().prefix("cvbench-test-oci-").tempdir_in(common::run_parent()).unwrap();
    let script = "cd /data && /bin/busybox cat a sub/b && /bin/busybox readlink link \
                  && /bin/busybox stat -c '%a %u %g' a sub && echo new > new && echo changed > a \
                  && /bin/busybox cat a && /bin/busybox grep -w /data /proc/mounts";
    bundle(b.path(), &["/bin/busybox", "sh", "-c", script]);
    let data = b.path().join("rootfs/data");
    fs::create_dir_all(data.join("sub")).unwrap();
    fs::write(data.join("a"), "alpha\n").unwrap();
    fs::set_permissions(data.join("a"), fs::Permissions::from_mode(0o640)).unwrap();
    // The bundle's root has no capabilities: it reads and writes `a` as its owner.
    std::os::unix::fs::chown(data.join("a"), Some(0), Some(5678)).unwrap();
    fs::write(data.join("sub/b"), "beta\n").unwrap();
    fs::set_permissions(data.join("sub"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(data.join("sub"), Some(1234), Some(0)).unwrap();
    std::os::unix::fs::symlink("sub/b", data.join("link")).unwrap();
    edit_spec(b.path(), |spec| {
        spec["mounts"].as_array_mut().unwrap().push(serde_json::json!(
            {"destination": "/data", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "noexec", "tmpcopyup", "mode=755"]}));
    });
    let before = common::counts(run_root.path());

    let (ok, out, err) = run_bundle(run_root.path(), b.path(), "oci-copyup");

    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..6], ["alpha", "beta", "sub/b", "640 0 5678", "755 1234 0", "changed"], "{out}");
    assert!(lines[6].starts_with("tmpfs /data tmpfs"), "{out}");
    assert_eq!(fs::read_to_string(data.join("a")).unwrap(), "alpha\n", "a write reached the rootfs");
    assert!(!data.join("new").exists(), "a new file reached the rootfs");
    assert_eq!(fs::metadata(data.join("a")).unwrap().gid(), 5678);
    assert_eq!(common::counts(run_root.path()), before);
}

#[test]
fn unsupported_mount_extension_is_refused_by_name_and_destination() {
    if !root("unsupported_mount_extension_is_refused_by_name_and_destination") {
        return;
    }
    let b = tempfile::tempdir().unwrap();
    let run_root = tempfile::Builder::new().prefix("cvbench-test-oci-").tempdir_in(common::run_parent()).unwrap();
    bundle(b.path(), &["/bin/busybox", "true"]);
    edit_spec(b.path(), |spec| {
        spec["mounts"].as_array_mut().unwrap().push(serde_json::json!(
            {"destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"]}));
    });
    let before = common::counts(run_root.path());

    let (ok, out, err) = run_bundle(run_root.path(), b.path(), "oci-idmap");

    assert!(!ok, "{out}{err}");
    assert!(err.contains("mount option `idmap` for /data is not supported"), "{err}");
    assert_eq!(common::counts(run_root.path()), before);
}

#[test]
fn deprecated_kernel_memory_limit_runs_with_a_warning() {
    if !root("deprecated_kernel_memory_limit_runs_with_a_warning") {
        return;
    }
    let b = tempfile::tempdir().unwrap();
    let run_root = tempfile::Builder::new().prefix("cvbench-test-oci-").tempdir_in(common::run_parent()).unwrap();
    bundle(b.path(), &["/bin/busybox", "echo", "ran"]);
    edit_spec(b.path(), |spec| {
        spec["linux"]["resources"]["memory"] =
            serde_json::json!({"limit": 67108864, "kernel": 33554432, "kernelTCP": 16777216});
    });

    let (ok, out, err) = run_bundle(run_root.path(), b.path(), "oci-kmem");

    assert!(ok, "{out}{err}");
    assert_eq!(out.trim(), "ran");
    assert!(err.contains("warning: `linux.resources.memory.kernel` is deprecated"), "{err}");
    assert!(err.contains("warning: `linux.resources.memory.kernelTCP` is deprecated"), "{err}");
}

#[test]
fn start_fails_with_the_message_of_a_set_up_step_that_failed_after_create() {
    if !root("start_fails_with_the_message_of_a_set_up_step_that_failed_after_create") {
        return;
    }
    let b = tempfile::tempdir().unwrap();
    let run_root = tempfile::Builder::new().prefix("cvbench-test-oci-").tempdir_in(common::run_parent()).unwrap();
    bundle(b.path(), &["/bin/busybox", "sleep", "30"]);
    // An effective capability outside the permitted set: capset(2) refuses it with EPERM,
    // after the start gate.
    edit_spec(b.path(), |spec| {
        spec["process"]["capabilities"] =
            serde_json::json!({"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": []});
    });
    let id = format!("oci-capfail-{}", std::process::id());
    let before = common::counts(run_root.path());
    let guard = ForceDelete { run_root: run_root.path(), id: &id };
    create(run_root.path(), b.path(), &id);

    let out = start_within(run_root.path(), &id, 20).expect("start hung");

    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "start succeeded although the container could not set up: {err}");
    assert!(err.contains("set capabilities") && err.contains("Operation not permitted"), "{err}");
    assert_ne!(status(run_root.path(), &id), "running");
    drop(guard);
    assert_eq!(common::counts(run_root.path()), before);
}

/// `delete --force` of a container when dropped, so a failing test leaves nothing behind.
struct ForceDelete<'a> {
    run_root: &'a Path,
    id: &'a str,
}

impl Drop for ForceDelete<'_> {
    fn drop(&mut self) {
        let _ = rt(self.run_root, &["delete", "--force", self.id]);
    }
}

/// The lines of a /proc/PID/status text that say who a process is and what confines it.
fn privilege_lines(status: &str) -> Vec<String> {
    const KEYS: [&str; 9] =
        ["Uid:", "Gid:", "CapEff:", "CapPrm:", "CapBnd:", "CapAmb:", "NoNewPrivs:", "Seccomp:", "Seccomp_filters:"];
    let lines: Vec<String> =
        status.lines().filter(|l| KEYS.iter().any(|k| l.starts_with(k))).map(str::to_string).collect();
    assert_eq!(lines.len(), KEYS.len(), "missing lines in {status}");
    lines
}

#[test]
fn exec_gets_exactly_the_container_inits_user_capabilities_and_seccomp() {
    if !root("exec_gets_exactly_the_container_inits_user_capabilities_and_seccomp") {
        return;
    }
    let b = tempfile::tempdir().unwrap();
    let run_root = tempfile::Builder::new().prefix("cvbench-test-oci-").tempdir_in(common::run_parent()).unwrap();
    bundle(b.path(), &["/bin/busybox", "sleep", "30"]);
    let caps = serde_json::json!(["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    edit_spec(b.path(), |spec| {
        spec["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [1001]});
        spec["process"]["noNewPrivileges"] = serde_json::json!(true);
        spec["process"]["capabilities"] = serde_json::json!({
            "bounding": caps, "effective": caps, "permitted": caps, "inheritable": caps,
            "ambient": ["CAP_NET_BIND_SERVICE"]});
        spec["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO"}]});
    });
    let id = format!("oci-exec-{}", std::process::id());
    create(run_root.path(), b.path(), &id);
    let start = rt(run_root.path(), &["start", &id]);
    assert!(start.status.success(), "{}", String::from_utf8_lossy(&start.stderr));
    let init_pid = state_pid(run_root.path(), &id);
    let init = fs::read_to_string(format!("/proc/{init_pid}/status")).unwrap();

    let spec: serde_json::Value = serde_json::from_slice(&fs::read(b.path().join("config.json")).unwrap()).unwrap();
    let mut process = spec["process"].clone();
    process["args"] = serde_json::json!(["/bin/busybox", "cat", "/proc/self/status"]);
    let process_json = b.path().join("process.json");
    fs::write(&process_json, serde_json::to_vec(&process).unwrap()).unwrap();
    let out = rt(run_root.path(), &["exec", "--process", process_json.to_str().unwrap(), &id]);
    force_delete(run_root.path(), &id);

    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exec = privilege_lines(&String::from_utf8_lossy(&out.stdout));
    let init = privilege_lines(&init);
    assert_eq!(exec, init);
    assert!(init.iter().any(|l| l == "Seccomp:\t2"), "{init:?}");
    assert!(init.iter().any(|l| l.starts_with("Uid:\t1000")), "{init:?}");
}

/// Whether the kernel has AppArmor on (securityfs lists the active LSMs).
fn apparmor_enabled() -> bool {
    fs::read_to_string("/sys/kernel/security/lsm").is_ok_and(|l| l.split(',').any(|m| m.trim() == "apparmor"))
}

/// A profile loaded into the kernel for one test, removed when dropped.
struct LoadedProfile {
    file: tempfile::NamedTempFile,
}

impl LoadedProfile {
    fn load(name: &str) -> LoadedProfile {
        use std::io::Write;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        // Everything allowed: the test proves the process runs under the profile, not a rule.
        write!(
            file,
            "profile {name} flags=(attach_disconnected,mediate_deleted) {{\n  file,\n  capability,\n  network,\n  \
             signal,\n  ptrace,\n  mount,\n  umount,\n  pivot_root,\n  unix,\n}}\n"
        )
        .unwrap();
        let out = Command::new("apparmor_parser").arg("--replace").arg(file.path()).output().unwrap();
        assert!(out.status.success(), "apparmor_parser --replace: {}", String::from_utf8_lossy(&out.stderr));
        LoadedProfile { file }
    }
}

impl Drop for LoadedProfile {
    fn drop(&mut self) {
        let _ = Command::new("apparmor_parser").arg("--remove").arg(self.file.path()).output();
    }
}

#[test]
fn apparmor_profile_confines_the_container_process_from_its_exec() {
    let test = "apparmor_profile_confines_the_container_process_from_its_exec";
    if !root(test) {
        return;
    }
    if !apparmor_enabled() {
        eprintln!("SKIPPED: {test}: AppArmor is not enabled in this host's kernel (no `apparmor` in /sys/kernel/security/lsm)");
        return;
    }
    if Command::new("apparmor_parser").arg("--version").output().is_err() {
        eprintln!("SKIPPED: {test}: apparmor_parser missing (apt-get install apparmor)");
        return;
    }
    let name = format!("cvbench-test-{}", std::process::id());
    let _profile = LoadedProfile::load(&name);
    let b = tempfile::tempdir().unwrap();
    let run_root = tempfile::Builder::new().prefix("cvbench-test-oci-").tempdir_in(common::run_parent()).unwrap();
    bundle(b.path(), &["/bin/busybox", "cat", "/proc/self/attr/current"]);
    edit_spec(b.path(), |spec| spec["process"]["apparmorProfile"] = serde_json::json!(name));
    let before = common::counts(run_root.path());

    let (ok, out, err) = run_bundle(run_root.path(), b.path(), "oci-apparmor");

    assert!(ok, "{out}{err}");
    assert_eq!(out.trim_end_matches('\0').trim(), format!("{name} (enforce)"), "{err}");
    assert_eq!(common::counts(run_root.path()), before);
}

#[test]
fn apparmor_profile_name_with_a_newline_is_refused_by_field() {
    if !root("apparmor_profile_name_with_a_newline_is_refused_by_field") {
        return;
    }
    let b = tempfile::tempdir().unwrap();
    let run_root = tempfile::Builder::new().prefix("cvbench-test-oci-").tempdir_in(common::run_parent()).unwrap();
    bundle(b.path(), &["/bin/busybox", "true"]);
    // The kernel reads a request up to a newline: this would ask for "unconfined".
    edit_spec(b.path(), |spec| spec["process"]["apparmorProfile"] = serde_json::json!("unconfined\nexec x"));
    let before = common::counts(run_root.path());

    let (ok, out, err) = run_bundle(run_root.path(), b.path(), "oci-apparmor-bad");

    assert!(!ok, "{out}{err}");
    assert!(err.contains("process.apparmorProfile"), "{err}");
    assert_eq!(common::counts(run_root.path()), before);
}
