//! Bad input: each case fails with a clear error and leaves nothing behind (no container
//! state, cgroups, mounts or store entries).

mod common;

use common::{counts, layer_tar, root, store_contents, write_oci_layout, Entry, Env};
use cvbench_runtime::container::{Container, Stdio};
use cvbench_runtime::image::import::import;
use cvbench_runtime::Error;
use std::fs;

fn create(cfg: &cvbench_runtime::ContainerConfig) -> Error {
    match Container::create_started(cfg, Stdio::default()) {
        Ok(_) => panic!("container creation should have failed"),
        Err(e) => e,
    }
}

#[test]
fn missing_image_is_a_clear_error_and_leaves_nothing() {
    if !root("missing_image_is_a_clear_error_and_leaves_nothing") {
        return;
    }
    let env = Env::new();
    let _serial = common::serial();
    let before = counts(env.run_root.path());
    let err = create(&env.config("no/such:image", &["/x"]));
    assert!(err.to_string().contains("`no/such:image` not found"), "{err}");
    assert_eq!(counts(env.run_root.path()), before);
}

#[test]
fn corrupt_image_blob_is_detected() {
    if !root("corrupt_image_blob_is_detected") {
        return;
    }
    let env = Env::new();
    let img = env.workload_image();
    let store = env.store();
    let d = store.find(img).unwrap();
    let m: cvbench_runtime::image::Manifest = store.blob_json(&d.digest).unwrap();
    fs::write(store.blob_path(&m.config.digest).unwrap(), b"{\"garbage\": true}").unwrap();
    let _serial = common::serial();
    let before = counts(env.run_root.path());
    let err = create(&env.config(img, &["/cvbench-workload", "noop"]));
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert_eq!(counts(env.run_root.path()), before);
}

#[test]
fn import_rejects_layer_digest_mismatch_and_leaves_store_empty() {
    let env = Env::new();
    let src = tempfile::tempdir().unwrap();
    let l = layer_tar(&[Entry::File("a", b"a", 0o644)]);
    let other = layer_tar(&[Entry::File("a", b"b", 0o644)]);
    write_oci_layout(src.path(), "t:1", &[(l.clone(), l.clone())]);
    // Replace the layer blob's content behind its digest name.
    fs::write(src.path().join("blobs/sha256").join(&common::digest(&l)[7..]), &other).unwrap();
    let err = import(&env.store(), src.path()).unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert_eq!(store_contents(env.state.path()), (0, 0, 0));
}

#[test]
fn import_rejects_layer_escaping_rootfs_via_parent_dir() {
    let env = Env::new();
    let src = tempfile::tempdir().unwrap();
    let l = layer_tar(&[Entry::RawFile("../../escaped", b"x")]);
    write_oci_layout(src.path(), "t:1", &[(l.clone(), l)]);
    let err = import(&env.store(), src.path()).unwrap_err();
    assert!(err.to_string().contains("escape"), "{err}");
    assert_eq!(store_contents(env.state.path()), (0, 0, 0));
    assert!(!env.state.path().join("escaped").exists());
}

#[test]
fn import_rejects_layer_escaping_rootfs_via_absolute_symlink() {
    let env = Env::new();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_str().unwrap().to_string();
    let src = tempfile::tempdir().unwrap();
    let l = layer_tar(&[Entry::Symlink("etc", &target), Entry::File("etc/passwd", b"root::0:0::/:/bin/sh", 0o644)]);
    write_oci_layout(src.path(), "t:1", &[(l.clone(), l)]);
    let err = import(&env.store(), src.path()).unwrap_err();
    assert!(err.to_string().contains("escape"), "{err}");
    assert!(!outside.path().join("passwd").exists());
    assert_eq!(store_contents(env.state.path()), (0, 0, 0));
}

#[test]
fn unknown_namespace_is_rejected() {
    let err = cvbench_runtime::namespaces::parse_list("pid,mount,time").unwrap_err();
    assert_eq!(err.to_string(), "unknown namespace `time` (known: pid, mount, uts, ipc, net, cgroup, user)");
}

#[test]
fn memory_limit_below_minimum_is_rejected_and_leaves_nothing() {
    if !root("memory_limit_below_minimum_is_rejected_and_leaves_nothing") {
        return;
    }
    let env = Env::new();
    let img = env.workload_image();
    let mut cfg = env.config(img, &["/cvbench-workload", "noop"]);
    cfg.resources.memory_bytes = Some(4096);
    let _serial = common::serial();
    let before = counts(env.run_root.path());
    let err = create(&cfg);
    assert!(err.to_string().contains("below the minimum"), "{err}");
    assert_eq!(counts(env.run_root.path()), before);
}

#[test]
fn missing_command_fails_at_exec_and_leaves_nothing() {
    if !root("missing_command_fails_at_exec_and_leaves_nothing") {
        return;
    }
    let env = Env::new();
    let img = env.workload_image();
    let _serial = common::serial();
    let before = counts(env.run_root.path());
    let err = create(&env.config(img, &["/no/such/binary"]));
    assert!(err.to_string().contains("execve"), "{err}");
    assert!(err.to_string().contains("No such file"), "{err}");
    assert_eq!(counts(env.run_root.path()), before);
}

#[test]
fn not_root_is_a_clear_error() {
    if !root("not_root_is_a_clear_error (drops to uid 65534 itself)") {
        return;
    }
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cvbench-runtime"))
        .args(["--root", "/nonexistent-cvbench", "--run-root", "/nonexistent-cvbench-run"])
        .args(["run-image", "--", "/cvbench-workload", "noop"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("must run as root"), "{err}");
    assert!(!std::path::Path::new("/nonexistent-cvbench-run").exists());
}
