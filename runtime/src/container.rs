//! The container lifecycle handle: create (clone into namespaces, cgroups, network, rootfs),
//! start, wait with timeout, kill, stats, delete. Dropping a handle deletes everything it made;
//! per-phase host timings are kept for the record.

use crate::cgroups::{self, CgroupManager, Stats};
use crate::cleanup;
use crate::config::{ContainerConfig, NetMode, RootfsSource};
use crate::image::Store;
use crate::namespaces::{self, Namespace};
use crate::network::{self, Veth};
use crate::process::channel::{self, now_ns, Record};
use crate::process::clone::{self, Child};
use crate::process::init::{CapPlan, ChildPlan, ExecPlan, Iface};
use crate::process::{self as proc, channel::Channel};
use crate::{capabilities, rootfs, seccomp, Error};
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where the container's standard streams go; `None` inherits the caller's.
#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// How the container ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The cgroup recorded an OOM kill.
    pub oom_killed: bool,
}

/// How `create` hands over to `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Return once the rootfs is ready; `start` releases the child.
    Ready,
    /// Release the child right away (the fast `run` path).
    Immediate,
    /// OCI create/start: the child blocks on `<run dir>/exec.fifo` until another process
    /// (`cvbench-runtime start`) opens it.
    Fifo,
}

/// On-disk state (`<state>/containers/<id>/state.json`), read by the OCI verbs and by gc.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub owner_pid: u32,
    pub owner_start: u64,
    pub pid: i32,
    pub pid_start: u64,
    pub bundle: Option<PathBuf>,
    pub cgroups: Vec<PathBuf>,
    pub netns: Option<String>,
    pub net_slot: Option<PathBuf>,
    /// Left running on purpose by OCI `create`; gc only removes it once the process is gone.
    pub detached: bool,
    pub run_dir: PathBuf,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Placeholder in `args` replaced by the veth peer's IPv4 address in `--net veth` mode.
pub const PEER_IP: &str = "{peer_ip}";

/// A container and everything created for it.
pub struct Container {
    state: State,
    child: Option<Child>,
    status_rd: Option<File>,
    go_wr: Option<File>,
    plan: Option<ChildPlan>,
    cgroup: Option<Box<dyn CgroupManager>>,
    veth: Option<Veth>,
    phases: Vec<(String, u64)>,
    marks: [Option<u64>; 4],
    exit: Option<ExitStatus>,
    final_stats: Option<Stats>,
    started: bool,
    deleted: bool,
    pid_slot: Option<usize>,
    notes: Vec<String>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn cpath(p: &Path) -> Result<CString, Error> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Config(format!("path {} contains NUL", p.display())))
}

