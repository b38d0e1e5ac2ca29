//! The `container` backend: the workload in a container of our own runtime (`cvbench-runtime`),
//! from the default image that holds only the workload binary. Per-phase timings, cgroup
//! memory/CPU figures and the OOM verdict come from the runtime's lifecycle handle.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Command, Stdio as ProcStdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cvbench_runtime::config::{ContainerConfig, IdMap, MountSpec, NetMode as RtNet, Resources, RootfsSource};
use cvbench_runtime::container::{Container, Stdio, PEER_IP};
use cvbench_runtime::image::{build, Store, DEFAULT_IMAGE};
use cvbench_runtime::{cleanup, namespaces, seccomp};

use super::{Backend, BackendError, BackendId, BackendOptions, Instance, LaunchSpec};
use crate::paths;
use crate::record::ExitInfo;
use crate::workload::SERVE_PORT;

const NAME: &str = BackendId::Container.name();
/// Host uid/gid that container root maps to when a user namespace is asked for.
pub const USERNS_HOST_BASE: u32 = 100_000;

/// Which of our container's set-ups: the default, or one of the two the lecture's claims are
/// checked against (memory with and without the memory controller; veth against host network).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Standard,
    /// No memory cgroup: the container is charged to no memory cgroup.
    NoMemcg,
    /// The host's network namespace; the peer server listens on 127.0.0.1.
    HostNet,
}

impl Variant {
    fn id(self) -> BackendId {
        match self {
            Variant::Standard => BackendId::Container,
            Variant::NoMemcg => BackendId::ContainerNomemcg,
            Variant::HostNet => BackendId::ContainerHostnet,
        }
    }
}

pub struct ContainerBackend {
    variant: Variant,
}

impl ContainerBackend {
    pub fn new() -> ContainerBackend {
        ContainerBackend::variant(Variant::Standard)
    }

    pub fn variant(variant: Variant) -> ContainerBackend {
        ContainerBackend { variant }
    }
}

impl Default for ContainerBackend {
    fn default() -> Self {
        ContainerBackend::new()
    }
}

