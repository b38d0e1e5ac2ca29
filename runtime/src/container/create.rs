//! `create`: validate the config, make the cgroup, network and run dir, build the child's
//! plan, clone it into its namespaces and hand over according to the [`Gate`].

use super::{cpath, io_err, Container, Gate, Hold, Stdio, PEER_IP};
use crate::cgroups;
use crate::cleanup;
use crate::config::{ContainerConfig, NetMode, RootfsSource};
use crate::image::Store;
use crate::namespaces::{self, Namespace};
use crate::network::{self, Veth};
use crate::process::channel::{self, now_ns};
use crate::process::clone;
use crate::process::init::{ChildPlan, ExecPlan, Iface};
use crate::process::privileges::{AppArmorExec, CapPlan, Privileges};
use crate::process::{self as proc, channel::Channel};
use crate::state::{proc_start_time, Keeper, State, Status};
use crate::{capabilities, rootfs, seccomp, Error};
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Validate the parts of a config that need no kernel.
pub fn validate(cfg: &ContainerConfig) -> Result<(), Error> {
    if !cfg.has_mount_ns() {
        return Err(Error::Config(
            "a mount namespace is required, new or joined by path (the rootfs set-up happens in it)".into(),
        ));
    }
    match (cfg.net, cfg.has(Namespace::Net)) {
        (NetMode::Host, true) => return Err(Error::Config("--net host needs the net namespace left out".into())),
        (NetMode::Host, false) if !cfg.privileged && !cfg.host_net_allowed => {
            return Err(Error::Config("--net host requires --privileged".into()))
        }
        (NetMode::None | NetMode::Loopback | NetMode::Veth, false) => {
            return Err(Error::Config(format!("--net {:?} needs a net namespace", cfg.net)))
        }
        _ => {}
    }
    if cfg.has(Namespace::User) && (cfg.uid_map.is_empty() || cfg.gid_map.is_empty()) {
        return Err(Error::Config("a user namespace needs uid_map and gid_map".into()));
    }
    if !cfg.id.is_empty() && !cfg.id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(Error::Config(format!(
            "container id `{}` may only hold letters, digits, `-`, `_` and `.`",
            cfg.id
        )));
    }
    cgroups::validate(&cfg.resources)?;
    Ok(())
}

struct Prepared {
    lowers: Vec<PathBuf>,
    args: Vec<String>,
    env: Vec<String>,
    cwd: String,
}

fn prepare_rootfs(cfg: &ContainerConfig) -> Result<Prepared, Error> {
    let (lowers, defaults) = match &cfg.rootfs {
        RootfsSource::Image(name) => {
            let store = Store::open(&cfg.state_dir)?;
            let r = store.resolve(name)?;
            (r.layer_dirs, Some(r.config.config))
        }
        RootfsSource::Dir(dir) => {
            if !dir.is_dir() {
                return Err(Error::Config(format!("rootfs {} is not a directory", dir.display())));
            }
            (vec![dir.clone()], None)
        }
    };
    let mut args = cfg.args.clone();
    let mut env = cfg.env.clone();
    let mut cwd = cfg.cwd.clone();
    if let Some(d) = defaults {
        if args.is_empty() {
            args = d.entrypoint.unwrap_or_default();
            args.extend(d.cmd.unwrap_or_default());
        }
        for e in d.env.unwrap_or_default() {
            let key = e.split('=').next().unwrap_or("");
            if !env.iter().any(|x| x.split('=').next() == Some(key)) {
                env.push(e);
            }
        }
        if cwd.is_empty() || cwd == "/" {
            cwd = d.working_dir.filter(|w| !w.is_empty()).unwrap_or(cwd);
        }
    }
    if args.is_empty() {
        return Err(Error::Config("no command: give args or use an image with an entrypoint".into()));
    }
    Ok(Prepared { lowers, args, env, cwd })
}

fn fd_or_inherit(fd: &Option<OwnedFd>) -> RawFd {
    fd.as_ref().map_or(-1, |f| f.as_raw_fd())
}

