//! A Docker Swarm made by the run: M managers and W workers, each a private dockerd in a network
//! namespace of its own, joined by a bridge in one more namespace on a private /24, with a
//! registry on that bridge holding the workload image. Nothing is routed to the root namespace.
//! Dropping the [`Swarm`] (or Ctrl-C, or `cvbench gc` after a crash) removes all of it.

pub mod cluster;
pub mod net;
pub mod node;
mod registry;
pub mod remote;
pub mod teardown;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use cluster::{NodeState, Task, TaskCounts};
pub use node::{Node, Role};

use net::Fabric;
use registry::SwarmRegistry;
use teardown::Leftovers;

/// Where node data roots go (`/var/tmp/cvbench-<pid>-sw<K>/`).
pub const DATA_PARENT: &str = "/var/tmp";
/// Where node exec roots and sockets go (`/run/cvbench-<pid>-sw<K>/`).
pub const RUN_PARENT: &str = "/run";
/// The workload image's repository in the swarm's registry.
pub const REPO: &str = "cvbench-workload";

/// Errors making, using or removing a swarm.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("bad swarm config: {0}")]
    Config(String),
    #[error("{0} is not installed")]
    Missing(String),
    #[error("I/O error on {0}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("cannot start {0}")]
    Spawn(String, #[source] std::io::Error),
    #[error("network namespace {0}")]
    Netns(String, #[source] cvbench_runtime::network::Error),
    #[error("{what}: {detail}")]
    Net { what: String, detail: String },
    #[error("the swarm subnet {subnet} overlaps the host route {route}")]
    SubnetInUse { subnet: String, route: String },
    #[error("the swarm registry on {addr} did not answer ({detail})")]
    RegistryDown { addr: SocketAddr, detail: String },
    #[error("the engine of {node} is not up: {detail}")]
    EngineDown { node: String, detail: String },
    #[error("`{command}` failed: {detail}")]
    Docker { command: String, detail: String },
    #[error("`{command}` did not finish within {secs} s")]
    Timeout { command: String, secs: u64 },
    #[error("{node} did not join the swarm: {detail}")]
    NotJoined { node: String, detail: String },
    #[error("service {service} did not reach {want} running tasks within {secs} s; tasks: {states}")]
    NotConverged { service: String, want: usize, secs: u64, states: String },
    #[error("{what} did not happen within {secs} s; {detail}")]
    Wait { what: String, secs: u64, detail: String },
    #[error("{endpoint} is not a swarm manager ({state}); name a manager's docker API address")]
    NotManager { endpoint: String, state: String },
    #[error("unreadable answer from `{command}`: {detail}")]
    Parse { command: String, detail: String },
}

/// How big a swarm to make and how fast it notices a dead node.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmConfig {
    pub managers: usize,
    pub workers: usize,
    /// The dispatcher heartbeat (s): a node is marked down a few heartbeats after its engine dies.
    pub heartbeat_s: u32,
    /// Bound on each node's engine start and join (s).
    pub start_timeout_s: u64,
}

impl Default for SwarmConfig {
    fn default() -> SwarmConfig {
        SwarmConfig { managers: 3, workers: 2, heartbeat_s: 1, start_timeout_s: 90 }
    }
}

impl SwarmConfig {
    pub fn validate(&self) -> Result<(), SwarmError> {
        if !(1..=7).contains(&self.managers) {
            return Err(SwarmError::Config(format!("managers must be 1..=7, not {}", self.managers)));
        }
        if self.workers > 16 {
            return Err(SwarmError::Config(format!("workers must be 0..=16, not {}", self.workers)));
        }
        if !(1..=30).contains(&self.heartbeat_s) {
            return Err(SwarmError::Config(format!("heartbeat must be 1..=30 s, not {}", self.heartbeat_s)));
        }
        Ok(())
    }
}

/// What this host lacks to make a swarm, from host facts only (files and ids, no probing):
/// empty when it can. Each entry says how to get it.
pub fn host_missing() -> Vec<String> {
    let mut v = Vec::new();
    if !crate::env::is_root() {
        v.push("root (private dockerds and network namespaces)".to_string());
    }
    for (tool, pkg) in [("dockerd", "docker.io"), ("nsenter", "util-linux"), ("unshare", "util-linux")] {
        if !crate::backend::peers::on_path(tool) {
            v.push(format!("{tool} (apt-get install {pkg})"));
        }
    }
    if !Path::new(cvbench_registry::server::REGISTRY_BIN).is_file() {
        v.push(format!("{} (apt-get install docker-registry)", cvbench_registry::server::REGISTRY_BIN));
    }
    v
}