fn launch_err(workload: &str, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> BackendError {
    BackendError::Launch { backend: NAME.into(), workload: workload.into(), source: e.into() }
}

fn other(what: &str, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> BackendError {
    BackendError::Other { backend: NAME.into(), what: what.into(), source: e.into() }
}

/// The workload binary (path, size, mtime) the default image was last checked against, so
/// repeated launches skip re-hashing it.
static IMAGE_CHECKED: Mutex<Option<(PathBuf, u64, std::time::SystemTime)>> = Mutex::new(None);

fn ensure_image(store: &Store, bin: &std::path::Path) -> Result<(), BackendError> {
    let meta = std::fs::metadata(bin).map_err(|e| launch_err("image", e))?;
    let key = (bin.to_path_buf(), meta.len(), meta.modified().map_err(|e| launch_err("image", e))?);
    let mut checked = IMAGE_CHECKED.lock().unwrap_or_else(|p| p.into_inner());
    if checked.as_ref() == Some(&key) {
        return Ok(());
    }
    build::ensure_default_image(store, bin).map_err(|e| launch_err("image", e))?;
    *checked = Some(key);
    Ok(())
}

/// Translate the harness options into the runtime's config.
fn config(
    spec: &LaunchSpec,
    opts: &BackendOptions,
    args: Vec<String>,
    variant: Variant,
) -> Result<ContainerConfig, BackendError> {
    let mut cfg = ContainerConfig {
        rootfs: RootfsSource::Image(opts.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into())),
        args,
        privileged: opts.privileged,
        seccomp_unconfined: opts.seccomp_unconfined,
        net: opts.net.into(),
        resources: Resources {
            memory_bytes: opts.memory_limit,
            cpu_quota_us: opts.cpu_quota_pct.map(|p| i64::from(p) * 1000),
            cpu_period_us: opts.cpu_quota_pct.map(|_| 100_000),
            pids_max: opts.pids_limit,
            ..Default::default()
        },
        cgroup_parent: opts.cgroup_parent.clone(),
        ..Default::default()
    };
    if let Some(list) = &opts.namespaces {
        cfg.namespaces = namespaces::parse_list(&list.join(",")).map_err(|e| launch_err(spec.workload.name(), e))?;
    }
    if cfg.has(namespaces::Namespace::User) {
        // Container root maps to an unprivileged host range, as rootless setups do.
        let map = IdMap { container_id: 0, host_id: USERNS_HOST_BASE, size: 65_536 };
        cfg.uid_map = vec![map];
        cfg.gid_map = vec![map];
    }
    match variant {
        Variant::Standard => {}
        Variant::NoMemcg => cfg.resources.no_memory_controller = true,
        Variant::HostNet => {
            // Every other namespace and confinement stays; only the network is the host's.
            cfg.namespaces.retain(|n| *n != namespaces::Namespace::Net);
            cfg.net = RtNet::Host;
            cfg.host_net_allowed = true;
        }
    }
    if spec.needs().network && variant != Variant::HostNet {
        cfg.net = RtNet::Veth;
    }
    Ok(cfg)
}

struct ContainerInstance {
    c: Container,
    stdin: Option<OwnedFd>,
    args: Vec<String>,
    disk: Option<tempfile::TempDir>,
    pre_phases: Vec<(String, u64)>,
    exit: Option<ExitInfo>,
    user_ns: bool,
    net_note: Option<String>,
    /// The peer server of a host-network container (on 127.0.0.1 in the root namespace).
    host_server: Option<super::process::ChildProcess>,
    variant: Variant,
}

impl Backend for ContainerBackend {
    fn id(&self) -> BackendId {
        self.variant.id()
    }

    fn check(&self) -> Result<(), String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("the container runtime needs root".into());
        }
        let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !fs.contains("overlay") {
            return Err("overlayfs is not available".into());
        }
        paths::workload_binary().map(|_| ()).map_err(|e| e.to_string())
    }

    fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn Instance>, BackendError> {
        let t0 = Instant::now();
        cleanup::install_signal_handlers();
        let bin = paths::workload_binary().map_err(|e| launch_err(spec.workload.name(), e))?;
        let store = Store::open(std::path::Path::new(cvbench_runtime::DEFAULT_STATE_DIR))
            .map_err(|e| launch_err(spec.workload.name(), e))?;
        ensure_image(&store, &bin)?;
        let image_ns = t0.elapsed().as_nanos() as u64;

        let mut args = spec.args.clone();
        let host_net = self.variant == Variant::HostNet;
        let net = spec.needs().network && !host_net;
        let mut host_server = None;
        if net {
            args.extend(["--peer".to_string(), format!("{PEER_IP}:{SERVE_PORT}")]);
        } else if spec.needs().network {
            let (server, peer) = start_loopback_server(&bin)?;
            args.extend(["--peer".to_string(), peer]);
            host_server = Some(server);
        }
        let mut cfg = config(&spec, &spec.options, Vec::new(), self.variant)?;
        let mut disk = None;
        if spec.needs().disk {
            // The same storage native uses: a directory on the host's /var/tmp, bind-mounted.
            let d = tempfile::Builder::new()
                .prefix(&format!("cvbench-{}-disk-", std::process::id()))
                .tempdir_in("/var/tmp")
                .map_err(|e| launch_err("disk", e))?;
            cfg.mounts.push(MountSpec {
                kind: "bind".into(),
                source: d.path().to_path_buf(),
                destination: "/data".into(),
                readonly: false,
                options: Vec::new(),
            });
            args.extend(["--dir".to_string(), "/data".to_string()]);
            disk = Some(d);
        }
        cfg.args = std::iter::once("/cvbench-workload".to_string())
            .chain(std::iter::once(spec.workload.to_string()))
            .chain(args.iter().cloned())
            .collect();

        let (stdin_child, stdin_keep) = if spec.stdin_pipe {
            let (r, w) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| launch_err(spec.workload.name(), e))?;
            (r, Some(w))
        } else {
            let null = std::fs::File::open("/dev/null").map_err(|e| launch_err(spec.workload.name(), e))?;
            (OwnedFd::from(null), None)
        };
        let stdio = Stdio { stdin: Some(stdin_child), stdout: Some(spec.stdout), stderr: Some(spec.stderr) };
        let c = if net {
            let mut c = Container::create(&cfg, stdio).map_err(|e| launch_err(spec.workload.name(), e))?;
            start_server(&mut c, &bin)?;
            c.start().map_err(|e| launch_err(spec.workload.name(), e))?;
            c
        } else {
            Container::create_started(&cfg, stdio).map_err(|e| launch_err(spec.workload.name(), e))?
        };
        let effective = match c.veth() {
            Some(v) => args.iter().map(|a| a.replace(PEER_IP, &v.peer_ip.to_string())).collect(),
            None => args,
        };
        // Noted now: the link is gone once the container is deleted.
        let net_note = match (c.veth(), &host_server) {
            (Some(_), _) => Some(
                "net: veth pair on a /30 between a server namespace the run created and the container's namespace"
                    .to_string(),
            ),
            (None, Some(_)) => Some(
                "net: the host's network namespace, no veth: client and peer server on 127.0.0.1 (loopback)".into(),
            ),
            (None, None) => None,
        };
        Ok(Box::new(ContainerInstance {
            c,
            stdin: stdin_keep,
            args: effective,
            disk,
            pre_phases: vec![("image_check".into(), image_ns)],
            exit: None,
            user_ns: cfg.has(namespaces::Namespace::User),
            net_note,
            host_server,
            variant: self.variant,
        }))
    }
}

/// Start `cvbench-workload serve` on 127.0.0.1 in the root network namespace for a host-network
/// container: a free port the kernel picks (other runs may use the fixed one), loopback only.
fn start_loopback_server(bin: &std::path::Path) -> Result<(super::process::ChildProcess, String), BackendError> {
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| other("picking a loopback port", e))?
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", &listen, "--max-conns", "1"]);
    let server = super::process::spawn_server(NAME, cmd)?;
    Ok((server, listen))
}

