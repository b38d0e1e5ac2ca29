//! A real SIGINT to this test process in graceful mode: registered pids die, the flag is
//! set, the process lives on, and cleanup callbacks run only when asked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[test]
fn graceful_sigint_kills_registered_pids_and_sets_the_flag() {
    cvbench_signals::install();
    cvbench_signals::set_mode(cvbench_signals::Mode::Graceful);
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    cvbench_signals::on_interrupt(move || r.store(true, Ordering::SeqCst));
    let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let slot = cvbench_signals::register_pid(child.id() as i32).unwrap();

    // SAFETY: raise(3) of SIGINT, handled by the crate's handler.
    unsafe { libc::raise(libc::SIGINT) };
    let status = child.wait().unwrap();

    cvbench_signals::unregister_pid(slot);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
    assert!(cvbench_signals::interrupted());
    assert_eq!(cvbench_signals::stop_signal(), Some(libc::SIGINT));
    assert!(!ran.load(Ordering::SeqCst), "graceful: callbacks wait for run_cleanup");
    cvbench_signals::run_cleanup();
    assert!(ran.load(Ordering::SeqCst));
}
