//! The one network path of the net workloads for native and the peer
//! container backends: a veth pair on its own /30 between a server network
//! namespace the run creates (where `cvbench-workload serve` listens) and
//! the client's namespace (one more the run creates, or an existing
//! process's, such as a docker container's). Our own container runtime
//! builds the same shape itself (`cvbench_runtime::network::Veth`), and
//! the VMs put their tap into such a server namespace, so no ratio measures
//! "loopback vs veth". Nothing here touches the root namespace's links.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cvbench_runtime::network::{self, Slot, VethEnd};

use super::process::{spawn_server, ChildProcess};
use super::BackendError;
use crate::workload::SERVE_PORT;

#[derive(Debug, thiserror::Error)]
pub enum NetPathError {
    #[error(transparent)]
    Network(#[from] network::Error),
    #[error("opening network namespace {0}")]
    Open(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Server(#[from] Box<BackendError>),
}

/// Where the client end goes.
pub enum Client {
    /// A namespace the run creates (native, runc, crun).
    NewNamespace,
    /// The namespace of this running process (a docker container's).
    Process(i32),
}

/// A server namespace with the server running, and a veth pair to the client.
pub struct NetPath {
    server_ns: String,
    client_ns: Option<String>,
    server: Option<ChildProcess>,
    pub server_ip: std::net::Ipv4Addr,
    pub client_ip: std::net::Ipv4Addr,
    _slot: Slot,
}

fn name(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("cvbench-{}-{what}{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn open(path: &Path) -> Result<File, NetPathError> {
    File::open(path).map_err(|e| NetPathError::Open(path.to_path_buf(), e))
}

/// `cmd` will run in the network namespace open at `ns`.
pub fn enter_before_exec(cmd: &mut Command, ns: File) {
    // SAFETY: the hook runs between fork and exec and only calls setns(2),
    // which is async-signal-safe; `ns` is owned by the closure.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
        });
    }
}

impl NetPath {
    /// Claim a /30, create the server namespace (and the client's, for
    /// [`Client::NewNamespace`]), link them with a veth pair, address and
    /// raise both ends, and start `serve` in the server namespace.
    pub fn start(workload_bin: &Path, backend: &'static str, client: Client) -> Result<NetPath, NetPathError> {
        let slot = Slot::claim(Path::new(cvbench_runtime::DEFAULT_STATE_DIR))?;
        let (server_ip, client_ip) = network::slot_addrs(slot.index);
        let server_ns = name("srv");
        let mut path = NetPath { server_ns, client_ns: None, server: None, server_ip, client_ip, _slot: slot };
        let sfile = open(&network::create_netns(&path.server_ns)?)?;
        let (sif, cif) = (format!("cvb{}s", path._slot.index), format!("cvb{}c", path._slot.index));
        match client {
            Client::NewNamespace => {
                let cname = name("cli");
                let cpath = network::create_netns(&cname)?;
                path.client_ns = Some(cname);
                let cfile = open(&cpath)?;
                network::veth_between(&sif, &sfile, &cif, VethEnd::Netns(&cfile))?;
                network::configure_in(&cfile, &cif, client_ip, 30)?;
            }
            Client::Process(pid) => {
                network::veth_between(&sif, &sfile, &cif, VethEnd::Pid(pid as u32))?;
                let cfile = open(&PathBuf::from(format!("/proc/{pid}/ns/net")))?;
                network::configure_in(&cfile, &cif, client_ip, 30)?;
            }
        }
        network::configure_in(&sfile, &sif, server_ip, 30)?;
        let mut cmd = Command::new(workload_bin);
        cmd.args(["serve", "--listen", &format!("{server_ip}:{SERVE_PORT}"), "--max-conns", "1"]);
        enter_before_exec(&mut cmd, sfile);
        path.server = Some(spawn_server(backend, cmd).map_err(Box::new)?);
        Ok(path)
    }

    /// `--peer` for the workload.
    pub fn peer(&self) -> String {
        format!("{}:{SERVE_PORT}", self.server_ip)
    }

    /// The client namespace the run created, if it made one.
    pub fn client_netns(&self) -> Option<PathBuf> {
        self.client_ns.as_ref().map(|n| Path::new(network::NETNS_DIR).join(n))
    }

    /// The client namespace, opened (for `setns` before exec).
    pub fn open_client(&self) -> Result<Option<File>, NetPathError> {
        self.client_netns().map(|p| open(&p)).transpose()
    }

    /// The record's note: the path this run took.
    pub fn note(&self) -> String {
        format!(
            "net: veth pair on a /30 between a server namespace the run created and {}",
            if self.client_ns.is_some() { "a client namespace the run created" } else { "the container's namespace" }
        )
    }

    /// Stop the server (the client has finished).
    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.stop(Duration::from_secs(2));
        }
    }
}

impl Drop for NetPath {
    fn drop(&mut self) {
        self.stop();
        // Deleting the namespaces destroys the veth pair.
        let _ = network::delete_netns(&self.server_ns);
        if let Some(c) = &self.client_ns {
            let _ = network::delete_netns(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_serves_over_the_veth_and_leaves_nothing_behind() {
        if !crate::env::is_root() {
            eprintln!("SKIPPED: creating network namespaces needs root");
            return;
        }
        let bin = crate::paths::workload_binary().unwrap();
        let p = NetPath::start(&bin, "native", Client::NewNamespace).unwrap();
        let (server, client) = (Path::new(network::NETNS_DIR).join(&p.server_ns), p.client_netns().unwrap());
        assert!(server.exists() && client.exists());
        // From the client namespace the server answers; from the root one it is unreachable.
        let ns = p.open_client().unwrap().unwrap();
        let addr = std::net::SocketAddr::from((p.server_ip, SERVE_PORT));
        let reached = std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
            })
            .join()
            .unwrap()
        });
        assert!(reached);
        drop(p);
        assert!(!server.exists() && !client.exists());
    }
}
