//! Die mode, in a child process (this test binary run again with `CVBENCH_SIGNALS_CHILD` set):
//! with a cleanup callback the watcher thread runs it and the child dies of the signal; with
//! none there is no extra thread, and the child dies of the signal from the handler itself.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

const CHILD: &str = "CVBENCH_SIGNALS_CHILD";

/// Threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

/// The child's part: install, optionally register a callback writing `marker`, report the
/// thread count on stdout, SIGTERM itself, and wait to be ended.
fn child(marker: Option<&str>) -> ! {
    let before = threads();
    cvbench_signals::install();
    if let Some(path) = marker.map(str::to_owned) {
        cvbench_signals::on_interrupt(move || {
            let _ = std::fs::write(&path, b"ran");
        });
    }
    println!("threads added {}", threads() - before);
    // SIGTERM to this process, which the crate's handler takes.
    nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGTERM).expect("SIGTERM to self");
    std::thread::sleep(std::time::Duration::from_secs(20));
    std::process::exit(3)
}

/// Run this very test in a child; returns (its status, its stdout).
fn run_child(test: &str, marker: Option<&std::path::Path>) -> (std::process::ExitStatus, String) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"]);
    cmd.env(CHILD, marker.map_or("-".into(), |m| m.display().to_string()));
    let out = cmd.output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn child_mode() -> Option<String> {
    std::env::var(CHILD).ok()
}

#[test]
fn without_callbacks_no_thread_is_started_and_the_process_dies_of_the_signal() {
    if let Some(m) = child_mode() {
        assert_eq!(m, "-");
        child(None);
    }
    let (status, out) = run_child("without_callbacks_no_thread_is_started_and_the_process_dies_of_the_signal", None);
    assert_eq!(status.signal(), Some(libc::SIGTERM), "status {status:?}, stdout {out}");
    assert!(out.contains("threads added 0"), "no watcher without callbacks; stdout: {out}");
}

#[test]
fn a_callback_runs_before_the_process_dies_of_the_signal() {
    if let Some(m) = child_mode() {
        child(Some(&m));
    }
    let dir = tempfile_dir();
    let marker = dir.join("ran");
    let (status, out) = run_child("a_callback_runs_before_the_process_dies_of_the_signal", Some(&marker));
    assert_eq!(status.signal(), Some(libc::SIGTERM), "status {status:?}, stdout {out}");
    assert!(out.contains("threads added 1"), "one watcher thread; stdout: {out}");
    assert_eq!(std::fs::read(&marker).unwrap(), b"ran");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fresh directory under the target's temp dir (no tempfile dependency in this crate).
fn tempfile_dir() -> std::path::PathBuf {
    let d = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("signals-die-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