impl Container {
    fn empty(id: String, cfg: &ContainerConfig) -> Container {
        let owner = std::process::id();
        Container {
            state: State {
                run_dir: cfg.run_root.join("containers").join(&id),
                id,
                owner_pid: owner,
                owner_start: proc_start_time(owner as i32).unwrap_or(0),
                ..Default::default()
            },
            gate: Gate::Ready,
            hold: Hold::Owned,
            child: None,
            status_rd: None,
            go_wr: None,
            plan: None,
            cgroup: None,
            veth: None,
            phases: Vec::new(),
            marks: Default::default(),
            exit: None,
            final_stats: None,
            pid_slot: None,
            notes: Vec::new(),
        }
    }

    /// Create a container; the child is set up and waits for [`Container::start`].
    pub fn create(cfg: &ContainerConfig, stdio: Stdio) -> Result<Container, Error> {
        Self::create_gated(cfg, stdio, Gate::Ready)
    }

    /// Create and start in one go, overlapping the parent's cgroup attach with the child's
    /// rootfs setup: the fast path `run` uses.
    pub fn create_started(cfg: &ContainerConfig, stdio: Stdio) -> Result<Container, Error> {
        let mut c = Self::create_gated(cfg, stdio, Gate::Immediate)?;
        c.start()?;
        Ok(c)
    }

    /// Create with an explicit hand-over mode.
    pub fn create_gated(cfg: &ContainerConfig, stdio: Stdio, gate: Gate) -> Result<Container, Error> {
        let t0 = now_ns();
        let euid = nix::unistd::geteuid();
        if !euid.is_root() {
            return Err(Error::NotRoot(euid.as_raw()));
        }
        validate(cfg)?;
        let owner = std::process::id();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let id = if cfg.id.is_empty() { format!("cvbench-{owner}-{seq}") } else { cfg.id.clone() };
        // Everything on the host carries `cvbench-<owner pid>-` so gc can find leftovers.
        let host_name =
            if id.starts_with(&format!("cvbench-{owner}-")) { id.clone() } else { format!("cvbench-{owner}-{id}") };
        let prepared = prepare_rootfs(cfg)?;
        let containers = cfg.run_root.join("containers");
        fs::create_dir_all(&containers).map_err(io_err(&containers))?;
        let mut c = Container::empty(id.clone(), cfg);
        let run_dir = c.state.run_dir.clone();
        match fs::create_dir(&run_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                c.hold = Hold::Released; // not ours: never remove it
                return Err(Error::Exists(id));
            }
            Err(e) => return Err(io_err(&run_dir)(e)),
        }
        c.gate = gate;
        c.state.keeper = if gate == Gate::Fifo { Keeper::Detached } else { Keeper::Owner };
        let scratch = rootfs::scratch_dir(&cfg.run_root);
        fs::create_dir_all(&scratch).map_err(io_err(&scratch))?;
        // Known to the signal owner's cleanup now; on disk from the first save below, once it
        // lists the cgroups (each write is a file and a rename: write only what gc needs).
        cleanup::track(&c.state);
        c.phase("prepare", t0);

        let t = now_ns();
        let cg_name = match (&cfg.cgroups_path, &cfg.cgroup_parent) {
            (Some(p), _) => p.to_string_lossy().into_owned(),
            (None, Some(parent)) => format!("{}/{host_name}", parent.trim_end_matches('/')),
            (None, None) => host_name.clone(),
        };
        let mut cg = cgroups::manager(&cfg.cgroup, &cg_name)?;
        let created = cg.create(&cfg.resources);
        c.state.cgroups = cg.paths();
        c.state.cgroup_parents = cg.created_parents();
        c.cgroup = Some(cg);
        created?;
        c.phase("cgroup_create", t);

        if cfg.net == NetMode::Veth {
            let t = now_ns();
            let v = Veth::prepare(&cfg.run_root, &host_name);
            if let Ok(v) = &v {
                c.state.netns = Some(v.netns.clone());
                c.state.net_slot = v.slot_path();
            }
            c.veth = Some(v?);
            c.phase("network_prepare", t);
        }
        c.save_state()?;

