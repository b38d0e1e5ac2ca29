//! `cvbench-runtime checkpoint` / `restore` through criu: the waiting workload checkpointed at
//! READY, restored from its image, told to go, its job's result line read, nothing left behind
//! (where CRIU runs: the test host; on a kernel CRIU cannot handle, SKIPPED with the reason).
//! And the restore side's bad input, which runs anywhere: a missing directory, one that is not a
//! checkpoint, a truncated image and another runtime's image are refused naming the path, before
//! any state, cgroup or mount exists.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{counts, root, workload};
use cvbench_runtime::checkpoint::criu::CriuFacts;
use cvbench_runtime::checkpoint::image;
use cvbench_testkit::Reap;

const BIN: &str = env!("CARGO_BIN_EXE_cvbench-runtime");

/// A bundle running the workload's waiting form (`wait-go --job noop`), read-only root.
fn bundle(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    for d in ["proc", "dev", "tmp", "sys"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy(workload(), rootfs.join("cvbench-workload")).unwrap();
    let b = dir.join("bundle");
    std::fs::create_dir_all(&b).unwrap();
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["/cvbench-workload", "wait-go", "--job", "noop"], "cwd": "/", "env": ["PATH=/"],
                    "user": {"uid": 0, "gid": 0}},
        "root": {"path": rootfs, "readonly": true},
        "hostname": "cvb-ckpt",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "network"}, {"type": "ipc"},
                                 {"type": "uts"}]}
    });
    std::fs::write(b.join("config.json"), config.to_string()).unwrap();
    b
}

fn rt(run_root: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--root").arg(run_root);
    c
}

/// Start `cmd` with piped stdio.
fn spawn(mut cmd: Command) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

#[test]
fn checkpoint_restore_go_runs_the_job_and_leaves_nothing() {
    if !root("checkpoint_restore_go_runs_the_job_and_leaves_nothing") {
        return;
    }
    if let Err(why) = CriuFacts::probe().verdict() {
        assert!(!cvbench_testkit::in_testhost(), "CRIU must run in the test host: {why}");
        cvbench_testkit::skip(cvbench_testkit::Need::Other, &why);
        return;
    }
    let _serial = common::serial();
    let env = common::Env::new();
    let run_root = env.run_root.path();
    let before = counts(run_root);
    let b = bundle(env.state.path());
    let (child, mut out) = spawn({
        let mut c = rt(run_root);
        c.arg("run").arg("--bundle").arg(&b).arg("ck1");
        c
    });
    let run = Reap::new(child);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY");
    let img = env.state.path().join("image");
    let o = rt(run_root).arg("checkpoint").arg("--image-path").arg(&img).arg("ck1").output().unwrap();
    assert!(o.status.success(), "checkpoint: {}", String::from_utf8_lossy(&o.stderr));
    // The dump stopped the container: its `run` ends.
    run.into_inner().wait().unwrap();
    let m = image::verify(&img, "cvbench-runtime").expect("a sealed image");
    assert!(m.files.iter().any(|f| f.name.starts_with("pages-")), "criu wrote memory pages: {m:?}");
    let pid_file = env.state.path().join("restored.pid");
    let (child, mut out) = spawn({
        let mut c = rt(run_root);
        c.arg("restore").arg("--image-path").arg(&img).arg("--bundle").arg(&b).arg("--pid-file").arg(&pid_file);
        c.arg("ck2");
        c
    });
    let mut restored = Reap::new(child);
    for _ in 0..3000 {
        if pid_file.exists() || restored.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(pid_file.exists(), "restore wrote no pid file");
    restored.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut result = String::new();
    out.read_line(&mut result).unwrap();
    assert!(result.contains("\"job_ns\""), "the restored workload ran its job: {result:?}");
    let mut c = restored.into_inner();
    let status = c.wait().unwrap();
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(c.stderr.as_mut().unwrap(), &mut err);
    assert!(status.success(), "restore exited {status}: {err}");
    assert_eq!(counts(run_root), before, "a restored run left state behind");
}

/// `restore` from `image_dir` fails naming `names`, leaving no state.
fn refused(image_dir: &Path, names: &Path) -> String {
    let env = common::Env::new();
    let b = bundle(env.state.path());
    let before = counts(env.run_root.path());
    let o = rt(env.run_root.path())
        .arg("restore")
        .arg("--image-path")
        .arg(image_dir)
        .arg("--bundle")
        .arg(&b)
        .arg("bad1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "a restore from {} succeeded", image_dir.display());
    assert!(err.contains(&*names.to_string_lossy()), "the error names {}: {err}", names.display());
    assert_eq!(counts(env.run_root.path()), before, "a refused restore left state behind");
    err
}

/// An image directory sealed by `runtime` with one 8 KiB file.
fn sealed(runtime: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("pages-1.img"), vec![1u8; 8192]).unwrap();
    std::fs::write(d.path().join("descriptors.json"), br#"["/dev/null","/dev/null","/dev/null"]"#).unwrap();
    image::seal(d.path(), runtime).unwrap();
    d
}

#[test]
fn restore_refuses_a_missing_image_directory() {
    if !root("restore_refuses_a_missing_image_directory") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("gone");
    assert!(refused(&p, &p).contains("does not exist"));
}

#[test]
fn restore_refuses_a_directory_that_is_not_a_checkpoint() {
    if !root("restore_refuses_a_directory_that_is_not_a_checkpoint") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("core-1.img"), b"x").unwrap();
    assert!(refused(d.path(), d.path()).contains("is not a checkpoint image"));
}

#[test]
fn restore_refuses_a_truncated_image() {
    if !root("restore_refuses_a_truncated_image") {
        return;
    }
    let d = sealed("cvbench-runtime");
    let f = d.path().join("pages-1.img");
    std::fs::OpenOptions::new().write(true).open(&f).unwrap().set_len(100).unwrap();
    assert!(refused(d.path(), &f).contains("truncated"));
}

#[test]
fn restore_refuses_another_runtimes_checkpoint() {
    if !root("restore_refuses_another_runtimes_checkpoint") {
        return;
    }
    let d = sealed("runc");
    assert!(refused(d.path(), d.path()).contains("written by runc, not cvbench-runtime"));
}
