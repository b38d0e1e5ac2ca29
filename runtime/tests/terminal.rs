//! `process.terminal` on a bundle `runc spec` generated: `run` of the bundle exactly as
//! generated (interactive `sh` on a terminal, relayed to our stdin and stdout), `create
//! --console-socket` handing the terminal's master side over a UNIX socket, and the clear
//! errors of a terminal without a socket and a socket without a terminal. Every case checks
//! that nothing is left behind.

mod common;

use common::{counts, root};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cvbench-runtime");

/// `runc spec` in a new dir plus a busybox rootfs with /bin/sh; the config is not touched.
/// `None` when not root or runc is missing (loud skip).
fn generated_bundle(test: &str) -> Option<tempfile::TempDir> {
    if !root(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    match Command::new("runc").arg("spec").current_dir(dir.path()).status() {
        Ok(s) if s.success() => {}
        _ => {
            eprintln!("SKIPPED: {test} needs `runc spec` (apt-get install runc)");
            return None;
        }
    }
    let rootfs = dir.path().join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for tool in ["sh", "cut", "test", "echo"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(tool)).unwrap();
    }
    for d in ["proc", "dev", "sys", "tmp"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    Some(dir)
}

fn run_root() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("cvbench-test-tty-").tempdir_in(common::run_parent()).unwrap()
}

/// A script for the container's interactive shell. `$((6*7))` is expanded only by the shell,
/// so "TTY-42" in the output is the shell's answer, never the terminal's echo of our input.
const SCRIPT: &str = "test -t 0 && echo TTY-$((6*7))\necho CTTY-$(cut -d' ' -f7 /proc/self/stat)\nexit 3\n";

#[test]
fn run_relays_the_terminal_of_an_unchanged_runc_spec_bundle() {
    let Some(b) = generated_bundle("run_relays_the_terminal_of_an_unchanged_runc_spec_bundle") else {
        return;
    };
    let spec = fs::read_to_string(b.path().join("config.json")).unwrap();
    assert!(spec.contains("\"terminal\": true"), "runc spec makes terminal bundles: {spec}");
    let rr = run_root();
    let before = counts(rr.path());
    let mut child = Command::new(BIN)
        .arg("--root")
        .arg(rr.path())
        .args(["run", "--bundle"])
        .arg(b.path())
        .arg(format!("tty-run-{}", std::process::id()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(SCRIPT.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "the shell's `exit 3` is run's status: {text}");
    assert!(text.contains("TTY-42"), "stdin is a terminal inside: {text}");
    // tty_nr of a process in the container: non-zero once the session has a controlling tty.
    let ctty = text.lines().find_map(|l| l.trim().strip_prefix("CTTY-")).unwrap_or("?").trim().to_string();
    assert!(ctty != "0" && ctty.parse::<u64>().is_ok(), "the terminal is the controlling one: {ctty:?} in {text}");
    assert_eq!(counts(rr.path()), before);
}

/// Receive one descriptor from a connection on `listener`.
fn receive_fd(listener: &UnixListener) -> OwnedFd {
    let (conn, _) = listener.accept().unwrap();
    cvbench_runtime::oci::console::receive_fd(&conn).expect("the console socket received a descriptor")
}

fn rt(run_root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN).arg("--root").arg(run_root).args(args).stdin(Stdio::null()).output().unwrap()
}

#[test]
fn create_hands_the_terminal_to_the_console_socket() {
    let Some(b) = generated_bundle("create_hands_the_terminal_to_the_console_socket") else {
        return;
    };
    let rr = run_root();
    let before = counts(rr.path());
    let sock = b.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let id = format!("tty-create-{}", std::process::id());
    let create = Command::new(BIN)
        .arg("--root")
        .arg(rr.path())
        .args(["create", "--bundle"])
        .arg(b.path())
        .arg("--console-socket")
        .arg(&sock)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(b.path().join("create.err")).unwrap())
        .spawn()
        .unwrap();
    let master = receive_fd(&listener);
    let mut create = create;
    let created = create.wait().unwrap();
    assert!(created.success(), "{}", fs::read_to_string(b.path().join("create.err")).unwrap());
    let mut m = fs::File::from(master);
    // Typed ahead of the start: the terminal keeps it for the shell.
    m.write_all(SCRIPT.as_bytes()).unwrap();
    let start = rt(rr.path(), &["start", &id]);
    assert!(start.status.success(), "{}", String::from_utf8_lossy(&start.stderr));
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 1024];
    // Until the shell's answer or EIO (the container closed its side).
    while Instant::now() < deadline && !seen.contains("TTY-42") {
        match m.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(seen.contains("TTY-42"), "the shell ran on the handed-over terminal: {seen:?}");
    for _ in 0..200 {
        if String::from_utf8_lossy(&rt(rr.path(), &["state", &id]).stdout).contains("\"stopped\"") {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let del = rt(rr.path(), &["delete", "--force", &id]);
    assert!(del.status.success(), "{}", String::from_utf8_lossy(&del.stderr));
    drop(m);
    assert_eq!(counts(rr.path()), before);
}

#[test]
fn a_terminal_without_a_console_socket_and_the_reverse_are_clear_errors() {
    let Some(b) = generated_bundle("a_terminal_without_a_console_socket_and_the_reverse_are_clear_errors") else {
        return;
    };
    let rr = run_root();
    let before = counts(rr.path());
    let bundle = b.path().to_str().unwrap();
    let out = rt(rr.path(), &["create", "--bundle", bundle, "no-socket"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("process.terminal") && err.contains("--console-socket"), "{err}");
    // The same bundle with terminal off, given a socket.
    let cfg = b.path().join("config.json");
    let spec = fs::read_to_string(&cfg).unwrap().replace("\"terminal\": true", "\"terminal\": false");
    fs::write(&cfg, spec).unwrap();
    let sock = b.path().join("unused.sock");
    let out = rt(rr.path(), &["create", "--bundle", bundle, "--console-socket", sock.to_str().unwrap(), "no-tty"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--console-socket") && err.contains("terminal is false"), "{err}");
    assert_eq!(counts(rr.path()), before);
}