        let fifo = if gate == Gate::Fifo {
            let p = run_dir.join("exec.fifo");
            nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| io_err(&p)(e.into()))?;
            // In a user namespace the container's root is another host user, who opens the FIFO
            // after setup: it owns it (as with runc), no one else gains access.
            if cfg.has(Namespace::User) {
                let (uid, gid) = (host_id_of_root(&cfg.uid_map), host_id_of_root(&cfg.gid_map));
                nix::unistd::chown(&p, uid.map(nix::unistd::Uid::from_raw), gid.map(nix::unistd::Gid::from_raw))
                    .map_err(|e| io_err(&p)(e.into()))?;
            }
            Some(cpath(&p)?)
        } else {
            None
        };
        let chan = Channel::new().map_err(proc::Error::Channel)?;
        let (status_fd, go_fd) = chan.child_fds();
        let plan = c.build_plan(cfg, &prepared, &scratch, fifo, status_fd, go_fd, &stdio)?;

        let mut flags = namespaces::clone_flags(&cfg.namespaces);
        // A pid namespace given by path is entered by the clone itself (setns on this thread
        // sets the namespace of its next child); the others the child joins first thing.
        let pid_join = join_fd(cfg, Namespace::Pid)?;
        let _restore = match &pid_join {
            Some(fd) => Some(PidNsGuard::enter(fd)?),
            None => None,
        };
        // The cgroup namespace is entered after attaching, so its root is the container's cgroup.
        flags &= !Namespace::Cgroup.clone_flag();
        let cgroup_fd = c.cgroup.as_ref().and_then(|g| g.clone_into_fd());
        let t = now_ns();
        // SAFETY: the closure only runs `init::run`, which makes async-signal-safe calls on the
        // prepared plan and never returns.
        let child = unsafe { clone::spawn(flags, cgroup_fd, |mask| proc::init::run(&plan, mask)) }?;
        drop(_restore);
        c.phase("clone", t);
        c.state.pid = child.pid;
        c.pid_slot = cleanup::register_pid(child.pid);
        c.child = Some(child);
        c.plan = Some(plan);
        // Our copies of the child's ends must go, or EOF (= exec'd) never comes.
        let Channel { status_rd, go_wr, .. } = chan;
        c.status_rd = Some(status_rd);
        c.go_wr = Some(go_wr);
        drop(stdio);

        c.apply_process_limits(cfg)?;
        if cfg.has(Namespace::User) {
            c.write_id_maps(cfg)?;
            c.send(channel::MSG_MAPS)?;
        }
        let self_attached = c.plan.as_ref().is_some_and(|p| !p.self_attach.is_empty());
        if cgroup_fd.is_some() {
            c.notes.push("cgroup v2: clone3(CLONE_INTO_CGROUP), no attach write".into());
        } else if self_attached {
            c.notes.push(
                "cgroup v1: the child wrote 0 to each tasks file itself (no threadgroup rwsem, \
                 no RCU grace period)"
                    .into(),
            );
        } else {
            let t = now_ns();
            if let Some(g) = &c.cgroup {
                g.attach(c.state.pid)?;
            }
            c.phase("cgroup_attach", t);
        }
        if let Some(v) = c.veth.as_mut() {
            let t = now_ns();
            v.link(c.state.pid)?;
            c.phase("network", t);
        }
        c.state.pid_start = proc_start_time(c.state.pid).unwrap_or(0);
        if gate != Gate::Immediate {
            // The child sets up its rootfs before the next save: its pid is on disk meanwhile.
            c.save_state()?;
        }
        match gate {
            Gate::Immediate => {
                c.send(channel::MSG_GO)?;
                c.state.status = Status::Running;
            }
            Gate::Ready => {
                c.read_until(Some(channel::MARK_ROOTFS_DONE))?;
                c.state.status = Status::Created;
            }
            Gate::Fifo => {
                // The child passes the go message and then blocks opening the fifo.
                c.send(channel::MSG_GO)?;
                c.read_until(Some(channel::MARK_GO))?;
                c.state.status = Status::Created;
            }
        }
        c.save_state()?;
        Ok(c)
    }

    #[allow(clippy::too_many_arguments)]
    fn build_plan(
        &self,
        cfg: &ContainerConfig,
        p: &Prepared,
        scratch: &Path,
        start_fifo: Option<CString>,
        status_fd: RawFd,
        go_fd: RawFd,
        stdio: &Stdio,
    ) -> Result<ChildPlan, Error> {
        let masked: Vec<String> = match (&cfg.masked_paths, cfg.privileged) {
            (Some(m), _) => m.clone(),
            (None, true) => Vec::new(),
            (None, false) => rootfs::DEFAULT_MASKED.iter().map(|s| s.to_string()).collect(),
        };
        let readonly: Vec<String> = match (&cfg.readonly_paths, cfg.privileged) {
            (Some(m), _) => m.clone(),
            (None, true) => Vec::new(),
            (None, false) => rootfs::DEFAULT_READONLY.iter().map(|s| s.to_string()).collect(),
        };
        let cgroup_dirs = self.state.cgroups.clone();
        let ops = rootfs::plan(&rootfs::Spec {
            scratch,
            lowers: &p.lowers,
            userns: cfg.has(Namespace::User),
            ipc_ns: cfg.has(Namespace::Ipc),
            net_ns: cfg.has(Namespace::Net),
            masked: &masked,
            readonly: &readonly,
            mounts: &cfg.mounts,
            readonly_rootfs: cfg.readonly_rootfs,
            exact: cfg.exact_mounts,
            devices: &cfg.devices,
            sysctl: &cfg.sysctl,
            root_propagation: cfg.rootfs_propagation as libc::c_ulong,
            cgroup_dirs: &cgroup_dirs,
        })?;
        let last_cap = capabilities::last_cap();
        let caps = if let Some(sets) = &cfg.capability_sets {
            Some(CapPlan {
                bounding: capabilities::mask(&sets.bounding)?,
                effective: capabilities::mask(&sets.effective)?,
                permitted: capabilities::mask(&sets.permitted)?,
                inheritable: capabilities::mask(&sets.inheritable)?,
                ambient: capabilities::mask(&sets.ambient)?,
                last_cap,
            })
        } else if cfg.privileged && cfg.capabilities.is_none() {
            None
        } else {
            let keep = match &cfg.capabilities {
                Some(list) => capabilities::mask(list)?,
                None => capabilities::mask(capabilities::DOCKER_DEFAULT)?,
            };
            Some(CapPlan::uniform(keep, last_cap))
        };
        let seccomp = match &cfg.seccomp_profile {
            Some(p) => Some(crate::seccomp_profile::compile(p).map_err(|e| Error::Config(e.to_string()))?),
            None => (!cfg.privileged && !cfg.seccomp_unconfined).then(seccomp::default_filter),
        };
        let mut join = Vec::new();
        for (kind, _) in cfg.join_namespaces.iter().filter(|(k, _)| *k != Namespace::Pid) {
            if let Some(fd) = join_fd(cfg, *kind)? {
                join.push((*kind, std::os::fd::IntoRawFd::into_raw_fd(fd), kind.clone_flag() as libc::c_int));
            }
        }
        // A joined mount namespace is entered last: setns(CLONE_NEWNS) also moves the child's
        // root and cwd, and the others (a user namespace above all) must come first.
        join.sort_by_key(|(kind, _, _)| *kind == Namespace::Mount);
        let join = join.into_iter().map(|(_, fd, flag)| (fd, flag)).collect();
        let iface = self.veth.as_ref().map(|v| {
            let mut name = [0u8; libc::IFNAMSIZ];
            name[..network::CONTAINER_IF.len()].copy_from_slice(network::CONTAINER_IF.as_bytes());
            Iface { name, addr: v.container_ip.octets(), netmask: network::NETMASK.octets() }
        });
        let own_uts = cfg.has(Namespace::Uts) || cfg.join_namespaces.iter().any(|(k, _)| *k == Namespace::Uts);
        let hostname = if own_uts && !cfg.hostname.is_empty() {
            Some(
                CString::new(cfg.hostname.as_str())
                    .map_err(|_| Error::Config(format!("hostname {:?} contains NUL", cfg.hostname)))?,
            )
        } else {
            None
        };
        // `{peer_ip}` in the arguments becomes the veth peer's address (known only now).
        let args: Vec<String> = match &self.veth {
            Some(v) => p.args.iter().map(|a| a.replace(PEER_IP, &v.peer_ip.to_string())).collect(),
            None => p.args.clone(),
        };
        // The child moves itself into v1 cgroups (no RCU grace period). It does so first
        // thing, while its credentials are still the host's root ones, so this works with a
        // user namespace too.
        let self_attach = self
            .cgroup
            .as_ref()
            .map(|g| g.self_attach_files())
            .unwrap_or_default()
            .iter()
            .map(|p| cpath(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ChildPlan {
            status_fd,
            go_fd,
            self_attach,
            userns: cfg.has(Namespace::User),
            hostname,
            ops,
            lo_up: matches!(cfg.net, NetMode::Loopback | NetMode::Veth),
            iface,
            unshare_cgroupns: cfg.has(Namespace::Cgroup),
            start_fifo,
            privileges: Privileges {
                uid: cfg.user.uid,
                gid: cfg.user.gid,
                groups: cfg.user.additional_gids.clone(),
                caps,
                no_new_privs: cfg.no_new_privileges.unwrap_or(!cfg.privileged),
                seccomp,
                apparmor: match &cfg.apparmor_profile {
                    Some(profile) => AppArmorExec::new(profile).map_err(Error::Config)?,
                    None => None,
                },
            },
            join,
            umask: cfg.umask.map(|m| m as libc::mode_t),
            stdio: [fd_or_inherit(&stdio.stdin), fd_or_inherit(&stdio.stdout), fd_or_inherit(&stdio.stderr)],
            controlling_tty: cfg.terminal,
            cwd: CString::new(p.cwd.as_str()).map_err(|_| Error::Config(format!("cwd {:?} contains NUL", p.cwd)))?,
            exec: ExecPlan::new(&args, &p.env)?,
        })
    }

    /// rlimits and the OOM score, set on the child from here before it may exec.
    fn apply_process_limits(&self, cfg: &ContainerConfig) -> Result<(), Error> {
        let pid = self.state.pid;
        for r in &cfg.rlimits {
            let lim = libc::rlimit { rlim_cur: r.soft, rlim_max: r.hard };
            // SAFETY: prlimit(2) on our child with a valid new-limit struct, no old value.
            let rc = unsafe { libc::prlimit(pid, r.resource as libc::__rlimit_resource_t, &lim, std::ptr::null_mut()) };
            if rc != 0 {
                return Err(Error::Config(format!(
                    "cannot set rlimit {} to {}/{}: {}",
                    r.resource,
                    r.soft,
                    r.hard,
                    std::io::Error::last_os_error()
                )));
            }
        }
        if let Some(adj) = cfg.oom_score_adj {
            let path = PathBuf::from(format!("/proc/{pid}/oom_score_adj"));
            fs::write(&path, adj.to_string()).map_err(io_err(&path))?;
        }
        Ok(())
    }

    fn write_id_maps(&self, cfg: &ContainerConfig) -> Result<(), Error> {
        for (file, maps) in [("uid_map", &cfg.uid_map), ("gid_map", &cfg.gid_map)] {
            let text: String = maps.iter().map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size)).collect();
            let path = format!("/proc/{}/{file}", self.state.pid);
            fs::write(&path, text).map_err(|source| proc::Error::IdMap { path, source })?;
        }
        Ok(())
    }
}

