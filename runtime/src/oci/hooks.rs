//! OCI hooks: run each with the container state as JSON on its stdin, its own args and env,
//! and a timeout; the caller applies the spec's failure rules (fatal before the user process
//! starts, a warning after).

use super::Error;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::{Hook, Hooks};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run `hooks` in order; the first failure stops the list and is returned (the phases before
/// the user process starts: prestart, createRuntime, createContainer, startContainer).
pub fn run(phase: &str, hooks: &Option<Vec<Hook>>, state: &serde_json::Value) -> Result<(), Error> {
    for (i, h) in hooks.iter().flatten().enumerate() {
        run_one(h, state).map_err(|reason| Error::Hook { phase: phase.to_string(), index: i, reason })?;
    }
    Ok(())
}

/// The create-time phases in the spec's order: prestart, createRuntime, createContainer
/// (all fatal; `create` and `run` report `created` to them, as runc does).
pub fn run_create_phases(hooks: &Hooks, state: &serde_json::Value) -> Result<(), Error> {
    run("prestart", hooks.prestart(), state)?;
    run("createRuntime", hooks.create_runtime(), state)?;
    run("createContainer", hooks.create_container(), state)
}

/// Run every one of `hooks` in order, a failure being a warning on stderr that stops nothing
/// (the phases after the user process started: poststart, poststop).
pub fn run_warn(phase: &str, hooks: &Option<Vec<Hook>>, state: &serde_json::Value) {
    for (i, h) in hooks.iter().flatten().enumerate() {
        if let Err(reason) = run_one(h, state) {
            eprintln!("cvbench-runtime: warning: {}", Error::Hook { phase: phase.to_string(), index: i, reason });
        }
    }
}

fn run_one(h: &Hook, state: &serde_json::Value) -> Result<(), String> {
    let path = h.path();
    let mut cmd = Command::new(path);
    let args = h.args().clone().unwrap_or_default();
    if let Some(argv0) = args.first() {
        std::os::unix::process::CommandExt::arg0(&mut cmd, argv0);
        cmd.args(&args[1..]);
    }
    cmd.env_clear();
    for e in h.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::inherit());
    // Its own process group, so a timeout kills whatever the hook started too.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(state.to_string().as_bytes());
    }
    let timeout = h.timeout().filter(|t| *t > 0).map(|t| Duration::from_secs(t as u64));
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(format!("{} exited with {st}", path.display())),
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for {}: {e}", path.display())),
        }
        if let Some(t) = timeout {
            if start.elapsed() >= t {
                // The process group of the hook we started (it leads it).
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
                return Err(format!("{} timed out after {t:?}", path.display()));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
