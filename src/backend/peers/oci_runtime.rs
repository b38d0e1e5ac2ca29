//! The `runc`, `crun`, `youki`, `cvbench-runtime` and gVisor (`runsc`, three platforms) backends
//! (all exec'd CLIs, unlike the `container` backend, which calls our runtime as a library):
//! `<runtime> run` of a generated OCI bundle
//! in the foreground (the runtime process stays the container's parent and
//! passes the harness's pipes straight through), with a state root of our
//! own. crun 1.8 refuses hybrid cgroups while the cgroup2 mount has
//! controllers, so crun runs in a private mount namespace with that mount
//! detached; the host's mounts are untouched.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use super::oci::{self, RunConfig};
use super::{launch_err, PeerError};
use crate::backend::id::PeerTool;
use crate::backend::netpath::{Client, NetPath};
use crate::backend::process::ChildProcess;
use crate::backend::{Backend, BackendError, BackendId, Instance, LaunchSpec};
use crate::paths;
use crate::record::ExitInfo;
use crate::workload::Needs;

const UNIFIED: &str = "/sys/fs/cgroup/unified";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Runc,
    Crun,
    /// Our own runtime's CLI, exec'd on the same bundle as runc and crun.
    Cvbench,
    Youki,
    /// gVisor's runsc on one of its platforms.
    Gvisor(Platform),
}

/// How gVisor's sentry intercepts the workload's system calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// seccomp `SECCOMP_RET_TRAP` in stub processes plus shared-memory stubs (default since 2023).
    Systrap,
    /// `PTRACE_SYSEMU` on stub processes.
    Ptrace,
    /// The sentry runs as a guest kernel in a KVM VM; the workload in its guest user mode.
    Kvm,
}

impl Platform {
    pub const fn flag(self) -> &'static str {
        match self {
            Platform::Systrap => "--platform=systrap",
            Platform::Ptrace => "--platform=ptrace",
            Platform::Kvm => "--platform=kvm",
        }
    }

    fn how(self) -> &'static str {
        match self {
            Platform::Systrap => "systrap (seccomp traps in stub processes, shared-memory hand-off to the sentry)",
            Platform::Ptrace => "ptrace (PTRACE_SYSEMU stops of stub processes)",
            Platform::Kvm => "kvm (the sentry as a guest kernel under /dev/kvm)",
        }
    }
}

impl Kind {
    fn id(self) -> BackendId {
        match self {
            Kind::Runc => BackendId::Runc,
            Kind::Crun => BackendId::Crun,
            Kind::Cvbench => BackendId::CvbenchRuntime,
            Kind::Youki => BackendId::Youki,
            Kind::Gvisor(Platform::Systrap) => BackendId::Gvisor,
            Kind::Gvisor(Platform::Ptrace) => BackendId::GvisorPtrace,
            Kind::Gvisor(Platform::Kvm) => BackendId::GvisorKvm,
        }
    }

    fn peer_tool(self) -> Option<PeerTool> {
        match self {
            Kind::Youki => Some(PeerTool::Youki),
            Kind::Gvisor(_) => Some(PeerTool::Runsc),
            Kind::Runc | Kind::Crun | Kind::Cvbench => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        self.id().name()
    }

    /// The program to exec: runc and crun from PATH, youki and runsc from cvbench's cache (then
    /// PATH), ours beside the cvbench binary.
    pub(crate) fn program(self) -> Result<PathBuf, String> {
        if let Some(tool) = self.peer_tool() {
            return super::find_peer(tool)
                .ok_or_else(|| format!("{} is not installed (fix: {})", tool.cmd(), tool.install()));
        }
        match self {
            Kind::Cvbench => paths::sibling_binary("cvbench-runtime", "CVBENCH_RUNTIME").map_err(|e| e.to_string()),
            k if super::on_path(k.name()) => Ok(PathBuf::from(k.name())),
            k => Err(format!("{} is not installed (apt-get install {})", k.name(), k.name())),
        }
    }
}

/// Files shared by every run of one backend value.
struct State {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    root: PathBuf,
}

pub struct OciRuntime {
    kind: Kind,
    state: Mutex<Option<std::sync::Arc<State>>>,
}

impl OciRuntime {
    pub fn new(kind: Kind) -> OciRuntime {
        OciRuntime { kind, state: Mutex::new(None) }
    }

