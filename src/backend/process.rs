//! A backend instance that is one host child process (native, the VMM
//! processes, peer runtimes): spawning with the harness's pipes, a waiter
//! thread that reaps it with `wait4` (exit status and peak RSS), and signals
//! sent through a pidfd so a recycled pid can never be hit.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use super::{BackendError, LaunchSpec};
use crate::record::ExitInfo;

/// What the waiter thread reports when the child is reaped.
struct Reaped {
    status: i32,
}

/// A spawned child process owned by one instance.
pub struct ChildProcess {
    backend: &'static str,
    pid: i32,
    pidfd: OwnedFd,
    stdin: Option<ChildStdin>,
    reaped: Receiver<std::io::Result<Reaped>>,
    exit: Option<ExitInfo>,
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Files opened before fork, written between fork and exec: the child joins the parent before
/// it runs anything, so everything it maps from exec on is charged there (the density unit's parent cgroup).
pub struct Joiner {
    fds: Vec<OwnedFd>,
}

impl Joiner {
    pub fn open(files: &[std::path::PathBuf]) -> std::io::Result<Joiner> {
        let fds = files
            .iter()
            .map(|p| {
                std::fs::OpenOptions::new().write(true).open(p).map(OwnedFd::from).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("opening {} to join a cgroup: {e}", p.display()))
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Joiner { fds })
    }

    /// Make `cmd`'s child join before exec; the command must not outlive `self`.
    pub fn apply(&self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let raw: Vec<i32> = self.fds.iter().map(AsRawFd::as_raw_fd).collect();
        // SAFETY: the closure only calls write(2) on descriptors that stay open until the spawn
        // returns (owned by `self`); it allocates nothing, as required between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &raw {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
}

/// The CPU the harness's helpers run on (`usize::MAX`: none set).
static HELPER_CPU: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Run every helper the harness starts from now on (peer servers, dockerd and
/// through it containerd and the shims, event readers) on `cpu`: the launch
/// happens on a thread pinned to the instance's CPU, and what it starts
/// beside the instance must not compete with it there. `None` lifts it.
pub fn set_helper_cpu(cpu: Option<usize>) {
    HELPER_CPU.store(cpu.unwrap_or(usize::MAX), Ordering::Relaxed);
}

pub fn helper_cpu() -> Option<usize> {
    Some(HELPER_CPU.load(Ordering::Relaxed)).filter(|&c| c != usize::MAX)
}

/// Make `cmd`'s child run on the helper CPU, if one is set.
pub fn pin_helper(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let Some(cpu) = helper_cpu() else { return };
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_err() {
        return;
    }
    // SAFETY: the hook runs between fork and exec and makes one system call
    // (sched_setaffinity, async-signal-safe) on a set built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(std::io::Error::from)
        });
    }
}

/// The `Cpus_allowed_list` of a process, from `/proc/PID/status`.
pub fn cpus_allowed_list(pid: i32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(|v| v.trim().to_string())
}

/// How to start one process: the workload (from its [`LaunchSpec`]) or a helper the backend
/// runs beside it (the peer server, dockerd), which is no workload.
pub struct Spawn {
    /// What the process is, for errors: the workload's name or the helper's.
    pub what: String,
    pub stdin_pipe: bool,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// `cgroup.procs` files the child joins before exec.
    pub join_cgroup_procs: Vec<std::path::PathBuf>,
    /// A helper of the harness, not the instance: it runs on the helper CPU
    /// when one is set ([`set_helper_cpu`]), whatever CPU the launching
    /// thread is pinned to.
    pub helper: bool,
}

impl Spawn {
    /// A helper process: no stdin, no cgroup to join.
    pub fn helper(what: &str, stdout: OwnedFd, stderr: OwnedFd) -> Spawn {
        Spawn { what: what.to_string(), stdin_pipe: false, stdout, stderr, join_cgroup_procs: Vec::new(), helper: true }
    }
}