/// A command's arguments as errors show them: without the engine's socket (`-H unix://…`) and
/// with a join token replaced (it admits a node to the swarm).
fn shown_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-H" => {
                it.next();
            }
            "--token" => {
                it.next();
                out.extend(["--token".to_string(), "<token>".to_string()]);
            }
            _ => out.push(a.clone()),
        }
    }
    out
}

/// Run `cmd` to completion within `limit` (killed by pid past it); stdout, or stderr as the error.
pub(crate) fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<String, SwarmError> {
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let command = format!(
        "{} {}",
        Path::new(cmd.get_program()).file_name().unwrap_or_default().to_string_lossy(),
        shown_args(&args).join(" ")
    );
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SwarmError::Spawn(command.clone(), e))?;
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = pipe(child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let err = pipe(child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| SwarmError::Spawn(command.clone(), e))? {
            break s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SwarmError::Timeout { command, secs: limit.as_secs() });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    if status.success() {
        Ok(out)
    } else {
        Err(SwarmError::Docker { command, detail: format!("{status}: {}", err.trim()) })
    }
}

/// A running swarm.
pub struct Swarm {
    pub tag: String,
    // Order matters for Drop: nodes and registry are reaped before the namespaces go.
    nodes: Vec<Node>,
    registry: Option<SwarmRegistry>,
    fabric: Option<Fabric>,
    leftovers: Arc<Mutex<Option<Leftovers>>>,
    image: String,
}

static NEXT: AtomicU8 = AtomicU8::new(0);

impl Swarm {
    /// Make the swarm: namespaces and bridge, the registry, every engine, the image pushed, the
    /// swarm initialised and joined. `progress` hears each step.
    pub fn create(cfg: &SwarmConfig, progress: &dyn Fn(&str)) -> Result<Swarm, SwarmError> {
        cfg.validate()?;
        if let Some(m) = host_missing().into_iter().next() {
            return Err(SwarmError::Missing(m));
        }
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("cvbench-{}-sw{k}", std::process::id());
        let data_dir = Path::new(DATA_PARENT).join(&tag);
        let run_dir = Path::new(RUN_PARENT).join(&tag);
        let n = cfg.managers + cfg.workers;
        let leftovers = Leftovers {
            netns: std::iter::once(net::bridge_ns_name(&tag))
                .chain((0..n).map(|i| net::node_ns_name(&tag, i)))
                .collect(),
            dirs: vec![run_dir.clone(), data_dir.clone()],
        };
        let leftovers = Arc::new(Mutex::new(Some(leftovers)));
        {
            // Ctrl-C must not leave the swarm behind: the process's signal owner runs this.
            let l = Arc::downgrade(&leftovers);
            cvbench_signals::on_interrupt(move || {
                if let Some(l) = l.upgrade().and_then(|m| m.lock().ok().and_then(|mut g| g.take())) {
                    teardown::remove(&l);
                }
            });
        }
        let mut s = Swarm {
            tag: tag.clone(),
            nodes: Vec::new(),
            registry: None,
            fabric: None,
            leftovers,
            image: String::new(),
        };
        progress(&format!("swarm {tag}: namespaces and bridge for {n} nodes"));
        let fabric = Fabric::create(&tag, k, n)?;
        let (gateway, bridge_ns) = (fabric.gateway(), fabric.bridge_ns_path());
        let places: Vec<_> = (0..n).map(|i| (fabric.node_addr(i), fabric.node_ns_path(i))).collect();
        // Held by the swarm from here: a failure below tears down processes before namespaces.
        s.fabric = Some(fabric);
        let limit = Duration::from_secs(cfg.start_timeout_s);
        let reg_addr = SocketAddr::from((gateway, registry::PORT));
        progress(&format!("swarm {tag}: registry on {reg_addr}"));
        s.registry = Some(SwarmRegistry::start(&bridge_ns, reg_addr, &data_dir.join("registry"), limit)?);
        for (i, (addr, netns)) in places.into_iter().enumerate() {
            let role = if i < cfg.managers { Role::Manager } else { Role::Worker };
            progress(&format!("swarm {tag}: engine {}-{i} at {addr}", role.name()));
            let plan = node::NodePlan {
                index: i,
                role,
                addr,
                netns,
                data_dir: &data_dir,
                run_dir: &run_dir,
                registry: reg_addr.to_string(),
            };
            s.nodes.push(Node::start(&plan, limit)?);
        }
        progress(&format!("swarm {tag}: workload image pushed to {reg_addr}"));
        s.image = s.push_workload(&data_dir, "v1")?;
        progress(&format!("swarm {tag}: init and join"));
        cluster::form(&mut s.nodes, cfg.heartbeat_s, limit)?;
        Ok(s)
    }

