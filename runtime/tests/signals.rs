//! SIGINT/SIGTERM: the runtime kills the container, removes what it made (cgroups, peer
//! namespace, veth, state dir) and then dies of the signal.

mod common;

use common::{counts, root, Env};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn interrupted_run_cleans_up(sig: nix::sys::signal::Signal) {
    let _serial = common::serial();
    let env = Env::new();
    env.workload_image();
    let before = counts(env.run_root.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_cvbench-runtime"))
        .arg("--root")
        .arg(env.state.path())
        .arg("--run-root")
        .arg(env.run_root.path())
        .args(["run-image", "--net", "veth", "--", "/cvbench-workload", "idle"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY");
    assert_ne!(counts(env.run_root.path()), before, "the container should be up");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(sig as i32), "{status:?}");
    assert_eq!(counts(env.run_root.path()), before);
}

#[test]
fn sigint_kills_the_container_and_cleans_up() {
    if !root("sigint_kills_the_container_and_cleans_up") {
        return;
    }
    interrupted_run_cleans_up(nix::sys::signal::Signal::SIGINT);
}

#[test]
fn sigterm_kills_the_container_and_cleans_up() {
    if !root("sigterm_kills_the_container_and_cleans_up") {
        return;
    }
    interrupted_run_cleans_up(nix::sys::signal::Signal::SIGTERM);
}
