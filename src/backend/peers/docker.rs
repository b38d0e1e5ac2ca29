//! The `docker` backend: a private dockerd of our own (its own data root,
//! exec root, socket and pid file; no iptables, no bridge; it starts its own
//! managed containerd), the workload image loaded with `docker import`, and
//! `docker run --rm --network none` per instance. Where the time goes comes
//! from the daemon's own event stream (create, start, die, destroy). The
//! daemon is stopped by pid when the backend is dropped.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{launch_err, oci, PeerError};
use crate::backend::netpath::{Client, NetPath};
use crate::backend::process::{ChildProcess, Spawn};
use crate::backend::{Backend, BackendError, BackendId, Instance, LaunchSpec};
use crate::paths;
use crate::record::ExitInfo;
use crate::workload::Needs;

/// The label of Docker's processes and errors (also the CLI's name).
const DOCKER: &str = BackendId::Docker.name();

const IMAGE: &str = "cvbench-workload:latest";

/// The private daemon.
struct Daemon {
    proc: Mutex<ChildProcess>,
    ctr: Mutex<Option<CtrEvents>>,
    sock: String,
    base: PathBuf,
    exec_root: PathBuf,
    cli: PathBuf,
}

/// The docker client matching Debian's dockerd (`/usr/bin/docker`), else
/// whatever `docker` is on PATH.
fn cli_path() -> PathBuf {
    let deb = PathBuf::from("/usr/bin/docker");
    if deb.is_file() {
        deb
    } else {
        PathBuf::from("docker")
    }
}

/// The run pid in a private daemon's directory name (`cvbench-docker-<pid>` or `…-<pid>-c`
/// under `/var/tmp`, `cvbd-<pid>` or `cvbd-<pid>-c` under `/run`).
fn daemon_owner(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("cvbench-docker-").or_else(|| name.strip_prefix("cvbd-"))?;
    let pid = rest.strip_suffix("-c").unwrap_or(rest);
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether a live process names `dir` on its command line (a dockerd or containerd of a dead
/// run that outlived it still uses its directories: they are left alone).
fn in_use(dir: &std::path::Path) -> bool {
    let needle = dir.as_os_str().as_encoded_bytes();
    let Ok(rd) = std::fs::read_dir("/proc") else { return true };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle)))
}

/// The private daemons' directories of runs that are gone (their data root unmounted first:
/// dockerd can leave it bind-mounted on itself), removed; what was removed or failed, one line
/// each.
pub fn gc() -> Vec<String> {
    let mut out = Vec::new();
    for parent in ["/var/tmp", "/run"] {
        let Ok(rd) = std::fs::read_dir(parent) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = daemon_owner(&name) else { continue };
            let dir = e.path();
            if cvbench_runtime::state::alive(pid, 0) || in_use(&dir) {
                continue;
            }
            let _ = nix::mount::umount2(&dir.join("data"), nix::mount::MntFlags::MNT_DETACH);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => out.push(format!("docker: removed {} (its run, pid {pid}, is gone)", dir.display())),
                Err(err) => out.push(format!("docker: cannot remove {}: {err}", dir.display())),
            }
        }
    }
    out
}

fn unix_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

