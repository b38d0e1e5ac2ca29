//! One swarm node: a private dockerd (own data root, exec root, pid file, socket and managed
//! containerd) started inside the node's network namespace and a private mount namespace, so the
//! mounts it makes vanish with it.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{run_bounded, teardown, SwarmError};

/// What a node does in the swarm.
pub use crate::record::SwarmRole as Role;

/// Where one node lives.
pub struct NodePlan<'a> {
    pub index: usize,
    pub role: Role,
    pub addr: Ipv4Addr,
    pub netns: PathBuf,
    /// Data root, logs (`/var/tmp/...`).
    pub data_dir: &'a Path,
    /// Exec root and socket (`/run/...`, short: unix socket paths are limited).
    pub run_dir: &'a Path,
    /// `host:port` of the swarm's registry, reached over plain HTTP.
    pub registry: String,
}

/// A running node. Its processes are killed by the swarm's teardown (by network namespace);
/// the node itself only reaps its dockerd.
pub struct Node {
    pub index: usize,
    pub role: Role,
    pub addr: Ipv4Addr,
    pub netns: PathBuf,
    sock: String,
    cfg_dir: PathBuf,
    log: PathBuf,
    /// Data root and exec root, kept for a restart.
    data: PathBuf,
    run: PathBuf,
    registry: String,
    child: Option<Child>,
    /// The swarm's id for this node, once joined.
    pub node_id: String,
}

/// The docker client matching Debian's dockerd.
pub(crate) fn docker_cli() -> PathBuf {
    let deb = PathBuf::from("/usr/bin/docker");
    if deb.is_file() {
        deb
    } else {
        PathBuf::from("docker")
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SwarmError + '_ {
    move |e| SwarmError::Io(path.to_path_buf(), e)
}

impl Node {
    /// Start the node's dockerd and wait (bounded) until it answers.
    pub fn start(p: &NodePlan, limit: Duration) -> Result<Node, SwarmError> {
        let data = p.data_dir.join(format!("n{}", p.index));
        let run = p.run_dir.join(format!("n{}", p.index));
        for d in [&data, &run] {
            std::fs::create_dir_all(d).map_err(io(d))?;
        }
        let mut node = Node {
            index: p.index,
            role: p.role,
            addr: p.addr,
            netns: p.netns.clone(),
            sock: format!("unix://{}/docker.sock", run.display()),
            cfg_dir: data.join("client"),
            log: data.join("dockerd.log"),
            data,
            run,
            registry: p.registry.clone(),
            child: None,
            node_id: String::new(),
        };
        node.spawn()?;
        node.wait_answering(limit)?;
        Ok(node)
    }

    /// Start the engine of a node whose engine was killed ([`Node::kill_engine`]) on the same
    /// data root: it comes back as the same swarm node. Waits (bounded) until it answers.
    pub fn restart(&mut self, limit: Duration) -> Result<(), SwarmError> {
        if self.child.is_some() {
            return Ok(());
        }
        self.spawn()?;
        self.wait_answering(limit)
    }

    fn spawn(&mut self) -> Result<(), SwarmError> {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).map_err(io(&self.log))?;
        let err = out.try_clone().map_err(io(&self.log))?;
        let mut cmd = Command::new("nsenter");
        // nsenter and unshare exec in place: the child's pid is dockerd's. The private mount
        // namespace (slave of ours) keeps the overlay and netns mounts dockerd makes off the host.
        cmd.arg(format!("--net={}", self.netns.display()))
            .args(["unshare", "--mount", "--propagation", "slave", "dockerd"])
            .arg("--data-root")
            .arg(self.data.join("data"))
            .arg("--exec-root")
            .arg(self.run.join("x"))
            .arg("-H")
            .arg(&self.sock)
            .arg("--pidfile")
            .arg(self.run.join("dockerd.pid"))
            .args(["--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none", "--log-level=error"])
            .arg("--insecure-registry")
            .arg(&self.registry)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Ctrl-C at the terminal must not reach it: the swarm's teardown stops it.
            .process_group(0);
        self.child = Some(cmd.spawn().map_err(|e| SwarmError::Spawn("dockerd".into(), e))?);
        Ok(())
    }

    fn wait_answering(&mut self, limit: Duration) -> Result<(), SwarmError> {
        let t = Instant::now();
        loop {
            if self.docker(&["version", "--format", "{{.Server.Version}}"], Duration::from_secs(5)).is_ok() {
                return Ok(());
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()).is_some();
            if exited || t.elapsed() > limit {
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail = text.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
                return Err(SwarmError::EngineDown {
                    node: self.label(),
                    detail: if exited {
                        format!("dockerd exited; log: {tail}")
                    } else {
                        format!("no answer in {limit:?}; log: {tail}")
                    },
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `manager-0`, `worker-3`.
    pub fn label(&self) -> String {
        format!("{}-{}", self.role.name(), self.index)
    }

    /// The engine's API address (`unix:///run/cvbench-…/docker.sock`).
    pub fn endpoint(&self) -> &str {
        &self.sock
    }

    /// A docker CLI command aimed at this node's engine.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(docker_cli());
        c.arg("-H").arg(&self.sock).env("DOCKER_CONFIG", &self.cfg_dir);
        c
    }

    /// Run the docker CLI against this node, bounded by `limit`.
    pub fn docker(&self, args: &[&str], limit: Duration) -> Result<String, SwarmError> {
        let mut c = self.cli();
        c.args(args);
        run_bounded(&mut c, limit)
    }

    /// dockerd's pid while it runs.
    pub fn dockerd_pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// The engine's processes: every process in the node's network namespace (dockerd, its
    /// containerd and the shims; the tasks have namespaces of their own).
    pub fn engine_pids(&self) -> Vec<i32> {
        teardown::pids_in_netns(&self.netns)
    }

    /// PSS (KiB) of the engine's processes.
    pub fn engine_pss_kib(&self) -> Option<u64> {
        crate::footprint::sample(&self.engine_pids()).pss_kib
    }

    /// SIGKILL this node's dockerd and containerd (by pid), the way a crashed node stops
    /// answering. The shims and tasks stay, as on a real node whose engine died.
    pub fn kill_engine(&mut self) -> Result<(), SwarmError> {
        let Some(mut child) = self.child.take() else {
            return Err(SwarmError::EngineDown { node: self.label(), detail: "already killed".into() });
        };
        let pid = child.id() as i32;
        let containerd: Vec<i32> = teardown::children(pid)
            .into_iter()
            .filter(|p| teardown::comm(*p).as_deref() == Some("containerd"))
            .collect();
        for p in containerd.iter().copied().chain(std::iter::once(pid)) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = child.wait();
        Ok(())
    }

    /// Stop dockerd (SIGTERM, then SIGKILL past `limit`) and reap it.
    pub fn stop(&mut self, limit: Duration) {
        let Some(mut child) = self.child.take() else { return };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t = Instant::now();
        while t.elapsed() < limit {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The swarm's teardown killed it already in the normal course; this only reaps.
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
