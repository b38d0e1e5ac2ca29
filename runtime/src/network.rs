//! Container networking: `none` (own netns, lo down), `loopback` (lo up), `veth` (lo up plus a
//! veth pair to a peer network namespace this run creates, never the root namespace; one /30
//! per container from 10.200.0.0/16, claimed with an exclusive mkdir; nothing routed).
//! Namespaces and links are made in-process: named namespaces by unshare + bind mount (what
//! `ip netns add` does), links and addresses over route netlink (the `cvbench-netlink` crate,
//! the project's one link set-up path), so a veth container execs no `ip`.

use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use cvbench_netlink::{Ns, Rtnl};

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
    #[error("netlink: {what} failed")]
    Netlink {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create network namespace {path}")]
    CreateNetns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot delete network namespace {path}")]
    DeleteNetns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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

/// Where named network namespaces live (as with `ip netns`).
pub const NETNS_DIR: &str = "/run/netns";

/// Create the named network namespace `/run/netns/<name>`: a helper thread unshares a new
/// network namespace and bind-mounts it there (what `ip netns add` does), so it outlives the
/// thread. The name must not exist yet.
pub fn create_netns(name: &str) -> Result<PathBuf, Error> {
    let path = Path::new(NETNS_DIR).join(name);
    let fail = |source| Error::CreateNetns { path: path.clone(), source };
    fs::create_dir_all(NETNS_DIR).map_err(fail)?;
    fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(fail)?;
    let target = path.clone();
    let made = std::thread::spawn(move || -> std::io::Result<()> {
        // Only this thread moves: a network namespace is per task.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
        let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        nix::mount::mount(Some(own.as_str()), &target, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)?;
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread panicked")));
    if let Err(e) = made {
        let _ = fs::remove_file(&path);
        return Err(fail(e));
    }
    Ok(path)
}

/// Delete a named network namespace (what `ip netns del` does): detach its bind mount and
/// remove the file. The namespace, and any veth end in it, goes once nothing uses it.
pub fn delete_netns(name: &str) -> Result<(), Error> {
    let path = Path::new(NETNS_DIR).join(name);
    let fail = |source| Error::DeleteNetns { path: path.clone(), source };
    match nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(fail(e.into())),
    }
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(fail(e)),
        _ => Ok(()),
    }
}

fn nl(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Netlink { what, source }
}

/// Address `ifname` in the namespace open at `ns` as `addr/prefix` and bring it and `lo` up.
pub fn configure_in(ns: &fs::File, ifname: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), Error> {
    let mut r = Rtnl::open_in(ns).map_err(nl("opening a socket in the peer namespace"))?;
    cvbench_netlink::address_and_raise(&mut r, ifname, addr, prefix)
        .map_err(nl(format!("adding {addr}/{prefix} to {ifname} and bringing it up")))?;
    let lo = r.index_of("lo").map_err(nl("looking up lo"))?;
    r.set_up(lo).map_err(nl("bringing lo up"))
}

/// Create a veth pair from this thread's namespace: `a` in the namespace open at `ns_a`,
/// `b` in the namespace of process `pid_b` or open at `ns_b`.
pub fn veth_between(a: &str, ns_a: &fs::File, b: &str, ns_b: VethEnd) -> Result<(), Error> {
    let mut r = Rtnl::open().map_err(nl("opening a route netlink socket"))?;
    let peer = match ns_b {
        VethEnd::Pid(p) => Ns::Pid(p),
        VethEnd::Netns(f) => Ns::File(f),
    };
    r.add_veth(a, Ns::File(ns_a), b, peer).map_err(nl(format!("creating veth {a} <-> {b}")))
}

/// Where the second end of a veth pair goes.
pub enum VethEnd<'a> {
    Pid(u32),
    Netns(&'a fs::File),
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
        create_netns(&v.netns)?;
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
        let path = self.netns_path();
        let ns = fs::File::open(&path).map_err(|source| Error::OpenNetns { path: path.clone(), source })?;
        veth_between(&self.peer_if, &ns, CONTAINER_IF, VethEnd::Pid(pid as u32))?;
        self.linked = true;
        configure_in(&ns, &self.peer_if, self.peer_ip, 30)
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
        let r = if self.netns_path().exists() { delete_netns(&self.netns) } else { Ok(()) };
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
    fn veth_between_two_named_namespaces_carries_traffic() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: creating network namespaces needs root");
            return;
        }
        let (a, b) = (format!("cvbt-{}-a", std::process::id()), format!("cvbt-{}-b", std::process::id()));
        struct Gone<'a>(&'a str, &'a str);
        impl Drop for Gone<'_> {
            fn drop(&mut self) {
                let _ = delete_netns(self.0);
                let _ = delete_netns(self.1);
            }
        }
        let _g = Gone(&a, &b);
        let (pa, pb) = (create_netns(&a).unwrap(), create_netns(&b).unwrap());
        let (fa, fb) = (fs::File::open(&pa).unwrap(), fs::File::open(&pb).unwrap());
        veth_between("cvbt0", &fa, "cvbt1", VethEnd::Netns(&fb)).unwrap();
        let (ia, ib) = slot_addrs(16_000);
        configure_in(&fa, "cvbt0", ia, 30).unwrap();
        configure_in(&fb, "cvbt1", ib, 30).unwrap();
        // A listener in a, a connection from b: the pair is up and addressed.
        let listener = std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(fa.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                std::net::TcpListener::bind((ia, 0)).unwrap()
            })
            .join()
            .unwrap()
        });
        let port = listener.local_addr().unwrap().port();
        let connected = std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(fb.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                std::net::TcpStream::connect((ia, port)).is_ok()
            })
            .join()
            .unwrap()
        });
        assert!(connected);
        // Root namespace never sees either end.
        assert!(!Path::new("/sys/class/net/cvbt0").exists() && !Path::new("/sys/class/net/cvbt1").exists());
        drop(listener);
        drop(_g);
        assert!(!pa.exists() && !pb.exists());
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