impl Daemon {
    /// `runtime`: our runtime's binary, registered as `cvbench` (`docker-cvbench`).
    fn start(runtime: Option<&std::path::Path>) -> Result<Daemon, PeerError> {
        let pid = std::process::id();
        let tag = if runtime.is_some() { "-c" } else { "" };
        let base = PathBuf::from(format!("/var/tmp/cvbench-docker-{pid}{tag}"));
        // Short: dockerd puts unix sockets under its exec root.
        let exec_root = PathBuf::from(format!("/run/cvbd-{pid}{tag}"));
        for d in [&base, &exec_root] {
            std::fs::create_dir_all(d).map_err(|e| PeerError::Io(d.clone(), e))?;
        }
        let sock = format!("unix://{}/docker.sock", exec_root.display());
        let log_path = base.join("dockerd.log");
        let log = std::fs::File::create(&log_path).map_err(|e| PeerError::Io(log_path.clone(), e))?;
        let null = std::fs::File::options()
            .write(true)
            .open("/dev/null")
            .map_err(|e| PeerError::Io(PathBuf::from("/dev/null"), e))?;
        let mut cmd = Command::new("dockerd");
        cmd.arg("--data-root")
            .arg(base.join("data"))
            .arg("--exec-root")
            .arg(exec_root.join("x"))
            .arg("-H")
            .arg(&sock)
            .arg("--pidfile")
            .arg(exec_root.join("dockerd.pid"))
            .args(["--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none", "--log-level=error"]);
        if let Some(rt) = runtime {
            cmd.arg("--add-runtime").arg(format!("cvbench={}", rt.display()));
        }
        cmd
            // Ctrl-C at the terminal must not reach the daemon: we stop it.
            .process_group(0);
        let spec = Spawn::helper("dockerd", null.into(), log.into());
        let proc = ChildProcess::spawn(DOCKER, cmd, spec).map_err(|e| PeerError::Other(e.to_string()))?;
        let d = Daemon { proc: Mutex::new(proc), ctr: Mutex::new(None), sock, base, exec_root, cli: cli_path() };
        let t = Instant::now();
        loop {
            if super::run_tool(d.cli().arg("version")).is_ok() {
                break;
            }
            let exited = d.proc.lock().ok().and_then(|mut p| p.try_wait(Duration::ZERO).ok().flatten());
            if exited.is_some() || t.elapsed() > Duration::from_secs(30) {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" / ");
                return Err(PeerError::Other(format!(
                    "private dockerd did not answer on {} ({}); log: {tail}",
                    d.sock,
                    if exited.is_some() { "it exited" } else { "30 s" }
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        d.import()?;
        if let Ok(mut c) = d.ctr.lock() {
            *c = CtrEvents::start(&d.exec_root);
        }
        Ok(d)
    }

    fn cli(&self) -> Command {
        let mut c = Command::new(&self.cli);
        c.arg("-H").arg(&self.sock).env("DOCKER_CONFIG", self.base.join("client"));
        c
    }

    /// `docker import` of a tar of the same rootfs the OCI peers use.
    fn import(&self) -> Result<(), PeerError> {
        let rootfs = self.base.join("rootfs");
        let bin = paths::workload_binary().map_err(|e| PeerError::Other(e.to_string()))?;
        oci::make_rootfs(&rootfs, &bin)?;
        let tar = self.base.join("image.tar");
        super::run_tool(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg("."))?;
        super::run_tool(self.cli().arg("import").arg(&tar).arg(IMAGE))?;
        Ok(())
    }
}

impl Daemon {
    /// Stop the private dockerd (by its pid, through the child handle) and remove its
    /// directories. Idempotent: Drop and the Ctrl-C hook may both call it.
    fn shutdown(&self) {
        if let Ok(mut c) = self.ctr.lock() {
            c.take();
        }
        if let Ok(mut p) = self.proc.lock() {
            // dockerd stops its containers and its managed containerd on SIGTERM.
            if let Err(e) = p.stop(Duration::from_secs(20)) {
                eprintln!("cvbench: docker: stopping the private dockerd: {e}");
            }
        }
        // dockerd bind-mounts its data root onto itself and undoes it only on a clean stop: one
        // killed past the bound (a busy host) leaves that mount, and the directory could not be
        // removed. Not a mount point (the clean case): EINVAL, ignored.
        let _ = nix::mount::umount2(&self.base.join("data"), nix::mount::MntFlags::MNT_DETACH);
        for d in [&self.exec_root, &self.base] {
            if let Err(e) = std::fs::remove_dir_all(d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    eprintln!("cvbench: docker: removing {}: {e}", d.display());
                }
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[derive(Default)]
pub struct Docker {
    daemon: Mutex<Option<Arc<Daemon>>>,
    /// `docker-cvbench`: Docker's engine over our runtime instead of runc.
    ours: bool,
}

impl Docker {
    pub fn new() -> Docker {
        Docker::default()
    }

    /// A `docker` command aimed at the private daemon (started if needed): the registry
    /// scenarios pull and run registry images through it.
    pub fn cli(&self) -> Result<Command, String> {
        Ok(self.daemon()?.cli())
    }

    /// `docker-cvbench`: the same private daemon setup, containers run by `cvbench-runtime`.
    pub fn over_cvbench_runtime() -> Docker {
        Docker { ours: true, ..Docker::default() }
    }

    fn daemon(&self) -> Result<Arc<Daemon>, String> {
        let mut g = self.daemon.lock().map_err(|_| "daemon lock poisoned".to_string())?;
        if let Some(d) = g.as_ref() {
            return Ok(d.clone());
        }
        let runtime = if self.ours {
            Some(paths::sibling_binary("cvbench-runtime", "CVBENCH_RUNTIME").map_err(|e| e.to_string())?)
        } else {
            None
        };
        let d = Arc::new(Daemon::start(runtime.as_deref()).map_err(|e| e.to_string())?);
        // Ctrl-C must not leave the private daemon running: the process's signal owner
        // (shared by every backend) calls this before the process dies of the signal.
        let weak = Arc::downgrade(&d);
        cvbench_signals::on_interrupt(move || {
            if let Some(d) = weak.upgrade() {
                d.shutdown();
            }
        });
        *g = Some(d.clone());
        Ok(d)
    }
}

struct DockerInstance {
    child: ChildProcess,
    name: String,
    server: Option<String>,
    net: Option<NetPath>,
    daemon: Arc<Daemon>,
    launched_unix_ns: u128,
    pids: Mutex<Option<Vec<i32>>>,
    scratch: Option<tempfile::TempDir>,
    notes: Vec<String>,
}

impl Backend for Docker {
    fn id(&self) -> BackendId {
        if self.ours {
            BackendId::DockerCvbench
        } else {
            BackendId::Docker
        }
    }

    /// Starts the private daemon (so the first launch does not pay for it).
    fn check(&self) -> Result<(), String> {
        if !super::on_path("dockerd") {
            return Err("dockerd is not installed (apt-get install docker.io)".into());
        }
        if !crate::env::is_root() {
            return Err("needs root to run a private dockerd".into());
        }
        self.daemon().map(|_| ())
    }

    fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn Instance>, BackendError> {
        let w = spec.workload.name();
        let daemon = self.daemon().map_err(|e| launch_err(self.name(), w, e))?;
        let launched_unix_ns = unix_ns();
        let name = super::unique("cvb-docker");
        let mut notes = vec![
            "docker: private dockerd 20.10 → containerd → containerd-shim-runc-v2 → runc; default seccomp profile and capabilities; json-file log driver; footprint counts the docker CLI and the container; dockerd, containerd and the shims are the shared daemon side (extra.shared_daemon_pss_kib at READY)".to_string(),
        ];
        let mut args: Vec<String> = spec.args.clone();
        let mut cmd = daemon.cli();
        cmd.args(["run", "--rm", "--name", &name]);
        if self.ours {
            cmd.args(["--runtime", "cvbench"]);
            notes.push("docker-cvbench: the same private dockerd and containerd-shim-runc-v2, which exec cvbench-runtime (--add-runtime cvbench=…) instead of runc".into());
        }
        let mut server = None;
        let mut net = None;
        let mut scratch = None;
        match spec.needs() {
            Needs { network: true, .. } => {
                // A holder container owns the client's network namespace (docker
                // cannot join a namespace by path); the run links it by veth to
                // a server namespace it creates, as for every other backend.
                let holder = format!("{name}-net");
                super::run_tool(daemon.cli().args([
                    "run",
                    "-d",
                    "--network",
                    "none",
                    "--name",
                    &holder,
                    IMAGE,
                    oci::GUEST_WORKLOAD,
                    "serve",
                    "--listen",
                    "127.0.0.1:5999",
                    "--max-conns",
                    "0",
                ]))
                .map_err(|e| launch_err(DOCKER, w, e))?;
                server = Some(holder.clone());
                let linked = super::run_tool(daemon.cli().args(["inspect", "-f", "{{.State.Pid}}", &holder]))
                    .map_err(|e| launch_err(DOCKER, w, e))
                    .and_then(|pid| {
                        let pid: i32 = pid.trim().parse().map_err(|_| {
                            launch_err(DOCKER, w, format!("holder container pid {:?} is not a number", pid.trim()))
                        })?;
                        let bin = paths::workload_binary().map_err(|e| launch_err(DOCKER, w, e))?;
                        NetPath::start(&bin, DOCKER, Client::Process(pid)).map_err(|e| launch_err(DOCKER, w, e))
                    });
                let path = match linked {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = super::run_tool(daemon.cli().args(["rm", "-f", &holder]));
                        return Err(e);
                    }
                };
                cmd.args(["--network", &format!("container:{holder}")]);
                args.extend(["--peer".to_string(), path.peer()]);
                notes.push(path.note());
                net = Some(path);
            }
            _ => {
                cmd.args(["--network", "none"]);
            }
        }
        if spec.needs().disk {
            let d = super::scratch("cvbench-disk-").map_err(|e| launch_err(DOCKER, w, e))?;
            cmd.arg("-v").arg(format!("{}:{}", d.path().display(), oci::DATA_DIR));
            args.extend(["--dir".to_string(), oci::DATA_DIR.to_string()]);
            notes.push(format!("disk: bind volume from {}", d.path().display()));
            scratch = Some(d);
        }
        if let Some(cpu) = spec.options.instance_cpu {
            // The container is started by the daemon (on the harness's CPU), not by this pinned
            // thread: its cpuset puts it on the instance's CPU like every other backend's.
            cmd.arg("--cpuset-cpus").arg(cpu.to_string());
            notes.push(format!(
                "pinned with --cpuset-cpus {cpu}; dockerd, containerd and the shim run on the harness's CPU"
            ));
        }
        if spec.stdin_pipe {
            cmd.arg("-i");
        }
        cmd.arg(IMAGE).arg(oci::GUEST_WORKLOAD).arg(spec.workload.name()).args(&args);
        let child = match ChildProcess::spawn(DOCKER, cmd, spec) {
            Ok(c) => c,
            Err(e) => {
                if let Some(s) = &server {
                    let _ = super::run_tool(daemon.cli().args(["rm", "-f", s]));
                }
                return Err(e);
            }
        };
        Ok(Box::new(DockerInstance {
            child,
            name,
            server,
            net,
            daemon,
            launched_unix_ns,
            pids: Mutex::new(None),
            scratch,
            notes,
        }))
    }
}

fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|c| c.trim().to_string())
}

/// Children of a process (every thread's), from `/proc/PID/task/*/children`.
fn children(pid: i32) -> Vec<i32> {
    let mut v = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return v };
    for t in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
            v.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    v
}

/// Milestones of a `docker run`, in order, with the phase that ends at each:
/// dockerd's events (`create`, `start`, `die`, `destroy`) and, when the
/// private containerd's event stream was readable, containerd's
/// (`/containers/create`, `/tasks/create`: shim up and `runc create` done,
/// `/tasks/start`: `runc start` done).
const MILESTONES: &[(&str, &str)] = &[
    ("create", "cli+dockerd create"),
    ("/containers/create", "dockerd→containerd"),
    ("/tasks/create", "containerd→shim→runc create"),
    ("/tasks/start", "runc start"),
    ("start", "dockerd start reply"),
    ("die", "workload until exit"),
    ("destroy", "dockerd remove"),
];

/// Phases from (unix ns, event) pairs, relative to the launch. A missing
/// milestone is skipped: the next phase then spans both.
pub fn phases_from_events(launched_unix_ns: u128, events: &[(u128, String)]) -> Vec<(String, u64)> {
    let mut prev = launched_unix_ns;
    let mut out = Vec::new();
    for (event, phase) in MILESTONES {
        let Some(t) = events.iter().find(|(_, e)| e == event).map(|(t, _)| *t) else { continue };
        out.push((phase.to_string(), t.saturating_sub(prev) as u64));
        prev = prev.max(t);
    }
    out
}

/// Parse `docker events` lines `<unix ns> <action> <id>` into (ns, action, id).
fn parse_docker_events(text: &str) -> Vec<(u128, String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let t = it.next()?.parse().ok()?;
            Some((t, it.next()?.to_string(), it.next().unwrap_or("").to_string()))
        })
        .collect()
}

/// Topic and container id of a `ctr events` line
/// (`<date> <time> <zone> <zone> <namespace> <topic> <json>`).
pub fn parse_ctr_event(line: &str) -> Option<(String, String)> {
    let topic = line.split_whitespace().find(|w| w.starts_with('/'))?.to_string();
    let id = ["\"container_id\":\"", "\"id\":\""].iter().find_map(|k| {
        let i = line.find(k)? + k.len();
        line[i..].split('"').next().map(str::to_string)
    })?;
    Some((topic, id))
}

/// `ctr events` on the private containerd, kept for the daemon's lifetime;
/// each event is stamped when it is read.
struct CtrEvents {
    proc: ChildProcess,
    seen: Arc<Mutex<Vec<(u128, String, String)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl CtrEvents {
    fn start(exec_root: &std::path::Path) -> Option<CtrEvents> {
        let sock = exec_root.join("x/containerd/containerd.sock");
        if !sock.exists() || !super::on_path("ctr") {
            return None;
        }
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
        let null = std::fs::File::options().write(true).open("/dev/null").ok()?;
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&sock).arg("events").process_group(0);
        let spec = Spawn::helper("ctr-events", wr, null.into());
        let proc = ChildProcess::spawn(DOCKER, cmd, spec).ok()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let seen = seen.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(std::fs::File::from(rd)).lines() {
                    let Ok(line) = line else { break };
                    let t = unix_ns();
                    if let (Some((topic, id)), Ok(mut s)) = (parse_ctr_event(&line), seen.lock()) {
                        s.push((t, topic, id));
                    }
                }
            })
        };
        Some(CtrEvents { proc, seen, reader: Some(reader) })
    }

    /// Events of one container, removed from the buffer.
    fn take(&self, id: &str) -> Vec<(u128, String)> {
        let Ok(mut s) = self.seen.lock() else { return Vec::new() };
        let (mine, rest): (Vec<_>, Vec<_>) = s.drain(..).partition(|(_, _, c)| c == id);
        *s = rest;
        mine.into_iter().map(|(t, topic, _)| (t, topic)).collect()
    }
}