impl From<LaunchSpec> for Spawn {
    fn from(spec: LaunchSpec) -> Spawn {
        Spawn {
            what: spec.workload.to_string(),
            stdin_pipe: spec.stdin_pipe,
            stdout: spec.stdout,
            stderr: spec.stderr,
            join_cgroup_procs: spec.options.join_cgroup_procs,
            helper: false,
        }
    }
}

impl ChildProcess {
    /// Spawn `cmd` with the spec's stdout/stderr and, if asked, a stdin pipe.
    pub fn spawn(
        backend: &'static str,
        mut cmd: Command,
        spec: impl Into<Spawn>,
    ) -> Result<ChildProcess, BackendError> {
        let spec = spec.into();
        let launch_err = |e: std::io::Error| BackendError::Launch {
            backend: backend.into(),
            workload: spec.what.clone(),
            source: Box::new(e),
        };
        cmd.stdin(if spec.stdin_pipe { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::from(spec.stdout))
            .stderr(Stdio::from(spec.stderr));
        if spec.helper {
            pin_helper(&mut cmd);
        }
        // Kept open until the spawn has returned: the child writes to it before exec.
        let joiner = if spec.join_cgroup_procs.is_empty() {
            None
        } else {
            let j = Joiner::open(&spec.join_cgroup_procs).map_err(launch_err)?;
            j.apply(&mut cmd);
            Some(j)
        };
        let mut child = cmd.spawn().map_err(launch_err)?;
        drop(joiner);
        let pid = child.id() as i32;
        let stdin = child.stdin.take();
        // `Child` is dropped without waiting: reaping is the waiter thread's job.
        drop(child);
        let pidfd = pidfd_open(pid).map_err(launch_err)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("reap-{pid}"))
            .spawn(move || {
                let mut status = 0;
                // SAFETY: rusage is plain data; zero is a valid initial value.
                let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
                let r = loop {
                    // SAFETY: waiting for our own child with valid out-pointers.
                    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
                    if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    break r;
                };
                let msg = if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(Reaped { status }) };
                let _ = tx.send(msg);
            })
            .map_err(launch_err)?;
        Ok(ChildProcess { backend, pid, pidfd, stdin, reaped: rx, exit: None })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Send `sig` unless the child has already been reaped.
    pub fn signal(&self, sig: i32) {
        if self.exit.is_some() {
            return;
        }
        // SAFETY: the pidfd refers to our child; a null siginfo is allowed.
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, self.pidfd.as_raw_fd(), sig, std::ptr::null::<u8>(), 0) };
    }

    fn record(&mut self, r: Reaped) -> ExitInfo {
        let s = r.status;
        let exit = if libc::WIFEXITED(s) {
            ExitInfo { code: Some(libc::WEXITSTATUS(s)), signal: None, oom_killed: false }
        } else {
            ExitInfo { code: None, signal: Some(libc::WTERMSIG(s)), oom_killed: false }
        };
        self.exit = Some(exit);
        exit
    }

    /// Wait up to `timeout`; `Ok(None)` if still running.
    pub fn try_wait(&mut self, timeout: Duration) -> Result<Option<ExitInfo>, BackendError> {
        if let Some(e) = self.exit {
            return Ok(Some(e));
        }
        match self.reaped.recv_timeout(timeout) {
            Ok(Ok(r)) => Ok(Some(self.record(r))),
            Ok(Err(e)) => Err(BackendError::Wait { backend: self.backend.into(), pid: self.pid, source: e }),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(BackendError::Wait {
                backend: self.backend.into(),
                pid: self.pid,
                source: std::io::Error::other("waiter thread ended without a status"),
            }),
        }
    }

    /// Wait; on timeout kill the child and report a timeout.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitInfo, BackendError> {
        if let Some(e) = self.try_wait(timeout)? {
            return Ok(e);
        }
        self.signal(libc::SIGKILL);
        self.try_wait(Duration::from_secs(10))?;
        Err(BackendError::Other {
            backend: self.backend.into(),
            what: format!("waiting for pid {}", self.pid),
            source: format!("timed out after {timeout:?}; killed").into(),
        })
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitInfo, BackendError> {
        self.signal(libc::SIGTERM);
        if let Some(e) = self.try_wait(grace)? {
            return Ok(e);
        }
        self.signal(libc::SIGKILL);
        self.try_wait(Duration::from_secs(10))?.ok_or_else(|| BackendError::Other {
            backend: self.backend.into(),
            what: format!("killing pid {}", self.pid),
            source: "still running 10 s after SIGKILL".into(),
        })
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.signal(libc::SIGKILL);
            let _ = self.try_wait(Duration::from_secs(5));
        }
    }
}