    /// Import the workload image on node 0, tag it for the swarm registry, push it. Returns the
    /// reference.
    fn push_workload(&self, data_dir: &Path, tag: &str) -> Result<String, SwarmError> {
        let rootfs = data_dir.join("rootfs");
        let bin = crate::paths::workload_binary().map_err(|e| SwarmError::Config(e.to_string()))?;
        crate::backend::peers::oci::make_rootfs(&rootfs, &bin)
            .map_err(|e| SwarmError::Config(format!("workload rootfs: {e}")))?;
        let tar = data_dir.join("image.tar");
        run_bounded(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg("."), Duration::from_secs(60))?;
        let reference = self.reference(tag);
        let n0 = &self.nodes[0];
        n0.docker(&["import", &tar.to_string_lossy(), &reference], Duration::from_secs(60))?;
        n0.docker(&["push", &reference], Duration::from_secs(60))?;
        Ok(reference)
    }

    /// `<registry>/cvbench-workload:<tag>`.
    pub fn reference(&self, tag: &str) -> String {
        let addr = self.registry.as_ref().map(|r| r.addr().to_string()).unwrap_or_default();
        format!("{addr}/{REPO}:{tag}")
    }

    /// Push the workload under another tag (a rolling update's new image): tags node 0's copy.
    pub fn push_tag(&self, tag: &str) -> Result<String, SwarmError> {
        let reference = self.reference(tag);
        let n0 = &self.nodes[0];
        n0.docker(&["tag", &self.image, &reference], Duration::from_secs(30))?;
        n0.docker(&["push", &reference], Duration::from_secs(60))?;
        Ok(reference)
    }

    /// The workload image as pushed at creation.
    pub fn image(&self) -> &str {
        &self.image
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node_mut(&mut self, i: usize) -> Option<&mut Node> {
        self.nodes.get_mut(i)
    }

    /// A manager whose engine runs, the leader first when known.
    pub fn manager(&self) -> Result<&Node, SwarmError> {
        let live = |n: &&Node| n.role == Role::Manager && n.dockerd_pid().is_some();
        let leader = cluster::leader(self).ok().flatten();
        leader.and_then(|i| self.nodes.get(i)).filter(live).or_else(|| self.nodes.iter().find(live)).ok_or_else(|| {
            SwarmError::EngineDown { node: "every manager".into(), detail: "no manager engine is running".into() }
        })
    }

    /// Remove everything; returns what was removed (and what failed). Idempotent.
    pub fn teardown(&mut self) -> Vec<String> {
        let Some(l) = self.leftovers.lock().ok().and_then(|mut g| g.take()) else { return Vec::new() };
        // A polite stop first lets dockerd leave nothing mounted; then everything by namespace.
        for n in &mut self.nodes {
            n.stop(Duration::from_secs(5));
        }
        self.registry.take();
        self.nodes.clear();
        let out = teardown::remove(&l);
        // The namespaces are gone already; forget them.
        if let Some(mut f) = self.fabric.take() {
            f.remove();
        }
        out
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        for line in self.teardown() {
            if line.contains(": ") {
                eprintln!("cvbench: swarm: {line}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_show_no_socket_and_no_join_token() {
        let args: Vec<String> =
            ["-H", "unix:///run/x.sock", "swarm", "join", "--token", "SWMTKN-1-secret", "10.231.0.10:2377"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        assert_eq!(shown_args(&args).join(" "), "swarm join --token <token> 10.231.0.10:2377");
    }

    #[test]
    fn configs_outside_the_bounds_are_refused() {
        for c in [
            SwarmConfig { managers: 0, ..SwarmConfig::default() },
            SwarmConfig { managers: 8, ..SwarmConfig::default() },
            SwarmConfig { workers: 17, ..SwarmConfig::default() },
            SwarmConfig { heartbeat_s: 0, ..SwarmConfig::default() },
        ] {
            assert!(matches!(c.validate(), Err(SwarmError::Config(_))), "{c:?}");
        }
        assert!(SwarmConfig::default().validate().is_ok());
    }
}