impl Drop for CtrEvents {
    fn drop(&mut self) {
        let _ = self.proc.stop(Duration::from_secs(2));
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

impl Instance for DockerInstance {
    fn pids(&self) -> Vec<i32> {
        let mut v = vec![self.child.pid()];
        let Ok(mut cache) = self.pids.lock() else { return v };
        if cache.is_none() {
            let out = super::run_tool(self.daemon.cli().args(["inspect", "-f", "{{.State.Pid}}", &self.name]));
            if let Some(pid) = out.ok().and_then(|s| s.trim().parse::<i32>().ok()).filter(|p| *p > 0) {
                // The container's init; its containerd-shim is the daemon side's (shared_pids).
                *cache = Some(vec![pid]);
            }
        }
        v.extend(cache.iter().flatten().copied());
        v
    }

    fn shared_pids(&self) -> Vec<i32> {
        // dockerd and its containerd, then this daemon's containerd shims: they daemonise
        // (their parent is init), so they are found by the containerd socket they serve.
        let Ok(dockerd) = self.daemon.proc.lock().map(|p| p.pid()) else { return Vec::new() };
        let mut v = vec![dockerd];
        v.extend(children(dockerd).into_iter().filter(|c| comm(*c).as_deref() == Some("containerd")));
        let sock = self.daemon.exec_root.join("x/containerd/containerd.sock").display().to_string();
        for pid in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = pid.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
            if comm(pid).is_some_and(|c| c.starts_with("containerd-shim")) {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if cmdline.split(|b| *b == 0).any(|a| a == sock.as_bytes()) {
                    v.push(pid);
                }
            }
        }
        v
    }

    fn close_stdin(&mut self) {
        self.child.close_stdin();
    }

    fn wait(&mut self, timeout: Duration) -> Result<ExitInfo, BackendError> {
        let r = self.child.wait(timeout);
        if let Some(s) = self.server.take() {
            let _ = super::run_tool(self.daemon.cli().args(["rm", "-f", &s]));
        }
        self.net.take();
        r
    }

    fn stop(&mut self) -> Result<ExitInfo, BackendError> {
        let _ = super::run_tool(self.daemon.cli().args(["kill", &self.name]));
        self.child.stop(Duration::from_secs(5))
    }

    fn phases(&self) -> Vec<(String, u64)> {
        let since = format!("{}.{:09}", self.launched_unix_ns / 1_000_000_000, self.launched_unix_ns % 1_000_000_000);
        let until = format!("{}", unix_ns() / 1_000_000_000 + 1);
        let text = super::run_tool(self.daemon.cli().args([
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            &format!("container={}", self.name),
            "--format",
            "{{.TimeNano}} {{.Action}} {{.Actor.ID}}",
        ]))
        .unwrap_or_default();
        let docker = parse_docker_events(&text);
        let mut events: Vec<(u128, String)> = docker.iter().map(|(t, a, _)| (*t, a.clone())).collect();
        if let (Some(id), Ok(ctr)) = (docker.first().map(|(_, _, id)| id.clone()), self.daemon.ctr.lock()) {
            events.extend(ctr.as_ref().map(|c| c.take(&id)).unwrap_or_default());
        }
        phases_from_events(self.launched_unix_ns, &events)
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
}

impl Drop for DockerInstance {
    fn drop(&mut self) {
        let clean = self.child.try_wait(Duration::ZERO).ok().flatten().is_some_and(|e| e.signal.is_none());
        if !clean {
            let _ = self.child.stop(Duration::from_millis(200));
            let _ = super::run_tool(self.daemon.cli().args(["rm", "-f", &self.name]));
        }
        if let Some(s) = self.server.take() {
            let _ = super::run_tool(self.daemon.cli().args(["rm", "-f", &s]));
        }
        self.net.take();
        self.scratch.take();
    }
}

#[cfg(test)]
mod tests {

    /// A dead run's daemon directory, its data root bind-mounted on itself as dockerd leaves
    /// it: gc unmounts and removes it, and leaves a live run's directory alone.
    #[test]
    fn gc_removes_a_dead_runs_daemon_directory_even_with_its_data_root_mounted() {
        if !cvbench_testkit::require_root("bind-mounting a daemon's data root") {
            return;
        }
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let gone = PathBuf::from(format!("/var/tmp/cvbench-docker-{dead}-c"));
        let live = PathBuf::from(format!("/var/tmp/cvbench-docker-{}-c", std::process::id()));
        for d in [&gone, &live] {
            std::fs::create_dir_all(d.join("data")).unwrap();
        }
        nix::mount::mount(
            Some(&gone.join("data")),
            &gone.join("data"),
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        let out = gc();
        let live_kept = live.exists();
        let _ = std::fs::remove_dir_all(&live);
        assert!(!gone.exists(), "{out:?}");
        assert!(out.iter().any(|l| l.contains(&gone.display().to_string())), "{out:?}");
        assert!(live_kept, "a live run's directory was removed: {out:?}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&gone.display().to_string()), "the data root is still mounted");
    }

    #[test]
    fn private_daemon_directories_name_their_run() {
        assert_eq!(daemon_owner("cvbench-docker-123"), Some(123));
        assert_eq!(daemon_owner("cvbench-docker-123-c"), Some(123));
        assert_eq!(daemon_owner("cvbd-77-c"), Some(77));
        for other in ["cvbench-docker-", "cvbench-docker-12x", "cvbench-docker-1-c-c", "cvbench-envid", "cvbd-"] {
            assert_eq!(daemon_owner(other), None, "{other}");
        }
    }

    use super::*;

    fn ev(list: &[(u128, &str)]) -> Vec<(u128, String)> {
        list.iter().map(|(t, e)| (*t, e.to_string())).collect()
    }

    #[test]
    fn phases_follow_the_milestone_order() {
        let e = ev(&[(1000, "create"), (1500, "start"), (1200, "/tasks/create"), (1700, "die"), (1750, "destroy")]);
        let p = phases_from_events(900, &e);
        let names: Vec<&str> = p.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "cli+dockerd create",
                "containerd→shim→runc create",
                "dockerd start reply",
                "workload until exit",
                "dockerd remove"
            ]
        );
        let v: Vec<u64> = p.iter().map(|(_, ns)| *ns).collect();
        assert_eq!(v, vec![100, 200, 300, 200, 50]);
    }

    #[test]
    fn ctr_event_lines_give_topic_and_container() {
        let l = r#"2026-11-29 13:39:29.1 +0000 UTC moby /tasks/create {"container_id":"abc123","bundle":"/x","pid":7}"#;
        assert_eq!(parse_ctr_event(l), Some(("/tasks/create".into(), "abc123".into())));
        let l = r#"2026-11-29 13:39:29.1 +0000 UTC moby /containers/create {"id":"abc123","image":"i"}"#;
        assert_eq!(parse_ctr_event(l), Some(("/containers/create".into(), "abc123".into())));
    }
}