    fn state(&self) -> Result<std::sync::Arc<State>, PeerError> {
        let mut g = self.state.lock().map_err(|_| PeerError::Other("state lock poisoned".into()))?;
        if let Some(s) = g.as_ref() {
            return Ok(s.clone());
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("cvbench-{}-{}-", self.kind.name(), std::process::id()))
            .tempdir_in("/run")
            .map_err(|e| PeerError::Io(PathBuf::from("/run"), e))?;
        // Gone even if the process dies of Ctrl-C before this state drops.
        cvbench_signals::remove_on_interrupt(dir.path().to_path_buf());
        let rootfs = dir.path().join("rootfs");
        let bin = paths::workload_binary().map_err(|e| PeerError::Other(e.to_string()))?;
        oci::make_rootfs(&rootfs, &bin)?;
        let root = dir.path().join("state");
        std::fs::create_dir_all(&root).map_err(|e| PeerError::Io(root.clone(), e))?;
        let s = std::sync::Arc::new(State { dir, rootfs, root });
        *g = Some(s.clone());
        Ok(s)
    }

    /// A command for the runtime with our state root, set up for this host.
    fn command(&self, st: &State) -> Command {
        let mut cmd = Command::new(self.kind.program().unwrap_or_else(|_| PathBuf::from(self.kind.name())));
        cmd.arg("--root").arg(&st.root);
        if let Kind::Gvisor(p) = self.kind {
            cmd.arg(p.flag());
        }
        if self.kind == Kind::Crun && needs_unified_detach() {
            detach_unified(&mut cmd);
        }
        cmd
    }
}

/// crun 1.8 rejects a hybrid hierarchy whose cgroup2 mount has controllers.
pub(crate) fn needs_unified_detach() -> bool {
    std::fs::read_to_string(Path::new(UNIFIED).join("cgroup.controllers"))
        .map(|s| !s.trim().is_empty())
        .unwrap_or(false)
}

pub(crate) fn detach_unified(cmd: &mut Command) {
    let (Ok(root), Ok(unified)) = (CString::new("/"), CString::new(UNIFIED)) else {
        return;
    };
    // SAFETY: runs in the child between fork and exec; unshare, mount and
    // umount2 are raw syscalls (async-signal-safe) on strings prepared
    // before the fork. The new mount namespace is private to the child, so
    // detaching the cgroup2 mount there leaves the host's mounts alone.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::umount2(unified.as_ptr(), libc::MNT_DETACH) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Does the network namespace at `netns` show `net.core.rmem_default` (which runsc of mid-2024
/// takes for the mark of the host's own namespace)? Checked from a short-lived thread that joins
/// it: `/proc/sys/net` shows the namespace of the thread that reads it.
fn shows_rmem_default(netns: &Path) -> bool {
    let Ok(f) = std::fs::File::open(netns) else { return false };
    std::thread::spawn(move || {
        use std::os::fd::AsFd;
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).is_ok()
            && Path::new("/proc/sys/net/core/rmem_default").exists()
    })
    .join()
    .unwrap_or(false)
}

/// runsc of mid-2024 takes a network namespace for the host's own when
/// `/proc/sys/net/core/rmem_default` exists in it, and refuses it; recent kernels (6.12 and 6.18, seen) show
/// that file in every namespace. Run in a private mount namespace with an empty read-only tmpfs
/// over `/proc/sys/net`, runsc finds it missing and takes the run's namespace (the host's mounts
/// and sysctls are untouched; the sentry's netstack does not read the host's).
///
/// That tmpfs leaves `/proc` partly covered, and a user namespace may mount a new procfs only
/// when its mount namespace already holds one that is fully visible (the kernel's
/// `mount_too_revealing`): runsc's KVM platform boots its sandbox in a user namespace with its
/// own pid namespace and mounts a procfs in its chroot, which the covered `/proc` alone made fail
/// with EPERM ("error mounting proc in chroot", seen in the test host). So a second, uncovered
/// procfs is mounted at `visible_proc` (an empty directory of the run), in the same private mount
/// namespace: it goes away with runsc's processes.
fn hide_proc_sys_net(cmd: &mut Command, visible_proc: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(root), Ok(target), Ok(fstype), Ok(procfs), Ok(proc_at)) = (
        CString::new("/"),
        CString::new("/proc/sys/net"),
        CString::new("tmpfs"),
        CString::new("proc"),
        CString::new(visible_proc.as_os_str().as_bytes()),
    ) else {
        return;
    };
    // SAFETY: runs in the child between fork and exec; unshare and mount are raw syscalls
    // (async-signal-safe) on strings prepared before the fork. The mount namespace is the
    // child's own, so the tmpfs and the second procfs are seen by runsc and its children only.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let private = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), private, std::ptr::null()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            if libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), flags, std::ptr::null()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let proc_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            if libc::mount(procfs.as_ptr(), proc_at.as_ptr(), procfs.as_ptr(), proc_flags, std::ptr::null()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// youki 0.7's `run` blocks SIGCHLD only after it has started the container and then waits for
/// that signal: a workload that exits first leaves it waiting beside a zombie forever (about one
/// run in three here). Started with SIGCHLD already blocked (the mask survives exec), the early
/// signal stays pending until youki's wait collects it.
fn block_sigchld(cmd: &mut Command) {
    // SAFETY: runs in the child between fork and exec; sigprocmask is async-signal-safe and the
    // set is built on the child's stack.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

struct OciInstance {
    backend: &'static str,
    kind: Kind,
    child: ChildProcess,
    id: String,
    bundle: PathBuf,
    pid_file: PathBuf,
    delete_cmd: Command,
    peer: Option<NetPath>,
    scratch: Option<tempfile::TempDir>,
    notes: Vec<String>,
    _state: std::sync::Arc<State>,
}

impl Backend for OciRuntime {
    fn id(&self) -> BackendId {
        self.kind.id()
    }

    fn check(&self) -> Result<(), String> {
        self.kind.program()?;
        if !crate::env::is_root() {
            return Err("needs root to create containers".into());
        }
        paths::workload_binary().map(|_| ()).map_err(|e| e.to_string())
    }

    fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn Instance>, BackendError> {
        let name = self.kind.name();
        let w = spec.workload.name();
        let st = self.state().map_err(|e| launch_err(name, w, e))?;
        let bin = paths::workload_binary().map_err(|e| launch_err(name, w, e))?;
        let mut args = vec![spec.workload.to_string()];
        args.extend(spec.args.iter().cloned());
        let mut notes = Vec::new();
        if let Kind::Gvisor(p) = self.kind {
            notes.push(format!(
                "{name}: gVisor sandbox, platform {}: the workload's system calls are served by the sentry (a user-space kernel), which makes its own seccomp-filtered host calls; network runs through gVisor's netstack (part of what is measured); the disk volume is served through the gofer; footprint counts runsc, the gofer, the sandbox and its stubs",
                p.how()
            ));
        }
        notes.push(format!(
            "{name}: exec'd CLI; generated OCI bundle (read-only rootfs with the workload only), namespaces {}, capabilities kept {}, no seccomp profile (as `runc spec` generates); footprint counts the runtime process (the container's parent in `run` mode) and the container",
            oci::NAMESPACES.join(","),
            oci::CAPS.join(",")
        ));
        let (mut peer, mut scratch) = (None, None);
        match spec.needs() {
            Needs { network: true, .. } => {
                let p =
                    NetPath::start(&bin, self.kind.name(), Client::NewNamespace).map_err(|e| launch_err(name, w, e))?;
                args.extend(["--peer".to_string(), p.peer()]);
                notes.push(p.note());
                peer = Some(p);
            }
            Needs { disk: true, .. } => {
                let d = super::scratch("cvbench-disk-").map_err(|e| launch_err(name, w, e))?;
                args.extend(["--dir".to_string(), oci::DATA_DIR.to_string()]);
                notes.push(format!("disk: bind volume from {}", d.path().display()));
                scratch = Some(d);
            }
            _ => {}
        }
        let id = super::unique(&format!("cvb-{name}"));
        let bundle = st.dir.path().join("bundles").join(&id);
        oci::write_bundle(
            &bundle,
            &RunConfig {
                rootfs: &st.rootfs,
                args,
                netns: peer.as_ref().and_then(NetPath::client_netns),
                data: scratch.as_ref().map(|d| d.path()),
            },
        )
        .map_err(|e| launch_err(name, w, e))?;
        let pid_file = bundle.join("pid");
        let mut cmd = self.command(&st);
        if matches!(self.kind, Kind::Gvisor(_)) {
            // `sandbox`: gVisor's own netstack over the interfaces of the namespace the run made;
            // `none`: only the netstack's loopback (runsc refuses to take the host's namespace).
            cmd.arg(if peer.is_some() { "--network=sandbox" } else { "--network=none" });
            if peer.as_ref().and_then(NetPath::client_netns).is_some_and(|ns| shows_rmem_default(&ns)) {
                let visible_proc = st.dir.path().join(format!("proc-{id}"));
                std::fs::create_dir_all(&visible_proc).map_err(|e| launch_err(name, w, e))?;
                hide_proc_sys_net(&mut cmd, &visible_proc);
                notes.push(format!("{name}: runsc runs in a private mount namespace with /proc/sys/net hidden (runsc 2024 mistakes any namespace showing net.core.rmem_default, as recent kernels do, for the host's)"));
            }
        }
        if self.kind == Kind::Youki {
            block_sigchld(&mut cmd);
            notes.push(format!("{name}: started with SIGCHLD blocked (youki 0.7's `run` otherwise misses the exit of a workload that ends before it waits, and hangs); the workload inherits that mask"));
        }
        cmd.arg("run").arg("--bundle").arg(&bundle).arg("--pid-file").arg(&pid_file).arg(&id);
        let mut delete_cmd = self.command(&st);
        delete_cmd.args(["delete", "--force", &id]);
        let child = ChildProcess::spawn(name, cmd, spec)?;
        Ok(Box::new(OciInstance {
            backend: name,
            kind: self.kind,
            child,
            id,
            bundle,
            pid_file,
            delete_cmd,
            peer,
            scratch,
            notes,
            _state: st,
        }))
    }
}

impl Instance for OciInstance {
    fn pids(&self) -> Vec<i32> {
        let runtime = self.child.pid();
        if matches!(self.kind, Kind::Gvisor(_)) {
            // runsc's gofer, the sandbox and the stubs that run the workload's code are all its
            // descendants; the pid file names the sandbox, already among them.
            let mut v = vec![runtime];
            v.extend(super::descendants(runtime));
            return v;
        }
        let mut v = vec![runtime];
        // runc writes its pid file only after starting the process, so at
        // READY it may not be there yet; the container's init is then found
        // as the runtime's child.
        match super::read_pid(&self.pid_file) {
            Some(p) => v.push(p),
            None => v.extend(super::children(runtime)),
        }
        v
    }

    fn close_stdin(&mut self) {
        self.child.close_stdin();
    }

    fn wait(&mut self, timeout: Duration) -> Result<ExitInfo, BackendError> {
        let r = self.child.wait(timeout);
        if let Some(p) = self.peer.as_mut() {
            p.stop();
        }
        r
    }

    fn stop(&mut self) -> Result<ExitInfo, BackendError> {
        self.child.stop(Duration::from_secs(2))
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
}

impl Drop for OciInstance {
    fn drop(&mut self) {
        // `run` removes the container when it ends normally; after a kill (or
        // a timeout) the container may outlive the runtime process.
        let clean = self.child.try_wait(Duration::ZERO).ok().flatten().is_some_and(|e| e.signal.is_none());
        if !clean {
            let _ = self.child.stop(Duration::from_millis(200));
            if let Err(e) = super::run_tool(&mut self.delete_cmd) {
                if !e.to_string().contains("does not exist") && !e.to_string().contains("not exist") {
                    eprintln!("cvbench: {}: removing container {}: {e}", self.backend, self.id);
                }
            }
        }
        if let Some(p) = self.peer.as_mut() {
            p.stop();
        }
        self.scratch.take();
        let _ = std::fs::remove_dir_all(&self.bundle);
    }
}