/// Validate the parts of a config that need no kernel.
pub fn validate(cfg: &ContainerConfig) -> Result<(), Error> {
    if !cfg.has(Namespace::Mount) {
        return Err(Error::Config("the mount namespace is required (the rootfs lives in it)".into()));
    }
    match (cfg.net, cfg.has(Namespace::Net)) {
        (NetMode::Host, true) => return Err(Error::Config("--net host needs the net namespace left out".into())),
        (NetMode::Host, false) if !cfg.privileged => {
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

/// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn proc_start_time(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is alive and is the process that started at `start` (0: don't check).
pub fn alive(pid: i32, start: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    match proc_start_time(pid) {
        Some(s) => start == 0 || s == start,
        None => false,
    }
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
            child: None,
            status_rd: None,
            go_wr: None,
            plan: None,
            cgroup: None,
            veth: None,
            phases: Vec::new(),
            marks: [None; 4],
            exit: None,
            final_stats: None,
            started: false,
            deleted: false,
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
                c.deleted = true; // not ours: never remove it
                return Err(Error::Exists(id));
            }
            Err(e) => return Err(io_err(&run_dir)(e)),
        }
        c.state.detached = gate == Gate::Fifo;
        let scratch = rootfs::scratch_dir(&cfg.run_root);
        fs::create_dir_all(&scratch).map_err(io_err(&scratch))?;
        c.save_state()?;
        c.phase("prepare", t0);

        let t = now_ns();
        let mut cg = cgroups::manager(&cfg.cgroup, &host_name)?;
        let created = cg.create(&cfg.resources);
        c.state.cgroups = cg.paths();
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
            Some(cpath(&p)?)
        } else {
            None
        };
        let chan = Channel::new().map_err(proc::Error::Channel)?;
        let (status_fd, go_fd) = chan.child_fds();
        let plan = c.build_plan(cfg, &prepared, &scratch, fifo, status_fd, go_fd, &stdio)?;

        let mut flags = namespaces::clone_flags(&cfg.namespaces);
        // The cgroup namespace is entered after attaching, so its root is the container's cgroup.
        flags &= !Namespace::Cgroup.clone_flag();
        let cgroup_fd = c.cgroup.as_ref().and_then(|g| g.clone_into_fd());
        let t = now_ns();
        // SAFETY: the closure only runs `init::run`, which makes async-signal-safe calls on the
        // prepared plan and never returns.
        let child = unsafe { clone::spawn(flags, cgroup_fd, |mask| proc::init::run(&plan, mask)) }?;
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
        c.save_state()?;
        match gate {
            Gate::Immediate => {
                c.send(channel::MSG_GO)?;
                c.started = true;
            }
            Gate::Ready => c.read_until(Some(channel::MARK_ROOTFS_DONE))?,
            Gate::Fifo => {
                c.send(channel::MSG_GO)?;
                c.started = true;
                c.read_until(Some(channel::MARK_GO))?;
            }
        }
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
        })?;
        let caps = if cfg.privileged && cfg.capabilities.is_none() {
            None
        } else {
            let keep = match &cfg.capabilities {
                Some(list) => capabilities::mask(list)?,
                None => capabilities::mask(capabilities::DOCKER_DEFAULT)?,
            };
            Some(CapPlan { keep, last_cap: capabilities::last_cap() })
        };
        let seccomp = (!cfg.privileged && !cfg.seccomp_unconfined).then(seccomp::default_filter);
        let iface = self.veth.as_ref().map(|v| {
            let mut name = [0u8; libc::IFNAMSIZ];
            name[..network::CONTAINER_IF.len()].copy_from_slice(network::CONTAINER_IF.as_bytes());
            Iface { name, addr: v.container_ip.octets(), netmask: network::NETMASK.octets() }
        });
        let hostname = if cfg.has(Namespace::Uts) && !cfg.hostname.is_empty() {
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
            uid: cfg.user.uid,
            gid: cfg.user.gid,
            groups: cfg.user.additional_gids.clone(),
            caps,
            no_new_privs: !cfg.privileged,
            seccomp,
            stdio: [fd_or_inherit(&stdio.stdin), fd_or_inherit(&stdio.stdout), fd_or_inherit(&stdio.stderr)],
            cwd: CString::new(p.cwd.as_str()).map_err(|_| Error::Config(format!("cwd {:?} contains NUL", p.cwd)))?,
            exec: ExecPlan::new(&args, &p.env)?,
        })
    }

    fn write_id_maps(&self, cfg: &ContainerConfig) -> Result<(), Error> {
        for (file, maps) in [("uid_map", &cfg.uid_map), ("gid_map", &cfg.gid_map)] {
            let text: String = maps.iter().map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size)).collect();
            let path = format!("/proc/{}/{file}", self.state.pid);
            fs::write(&path, text).map_err(|source| proc::Error::IdMap { path, source })?;
        }
        Ok(())
    }

    fn send(&mut self, byte: u8) -> Result<(), Error> {
        let pid = self.state.pid;
        if let Some(w) = self.go_wr.as_mut() {
            w.write_all(&[byte]).map_err(|source| proc::Error::Talk { pid, source })?;
        }
        Ok(())
    }

    /// Read child records until `want` arrives (None: until EOF, i.e. exec).
    fn read_until(&mut self, want: Option<u32>) -> Result<(), Error> {
        let pid = self.state.pid;
        let Some(rd) = self.status_rd.as_mut() else {
            return Ok(());
        };
        loop {
            let rec = channel::read_record(rd).map_err(|source| proc::Error::Talk { pid, source })?;
            match rec {
                None => {
                    self.status_rd = None;
                    if want.is_some() {
                        return Err(proc::Error::ChildVanished(pid).into());
                    }
                    let t = now_ns();
                    self.marks_to_phases(t);
                    return Ok(());
                }
                Some(Record { kind: channel::KIND_ERROR, code, errno, .. }) => {
                    let step = self.plan.as_ref().map_or(format!("step {code}"), |p| p.step_name(code));
                    return Err(
                        proc::Error::ChildStep { step, source: std::io::Error::from_raw_os_error(errno) }.into()
                    );
                }
                Some(r) => {
                    if let Some(slot) = self.marks.get_mut(r.code as usize) {
                        *slot = Some(r.t_ns);
                    }
                    if Some(r.code) == want {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn marks_to_phases(&mut self, exec_seen: u64) {
        let m = self.marks;
        let pairs = [
            ("child_setup", m[0], m[1]),
            ("wait_parent", m[1], m[2]),
            ("exec_setup", m[2], m[3]),
            ("exec", m[3], Some(exec_seen)),
        ];
        for (name, a, b) in pairs {
            if let (Some(a), Some(b)) = (a, b) {
                self.phases.push((name.into(), b.saturating_sub(a)));
            }
        }
    }

    fn phase(&mut self, name: &str, since: u64) {
        self.phases.push((name.into(), now_ns().saturating_sub(since)));
    }

    fn save_state(&self) -> Result<(), Error> {
        let path = self.state.run_dir.join("state.json");
        let tmp = self.state.run_dir.join(".state.json.tmp");
        let bytes =
            serde_json::to_vec_pretty(&self.state).map_err(|e| Error::Config(format!("cannot encode state: {e}")))?;
        fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        cleanup::track(&self.state);
        Ok(())
    }

    /// Let a container made with [`Gate::Ready`] exec its process; returns once it exec'd.
    pub fn start(&mut self) -> Result<(), Error> {
        if !self.started {
            self.send(channel::MSG_GO)?;
            self.started = true;
        }
        self.read_until(None)
    }

    /// The container id.
    pub fn id(&self) -> &str {
        &self.state.id
    }

    /// Host pid of the container's first process.
    pub fn pid(&self) -> i32 {
        self.state.pid
    }

    /// Host pids belonging to this container (cgroup members plus peer-namespace servers).
    pub fn pids(&self) -> Vec<i32> {
        let mut v = self.cgroup.as_ref().and_then(|g| g.procs().ok()).unwrap_or_default();
        if v.is_empty() && self.exit.is_none() && self.state.pid > 0 {
            v.push(self.state.pid);
        }
        if let Some(n) = &self.veth {
            v.extend(n.server_pids());
        }
        v
    }

    /// The veth link, in `--net veth` mode.
    pub fn veth(&self) -> Option<&Veth> {
        self.veth.as_ref()
    }

    /// Mutable veth access (to start servers in the peer namespace).
    pub fn veth_mut(&mut self) -> Option<&mut Veth> {
        self.veth.as_mut()
    }

    /// Ordered (phase, ns) timings so far.
    pub fn phases(&self) -> &[(String, u64)] {
        &self.phases
    }

    /// Remarks worth recording (e.g. how the cgroup attach was done).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The on-disk state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// cgroup version in use.
    pub fn cgroup_version(&self) -> &'static str {
        self.cgroup.as_ref().map_or("none", |g| g.version())
    }

    /// Current cgroup statistics, or the final ones after exit.
    pub fn stats(&self) -> Result<Stats, Error> {
        if let Some(s) = &self.final_stats {
            return Ok(s.clone());
        }
        match &self.cgroup {
            Some(g) => Ok(g.stats()?),
            None => Ok(Stats::default()),
        }
    }

    pub fn freeze(&self) -> Result<(), Error> {
        match &self.cgroup {
            Some(g) => Ok(g.freeze()?),
            None => Ok(()),
        }
    }

    pub fn thaw(&self) -> Result<(), Error> {
        match &self.cgroup {
            Some(g) => Ok(g.thaw()?),
            None => Ok(()),
        }
    }

    /// Send a signal to the container's first process (through its pidfd: no pid reuse race).
    pub fn kill(&self, sig: i32) -> Result<(), Error> {
        let Some(ch) = &self.child else {
            return Ok(());
        };
        if self.exit.is_some() {
            return Ok(());
        }
        // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                ch.pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            let e = nix::Error::last();
            if e != nix::Error::ESRCH {
                return Err(proc::Error::Signal { pid: self.state.pid, source: e }.into());
            }
        }
        Ok(())
    }

    /// Wait for the container to exit. With a timeout, `Error::Timeout` leaves it running.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<ExitStatus, Error> {
        if let Some(e) = self.exit {
            return Ok(e);
        }
        let Some(ch) = &self.child else {
            return Err(Error::NoSuchContainer(self.state.id.clone()));
        };
        let t = now_ns();
        let deadline = timeout.map(|d| std::time::Instant::now() + d);
        loop {
            let ms = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    left.as_millis().min(i32::MAX as u128) as i32
                }
                None => -1,
            };
            let mut pfd = libc::pollfd { fd: ch.pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r > 0 {
                break;
            }
            if r == 0 {
                return Err(Error::Timeout(timeout.unwrap_or_default()));
            }
            if cleanup::interrupted() {
                return Err(Error::Interrupted);
            }
        }
        // SAFETY: zeroed siginfo is a valid out-buffer.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: waitid on our pidfd (P_PIDFD = 3) into a valid siginfo.
            let r = unsafe { libc::waitid(3, ch.pidfd.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED) };
            if r == 0 {
                break;
            }
            let e = nix::Error::last();
            if e != nix::Error::EINTR {
                return Err(proc::Error::Wait { pid: self.state.pid, source: e }.into());
            }
        }
        // SAFETY: waitid filled a SIGCHLD siginfo, for which si_status is valid.
        let status = unsafe { info.si_status() };
        let mut exit = if info.si_code == libc::CLD_EXITED {
            ExitStatus { code: Some(status), ..Default::default() }
        } else {
            ExitStatus { signal: Some(status), ..Default::default() }
        };
        if let Some(g) = &self.cgroup {
            if let Ok(st) = g.stats() {
                exit.oom_killed = st.oom_kills > 0;
                self.final_stats = Some(st);
            }
        }
        self.phase("run", t);
        self.exit = Some(exit);
        if let Some(slot) = self.pid_slot.take() {
            cleanup::unregister_pid(slot);
        }
        Ok(exit)
    }

    /// Kill (if running), wait, and remove cgroups, network, state dir. Idempotent.
    pub fn delete(&mut self) -> Result<(), Error> {
        if self.deleted {
            return Ok(());
        }
        let t = now_ns();
        self.go_wr = None; // a child still waiting for "go" sees EOF and exits
        self.status_rd = None;
        if self.child.is_some() && self.exit.is_none() {
            let _ = self.kill(libc::SIGKILL);
            let _ = self.wait(None);
        }
        let mut first: Option<Error> = None;
        if let Some(g) = self.cgroup.as_mut() {
            // Stragglers (children of PID 1 when no pid namespace) die first.
            if let Ok(procs) = g.procs() {
                for p in procs {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
                }
            }
            if let Err(e) = g.remove() {
                first.get_or_insert(e.into());
            }
        }
        if let Some(mut v) = self.veth.take() {
            if let Err(e) = v.teardown() {
                first.get_or_insert(e.into());
            }
        }
        if self.state.run_dir.exists() {
            if let Err(e) = fs::remove_dir_all(&self.state.run_dir) {
                first.get_or_insert(io_err(&self.state.run_dir)(e));
            }
        }
        if let Some(slot) = self.pid_slot.take() {
            cleanup::unregister_pid(slot);
        }
        cleanup::untrack(&self.state.id);
        self.deleted = true;
        self.phase("cleanup", t);
        first.map_or(Ok(()), Err)
    }

    /// Leave the container running and its resources in place (OCI `create` hands over to
    /// later `start`/`delete` invocations).
    pub fn detach(mut self) {
        self.deleted = true;
        if let Some(slot) = self.pid_slot.take() {
            cleanup::unregister_pid(slot);
        }
        cleanup::untrack(&self.state.id);
        if let Some(g) = self.cgroup.take() {
            std::mem::forget(g);
        }
        if let Some(v) = self.veth.take() {
            std::mem::forget(v);
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.delete();
    }
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub exit: ExitStatus,
    pub phases: Vec<(String, u64)>,
    pub stats: Stats,
}

/// create + start + wait + delete. On timeout the container is killed and `Error::Timeout`
/// returned (after cleanup).
pub fn run(cfg: &ContainerConfig, stdio: Stdio, timeout: Option<Duration>) -> Result<RunResult, Error> {
    let mut c = Container::create_started(cfg, stdio)?;
    let exit = c.wait(timeout);
    let stats = c.stats().unwrap_or_default();
    c.delete()?;
    let exit = exit?;
    Ok(RunResult { exit, phases: c.phases().to_vec(), stats })
}