/// Start `cvbench-workload serve` in the run's peer network namespace and wait for READY.
fn start_server(c: &mut Container, bin: &std::path::Path) -> Result<(), BackendError> {
    let v = c.veth_mut().ok_or_else(|| other("starting the peer server", "no veth link"))?;
    let listen = format!("{}:{SERVE_PORT}", v.peer_ip);
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", &listen, "--max-conns", "1"])
        .stdin(ProcStdio::null())
        .stdout(ProcStdio::piped())
        .stderr(ProcStdio::null());
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| other("serve pipe", e))?;
    cmd.stdout(ProcStdio::from(wr));
    // Launched from the thread pinned to the instance's CPU: the server runs on the harness's.
    super::process::pin_helper(&mut cmd);
    v.spawn_in_peer(cmd).map_err(|e| other("starting the peer server", e))?;
    let mut line = String::new();
    BufReader::new(std::fs::File::from(rd)).read_line(&mut line).map_err(|e| other("reading serve READY", e))?;
    if !crate::record::is_ready_line(&line) {
        return Err(other("starting the peer server", format!("serve on {listen} printed {line:?}")));
    }
    Ok(())
}

fn exit_info(e: cvbench_runtime::ExitStatus) -> ExitInfo {
    ExitInfo { code: e.code, signal: e.signal, oom_killed: e.oom_killed }
}

impl ContainerInstance {
    fn finish(&mut self, e: cvbench_runtime::ExitStatus) -> Result<ExitInfo, BackendError> {
        if let Some(mut s) = self.host_server.take() {
            let _ = s.stop(Duration::from_secs(2));
        }
        let info = exit_info(e);
        self.exit = Some(info);
        self.c.delete().map_err(|e| other("removing the container", e))?;
        Ok(info)
    }
}

impl Instance for ContainerInstance {
    fn pids(&self) -> Vec<i32> {
        self.c.pids()
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn effective_args(&self) -> Option<Vec<String>> {
        Some(self.args.clone())
    }

    fn wait(&mut self, timeout: Duration) -> Result<ExitInfo, BackendError> {
        if let Some(e) = self.exit {
            return Ok(e);
        }
        match self.c.wait(Some(timeout)) {
            Ok(e) => self.finish(e),
            Err(cvbench_runtime::Error::Timeout(_)) => {
                let _ = self.c.delete();
                Err(other(
                    &format!("waiting for container {}", self.c.id()),
                    format!("timed out after {timeout:?}; killed"),
                ))
            }
            Err(e) => {
                let _ = self.c.delete();
                Err(other("waiting for the container", e))
            }
        }
    }

    fn stop(&mut self) -> Result<ExitInfo, BackendError> {
        if let Some(e) = self.exit {
            return Ok(e);
        }
        self.c.kill(libc::SIGTERM).map_err(|e| other("SIGTERM", e))?;
        let e = match self.c.wait(Some(Duration::from_secs(2))) {
            Ok(e) => e,
            Err(cvbench_runtime::Error::Timeout(_)) => {
                self.c.kill(libc::SIGKILL).map_err(|e| other("SIGKILL", e))?;
                self.c.wait(Some(Duration::from_secs(10))).map_err(|e| other("waiting after SIGKILL", e))?
            }
            Err(e) => return Err(other("stopping the container", e)),
        };
        self.finish(e)
    }

    fn phases(&self) -> Vec<(String, u64)> {
        self.pre_phases.iter().cloned().chain(self.c.phases().iter().cloned()).collect()
    }

    fn extra(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        if let Ok(s) = self.c.stats() {
            if let Some(v) = s.memory_peak_bytes {
                m.insert("cgroup_memory_peak_bytes".into(), v as f64);
            }
            if let Some(v) = s.memory_usage_bytes {
                m.insert("cgroup_memory_usage_bytes".into(), v as f64);
            }
            if let Some(v) = s.cpu_usage_ns {
                m.insert("cgroup_cpu_usage_ns".into(), v as f64);
            }
            m.insert("cgroup_oom_kills".into(), s.oom_kills as f64);
        }
        m
    }

    fn notes(&self) -> Vec<String> {
        let mut n: Vec<String> = self.c.notes().to_vec();
        n.push("library call: the harness runs cvbench-runtime's Container API in-process (the exec'd CLI on the runc/crun bundle is the `cvbench-runtime` row)".into());
        n.push(format!("cgroup {}", self.c.cgroup_version()));
        let (blocked, total) = seccomp::blocked_count();
        n.push(format!("default seccomp profile blocks {blocked} of {total} syscalls (unless unconfined/privileged)"));
        if let Some(d) = &self.disk {
            n.push(format!("disk: host /var/tmp directory {} bind-mounted at /data", d.path().display()));
        }
        if !self.c.state().cgroups.is_empty() && self.user_ns {
            n.push(format!("user namespace: uid/gid 0-65535 mapped to host {USERNS_HOST_BASE}-"));
        }
        n.extend(self.net_note.clone());
        if self.variant == Variant::NoMemcg {
            n.push("container-nomemcg: no memory cgroup; the container joined the root memory cgroup, which the kernel does not charge".into());
        }
        n
    }
}