/// Open the namespace file a config asks to join for `kind`, if any.
fn join_fd(cfg: &ContainerConfig, kind: Namespace) -> Result<Option<OwnedFd>, Error> {
    let Some((_, path)) = cfg.join_namespaces.iter().find(|(k, _)| *k == kind) else {
        return Ok(None);
    };
    let f = fs::File::open(path).map_err(io_err(path))?;
    Ok(Some(OwnedFd::from(f)))
}

/// This thread's pid namespace for children, switched to a joined one and restored on drop.
pub(crate) struct PidNsGuard {
    own: OwnedFd,
}

impl PidNsGuard {
    pub(crate) fn enter(target: &OwnedFd) -> Result<PidNsGuard, Error> {
        let own_path = Path::new("/proc/thread-self/ns/pid_for_children");
        let own = OwnedFd::from(fs::File::open(own_path).map_err(io_err(own_path))?);
        // SAFETY: setns(2) on a namespace fd we opened; affects only this thread's children.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
            return Err(Error::Config(format!("cannot join the pid namespace: {}", std::io::Error::last_os_error())));
        }
        Ok(PidNsGuard { own })
    }
}

impl Drop for PidNsGuard {
    fn drop(&mut self) {
        // SAFETY: setns(2) back to the namespace this thread had.
        unsafe { libc::setns(self.own.as_raw_fd(), libc::CLONE_NEWPID) };
    }
}

/// The host id that a user namespace's id 0 maps to, if it is mapped.
fn host_id_of_root(map: &[crate::config::IdMap]) -> Option<u32> {
    map.iter().find(|m| m.container_id == 0 && m.size > 0).map(|m| m.host_id)
}
