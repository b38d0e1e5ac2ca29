//! Container networking: `none` (own netns, lo down), `loopback` (lo up), `veth` (lo up plus a
//! veth pair to a peer network namespace this run creates, never the root namespace; one /30
//! per container from 10.200.0.0/16, claimed with an exclusive mkdir; nothing routed).

use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Errors setting up or tearing down networking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no free /30 left under 10.200.0.0/16 in {0}")]
    NoFreeSubnet(PathBuf),
    #[error("cannot claim a subnet slot in {path}")]
    Slot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`ip {args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("cannot run `ip` (iproute2)")]
    IpMissing(#[source] std::io::Error),
    #[error("cannot open network namespace {path}")]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {what} in the peer namespace {netns}")]
    Spawn {
        what: String,
        netns: String,
        #[source]
        source: std::io::Error,
    },
}

/// Number of /30 subnets in 10.200.0.0/16.
const SLOTS: u32 = 16_384;

/// Name of the veth end inside the container.
pub const CONTAINER_IF: &str = "eth0";

/// The addresses of slot `i`: (peer, container), netmask /30.
pub fn slot_addrs(i: u32) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(Ipv4Addr::new(10, 200, 0, 0)) + 4 * i;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

pub const NETMASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 252);

fn ip(args: &[&str]) -> Result<(), Error> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().map_err(Error::IpMissing)?;
    if !out.status.success() {
        return Err(Error::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// A claimed /30: the slot directory holds our pid so gc can tell stale claims.
#[derive(Debug)]
pub struct Slot {
    pub index: u32,
    path: PathBuf,
}

impl Slot {
    /// Claim the first free slot under `<state>/net`. Starts the search at a pid-derived
    /// offset so parallel runs rarely contend.
    pub fn claim(state_dir: &Path) -> Result<Slot, Error> {
        let dir = state_dir.join("net");
        fs::create_dir_all(&dir).map_err(|source| Error::Slot { path: dir.clone(), source })?;
        let start = std::process::id() % SLOTS;
        for k in 0..SLOTS {
            let index = (start + k) % SLOTS;
            let path = dir.join(index.to_string());
            match fs::create_dir(&path) {
                Ok(()) => {
                    let _ = fs::write(path.join("owner"), std::process::id().to_string());
                    return Ok(Slot { index, path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(Error::Slot { path, source }),
            }
        }
        Err(Error::NoFreeSubnet(dir))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A veth link between a container and its peer namespace.
#[derive(Debug)]
pub struct Veth {
    /// Name under /run/netns (`cvbench-<pid>-<n>`).
    pub netns: String,
    /// The veth end in the peer namespace.
    pub peer_if: String,
    pub peer_ip: Ipv4Addr,
    pub container_ip: Ipv4Addr,
    slot: Option<Slot>,
    servers: Vec<Child>,
    linked: bool,
}

impl Veth {
    /// Claim a subnet and create the peer namespace (before the container exists).
    pub fn prepare(state_dir: &Path, name: &str) -> Result<Veth, Error> {
        let slot = Slot::claim(state_dir)?;
        let (peer_ip, container_ip) = slot_addrs(slot.index);
        let v = Veth {
            netns: name.to_string(),
            peer_if: format!("cvb{}p", slot.index),
            peer_ip,
            container_ip,
            slot: Some(slot),
            servers: Vec::new(),
            linked: false,
        };
        ip(&["netns", "add", &v.netns])?;
        Ok(v)
    }

    /// The subnet claim directory (recorded in the state file for gc).
    pub fn slot_path(&self) -> Option<PathBuf> {
        self.slot.as_ref().map(|s| s.path().to_path_buf())
    }

    /// Path of the peer namespace.
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }

    /// Create the pair with its ends directly in the peer namespace and in `pid`'s namespace
    /// (the root namespace never holds either end), then address and raise the peer end.
    /// The container end is configured by the container itself.
    pub fn link(&mut self, pid: i32) -> Result<(), Error> {
        let pid = pid.to_string();
        ip(&[
            "link",
            "add",
            &self.peer_if,
            "netns",
            &self.netns,
            "type",
            "veth",
            "peer",
            "name",
            CONTAINER_IF,
            "netns",
            &pid,
        ])?;
        self.linked = true;
        let addr = format!("{}/30", self.peer_ip);
        ip(&["-n", &self.netns, "addr", "add", &addr, "dev", &self.peer_if])?;
        ip(&["-n", &self.netns, "link", "set", &self.peer_if, "up"])?;
        ip(&["-n", &self.netns, "link", "set", "lo", "up"])
    }

    /// Start `cmd` inside the peer namespace; it is killed on teardown.
    pub fn spawn_in_peer(&mut self, mut cmd: Command) -> Result<u32, Error> {
        let path = self.netns_path();
        let ns = fs::File::open(&path).map_err(|source| Error::OpenNetns { path: path.clone(), source })?;
        let what = format!("{:?}", cmd.get_program());
        // SAFETY: the hook runs between fork and exec and only calls setns(2), which is
        // async-signal-safe; `ns` stays open for the hook's lifetime.
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            })
        };
        let child = cmd.spawn().map_err(|source| Error::Spawn { what, netns: self.netns.clone(), source })?;
        let pid = child.id();
        self.servers.push(child);
        Ok(pid)
    }

    /// Pids of processes started in the peer namespace.
    pub fn server_pids(&self) -> Vec<i32> {
        self.servers.iter().map(|c| c.id() as i32).collect()
    }

    /// Kill servers, delete the namespace (which destroys the veth pair), free the slot.
    pub fn teardown(&mut self) -> Result<(), Error> {
        for mut c in self.servers.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        let r = if self.netns_path().exists() { ip(&["netns", "del", &self.netns]) } else { Ok(()) };
        self.linked = false;
        self.slot = None;
        r
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_addresses_are_a_private_slash_30() {
        assert_eq!(slot_addrs(0), (Ipv4Addr::new(10, 200, 0, 1), Ipv4Addr::new(10, 200, 0, 2)));
        assert_eq!(slot_addrs(16_383), (Ipv4Addr::new(10, 200, 255, 253), Ipv4Addr::new(10, 200, 255, 254)));
    }

    #[test]
    fn slots_are_claimed_exclusively_and_freed_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Slot::claim(tmp.path()).unwrap();
        let b = Slot::claim(tmp.path()).unwrap();
        assert_ne!(a.index, b.index);
        let pa = a.path().to_path_buf();
        drop(a);
        assert!(!pa.exists());
    }
}
