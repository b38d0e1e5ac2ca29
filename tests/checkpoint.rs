//! Container checkpoint/restore through the harness (`backend::peers::checkpoint`): the
//! waiting workload checkpointed at READY, restored, told to go, and its job's result read;
//! gVisor's here, runc's and cvbench-runtime's (CRIU) where CRIU runs (the test host: on this
//! host's kernel CRIU fails, the doctor's verdict, so those say SKIPPED). Bad images are
//! refused naming the path, before any container exists, and nothing is left behind.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use cvbench::backend::peers::checkpoint::{self, CheckpointError};
use cvbench::backend::BackendId;
use cvbench::doctor::backends::{verdict, Host};
use cvbench::doctor::CriuFacts;
use cvbench::runner::{self, RunRequest};
use cvbench::workload::Workload;
use cvbench_runtime::checkpoint::image::ImageError;
use cvbench_testkit::{in_testhost, skip, Need};

const TIMEOUT: Duration = Duration::from_secs(120);

/// One test at a time: the leftover checks compare this process's state directories.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Can `b` checkpoint here? If not, one loud skip line with the doctor's reason.
fn runnable(b: BackendId) -> bool {
    if let Err(blocker) = verdict(b, &Host::probe()) {
        let need = if blocker.reason.starts_with("not root") { Need::Root } else { Need::Other };
        skip(need, &format!("{b}: {blocker}"));
        return false;
    }
    let kind = checkpoint::kind_for(b).expect("a checkpointing backend");
    if checkpoint::uses_criu(kind) {
        if let Err(why) = CriuFacts::probe().verdict() {
            // The test host is where CRIU must run: a skip there is a failure.
            assert!(!in_testhost(), "{b}: CRIU must run in the test host: {why}");
            skip(Need::Other, &format!("{b}: {why}"));
            return false;
        }
    }
    true
}

/// Our state directories under /run (one per checkpoint or restore set-up).
fn leftovers() -> BTreeSet<String> {
    std::fs::read_dir("/run")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("cvbench-ckpt-") && n.contains(&format!("-{}-", std::process::id())))
                .collect()
        })
        .unwrap_or_default()
}

fn restore_and_go(b: BackendId) {
    let _one = serial();
    if !runnable(b) {
        return;
    }
    let ckpt =
        checkpoint::take(b, Workload::Noop, &[], TIMEOUT).unwrap_or_else(|e| panic!("{b}: {}", runner::chain(&e)));
    assert!(ckpt.manifest.bytes() > 0, "{b}: an empty image");
    // Two restores of one image: the image is not used up by the first.
    for i in 0..2 {
        let w =
            checkpoint::launch_restored(&ckpt, TIMEOUT).unwrap_or_else(|e| panic!("{b} #{i}: {}", runner::chain(&e)));
        assert!(w.pid().is_some(), "{b}: the restored container has a pid");
        let req = RunRequest::new(Workload::Noop, Vec::new());
        let rec = w.go(runner::record_for(b.backend().as_ref(), &req), TIMEOUT, Some(&ckpt));
        assert_eq!(rec.error, None, "{b} #{i}: {rec:?}");
        assert!(rec.metrics.contains_key("job_ns"), "{b}: the job ran after the go line: {:?}", rec.metrics);
        assert!(rec.host.phases.iter().any(|(n, _)| n == "restore"), "{b}: {:?}", rec.host.phases);
        assert!(rec.extra.get("snapshot_memory_disk_kib").is_some_and(|k| *k > 0.0), "{b}: {:?}", rec.extra);
    }
}

#[test]
fn gvisor_restores_from_its_checkpoint_and_runs_the_job() {
    restore_and_go(BackendId::Gvisor);
}

#[test]
fn runc_restores_from_its_criu_checkpoint_and_runs_the_job() {
    restore_and_go(BackendId::Runc);
}

#[test]
fn cvbench_runtime_restores_from_its_criu_checkpoint_and_runs_the_job() {
    restore_and_go(BackendId::CvbenchRuntime);
}

/// A restore of `dir` as `b` fails with an image error naming `names`, and leaves nothing.
fn refused(b: BackendId, dir: &Path, names: &Path) -> ImageError {
    let before = leftovers();
    let e = match checkpoint::restore_dir(b, Workload::Noop, dir, TIMEOUT) {
        Ok(_) => panic!("{b}: a restore from {} started", dir.display()),
        Err(e) => e,
    };
    let text = runner::chain(&e);
    assert!(text.contains(&*names.to_string_lossy()), "the error names {}: {text}", names.display());
    assert_eq!(leftovers(), before, "a refused restore left state behind");
    match e {
        CheckpointError::Image(i) => i,
        other => panic!("not an image error: {}", runner::chain(&other)),
    }
}

/// A real gVisor checkpoint copied into a directory of the test's own.
fn gvisor_image_copy() -> Option<tempfile::TempDir> {
    if !runnable(BackendId::Gvisor) {
        return None;
    }
    let ckpt = checkpoint::take(BackendId::Gvisor, Workload::Noop, &[], TIMEOUT).expect("a gVisor checkpoint");
    let copy = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(ckpt.image()).unwrap().flatten() {
        std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
    }
    Some(copy)
}

#[test]
fn restore_refuses_a_missing_image_directory() {
    let _one = serial();
    if !cvbench_testkit::require_root("restore") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("no-such-image");
    assert!(matches!(refused(BackendId::Gvisor, &missing, &missing), ImageError::Missing(_)));
}

#[test]
fn restore_refuses_a_directory_that_is_not_a_checkpoint() {
    let _one = serial();
    if !cvbench_testkit::require_root("restore") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("checkpoint.img"), b"not a checkpoint").unwrap();
    assert!(matches!(refused(BackendId::Gvisor, d.path(), d.path()), ImageError::NotACheckpoint(_)));
}

#[test]
fn restore_refuses_a_truncated_image_naming_the_file() {
    let _one = serial();
    let Some(img) = gvisor_image_copy() else { return };
    let biggest = std::fs::read_dir(img.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != "cvbench-checkpoint.json")
        .max_by_key(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .expect("an image file")
        .path();
    let len = std::fs::metadata(&biggest).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&biggest).unwrap().set_len(len / 2).unwrap();
    assert!(matches!(refused(BackendId::Gvisor, img.path(), &biggest), ImageError::Size { .. }));
}

#[test]
fn restore_refuses_another_runtimes_checkpoint() {
    let _one = serial();
    let Some(img) = gvisor_image_copy() else { return };
    let e = refused(BackendId::Runc, img.path(), img.path());
    assert!(
        matches!(&e, ImageError::OtherRuntime { found, expected, .. } if found == "gvisor" && expected == "runc"),
        "{e}"
    );
}