/// How long a peer server may take to listen (it is up in milliseconds; an emulated CPU is slower).
const SERVER_READY_TIMEOUT_MS: u16 = 30_000;

/// Spawn a `cvbench-workload serve` command (already given its arguments and
/// any namespace set-up) and wait until it prints READY, i.e. is listening.
pub fn spawn_server(backend: &'static str, cmd: Command) -> Result<ChildProcess, BackendError> {
    let err = |e: Box<dyn std::error::Error + Send + Sync>| BackendError::Launch {
        backend: backend.into(),
        workload: "serve".into(),
        source: e,
    };
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| err(e.into()))?;
    let devnull = std::fs::File::options().write(true).open("/dev/null").map_err(|e| err(e.into()))?;
    let spec = Spawn::helper("serve", wr, devnull.into());
    let mut proc = ChildProcess::spawn(backend, cmd, spec)?;
    // A server that neither prints READY nor exits must not hang the run: wait a bounded time.
    let mut fds = [nix::poll::PollFd::new(rd.as_fd(), nix::poll::PollFlags::POLLIN)];
    let ready =
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(SERVER_READY_TIMEOUT_MS)).map_err(|e| err(e.into()))?;
    if ready == 0 {
        let _ = proc.stop(Duration::from_secs(1));
        return Err(
            err(format!("the peer server printed no READY within {} s", SERVER_READY_TIMEOUT_MS / 1000).into()),
        );
    }
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(std::fs::File::from(rd)), &mut line)
        .map_err(|e| err(e.into()))?;
    if !crate::record::is_ready_line(&line) {
        return Err(err(format!("the peer server did not start (printed {line:?})").into()));
    }
    Ok(proc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn null() -> OwnedFd {
        OwnedFd::from(std::fs::File::options().write(true).open("/dev/null").expect("/dev/null"))
    }

    fn sleeper() -> Command {
        let mut cmd = Command::new("sleep");
        cmd.arg("5");
        cmd
    }

    #[test]
    fn a_helper_runs_on_the_helper_cpu_and_the_instance_on_the_launching_threads() {
        let cpus = crate::bench::design::allowed_cpus();
        if cpus.len() < 2 {
            eprintln!("SKIPPED: pinning helpers apart from instances needs two CPUs, this process may use {cpus:?}");
            return;
        }
        let (harness, instance) = (cpus[0], cpus[cpus.len() - 1]);
        set_helper_cpu(Some(harness));
        // As the runner launches: from a thread pinned to the instance's CPU.
        let (helper, workload) = std::thread::spawn(move || {
            crate::bench::design::pin_current_thread(instance).expect("pin");
            let mut h = ChildProcess::spawn("test", sleeper(), Spawn::helper("sleep", null(), null())).expect("helper");
            let spec = Spawn { helper: false, ..Spawn::helper("sleep", null(), null()) };
            let mut w = ChildProcess::spawn("test", sleeper(), spec).expect("workload");
            let seen = (cpus_allowed_list(h.pid()), cpus_allowed_list(w.pid()));
            let _ = h.stop(Duration::from_secs(1));
            let _ = w.stop(Duration::from_secs(1));
            seen
        })
        .join()
        .expect("launch thread");
        set_helper_cpu(None);
        assert_eq!(helper, Some(harness.to_string()));
        assert_eq!(workload, Some(instance.to_string()));
    }
}
