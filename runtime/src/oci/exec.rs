//! `exec`: run another process in a running container (what `docker exec` asks for): join
//! its namespaces and cgroup, take the user, capabilities, no_new_privs and the bundle's
//! seccomp profile, then exec. Between fork and exec only async-signal-safe raw system calls
//! run, on data prepared here; the privilege drop is the container init's own
//! ([`crate::process::privileges`]), and a failed step comes back with its name.

use super::Error;
use crate::process::privileges::{AppArmorExec, CapPlan, Privileges, StepFailed};
use crate::process::{self as proc, channel, init};
use crate::state::State;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// The process to run (a runtime-spec `process` object).
pub struct ProcessSpec(oci_spec::runtime::Process);

impl ProcessSpec {
    /// Read a `process.json`.
    pub fn load(path: &Path) -> Result<ProcessSpec, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
        let p: oci_spec::runtime::Process = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Json { path: path.to_path_buf(), reason: e.to_string() })?;
        Self::checked(p)
    }

    /// A process from plain arguments (root, the container's defaults).
    pub fn from_args(args: Vec<String>, env: Vec<String>, cwd: Option<String>) -> Result<ProcessSpec, Error> {
        let mut p = oci_spec::runtime::Process::default();
        p.set_args(Some(args));
        let mut e = vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
        e.extend(env);
        p.set_env(Some(e));
        p.set_cwd(PathBuf::from(cwd.unwrap_or_else(|| "/".into())));
        p.set_capabilities(None);
        p.set_rlimits(None);
        Self::checked(p)
    }

    fn checked(p: oci_spec::runtime::Process) -> Result<ProcessSpec, Error> {
        if p.terminal() == Some(true) {
            return Err(Error::Unsupported("process.terminal (no console support)".into()));
        }
        if p.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(Error::Invalid { field: "process.args".into(), reason: "must name the program".into() });
        }
        if p.selinux_label().as_ref().is_some_and(|s| !s.is_empty()) && super::spec_lsm_enabled("selinux") {
            return Err(Error::Unsupported("process.selinuxLabel".into()));
        }
        if let Some(profile) = p.apparmor_profile() {
            AppArmorExec::new(profile)
                .map_err(|reason| Error::Invalid { field: "process.apparmorProfile".into(), reason })?;
        }
        Ok(ProcessSpec(p))
    }
}

const NS: [(&str, libc::c_int); 6] = [
    ("user", libc::CLONE_NEWUSER),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("mnt", libc::CLONE_NEWNS),
];

fn same_ns(pid: i32, name: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(format!("/proc/{pid}/ns/{name}")).map(|m| m.ino());
    let b = std::fs::metadata(format!("/proc/self/ns/{name}")).map(|m| m.ino());
    matches!((a, b), (Ok(x), Ok(y)) if x == y)
}

fn open(path: &str) -> Result<OwnedFd, crate::Error> {
    std::fs::File::open(path)
        .map(OwnedFd::from)
        .map_err(|source| crate::Error::Io { path: PathBuf::from(path), source })
}

/// Run `p` in container `id`. With `detach`, return 0 once it started; else its exit code.
pub fn exec(
    id: &str,
    run_root: &Path,
    p: &ProcessSpec,
    detach: bool,
    pid_file: Option<&Path>,
) -> Result<i32, crate::Error> {
    let st: State = super::load_state(run_root, id)?;
    let status = st.current_status();
    if status != crate::state::Status::Running && status != crate::state::Status::Created {
        return Err(crate::Error::BadStatus { id: id.into(), verb: "exec", status });
    }
    let pid = st.pid;
    let p = &p.0;
    let args = p.args().clone().unwrap_or_default();
    let env = p.env().clone().unwrap_or_default();
    // Resolve the program inside the container's root, from the process's PATH.
    let prog = &args[0];
    let prog = if prog.contains('/') {
        prog.clone()
    } else {
        let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or("/usr/local/bin:/usr/bin:/bin");
        path.split(':')
            .map(|d| format!("{}/{prog}", d.trim_end_matches('/')))
            .find(|c| Path::new(&format!("/proc/{pid}/root{c}")).exists())
            .ok_or_else(|| crate::Error::Config(format!("exec: {prog} not found in the container's PATH")))?
    };
    let mut joins: Vec<(OwnedFd, libc::c_int)> = Vec::new();
    for (name, flag) in NS {
        if !same_ns(pid, name) {
            joins.push((open(&format!("/proc/{pid}/ns/{name}"))?, flag));
        }
    }
    let pid_ns = (!same_ns(pid, "pid")).then(|| open(&format!("/proc/{pid}/ns/pid"))).transpose()?;
    let cgroup_files: Vec<CString> = st
        .cgroups
        .iter()
        .map(|d| d.join("cgroup.procs"))
        .filter(|f| f.exists())
        .filter_map(|f| CString::new(f.to_string_lossy().into_owned()).ok())
        .collect();
    let cwd =
        CString::new(p.cwd().to_string_lossy().into_owned()).map_err(|_| crate::Error::Config("cwd has NUL".into()))?;
    let u = p.user();
    let (uid, gid) = (u.uid(), u.gid());
    let groups: Vec<libc::gid_t> = u.additional_gids().clone().unwrap_or_default();
    let last_cap = crate::capabilities::last_cap();
    // Without a capabilities object the process gets none (bounding set included).
    let caps = match p.capabilities() {
        Some(c) => {
            let m = |s: &Option<oci_spec::runtime::Capabilities>| -> Result<u64, crate::Error> {
                let names: Vec<String> = s.iter().flatten().map(|c| format!("CAP_{c}")).collect();
                Ok(crate::capabilities::mask(&names)?)
            };
            CapPlan {
                bounding: m(c.bounding())?,
                effective: m(c.effective())?,
                permitted: m(c.permitted())?,
                inheritable: m(c.inheritable())?,
                ambient: m(c.ambient())?,
                last_cap,
            }
        }
        None => CapPlan { bounding: 0, effective: 0, permitted: 0, inheritable: 0, ambient: 0, last_cap },
    };
    let nnp = p.no_new_privileges().unwrap_or(false);
    // As for the container's first process: the profile applies where AppArmor is enabled.
    let apparmor = match p.apparmor_profile() {
        Some(profile) if super::spec_lsm_enabled("apparmor") => {
            AppArmorExec::new(profile).map_err(crate::Error::Config)?
        }
        _ => None,
    };
    // The bundle's seccomp profile governs exec'd processes too.
    let seccomp = match &st.bundle {
        Some(b) => {
            let cfg = super::load_bundle(b, run_root)?;
            match &cfg.seccomp_profile {
                Some(prof) => {
                    Some(crate::seccomp_profile::compile(prof).map_err(|e| crate::Error::Config(e.to_string()))?)
                }
                None => None,
            }
        }
        None => Some(crate::seccomp::default_filter()),
    };
    let mut cmd = std::process::Command::new(&prog);
    cmd.arg0(&args[0]).args(&args[1..]).env_clear();
    for e in &env {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    let setup = ChildSetup {
        cgroup_files,
        joins: joins.iter().map(|(f, t)| (f.as_raw_fd(), *t)).collect(),
        cwd,
        privileges: Privileges { uid, gid, groups, caps: Some(caps), no_new_privs: nnp, seccomp, apparmor },
    };
    // A failed step goes to the parent as a record on this pipe (std passes only the errno).
    let (status_rd, status_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(proc::Error::Channel)?;
    let report_fd = status_wr.as_raw_fd();
    // SAFETY: the closure runs between fork and exec: `ChildSetup::run` and `init::report`
    // make only async-signal-safe raw system calls on data prepared above, and `report_fd`
    // stays open in the parent until `spawn` returns.
    unsafe {
        cmd.pre_exec(move || {
            setup.run().map_err(|StepFailed { step, errno }| {
                init::report(report_fd, step, errno);
                std::io::Error::from_raw_os_error(errno)
            })
        });
    }
    let pid_guard = match &pid_ns {
        Some(fd) => Some(crate::container::PidNsGuard::enter(fd)?),
        None => None,
    };
    let spawned = cmd.spawn();
    drop(pid_guard);
    drop(status_wr);
    let mut child = match spawned {
        Ok(c) => c,
        Err(source) => {
            let failed = channel::read_record(&mut std::fs::File::from(status_rd)).ok().flatten();
            return Err(match failed.filter(|r| r.kind == channel::KIND_ERROR) {
                Some(r) => {
                    let step = init::step_label(r.code).map_or(format!("step {}", r.code), str::to_string);
                    proc::Error::ChildStep { step, source }.into()
                }
                None => crate::Error::Config(format!("exec {prog}: {source}")),
            });
        }
    };
    if let Some(pf) = pid_file {
        std::fs::write(pf, child.id().to_string())
            .map_err(|source| crate::Error::Io { path: pf.to_path_buf(), source })?;
    }
    if detach {
        return Ok(0);
    }
    let status = child.wait().map_err(|source| crate::Error::Io { path: PathBuf::from(&prog), source })?;
    Ok(status.code().unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)))
}

/// What the forked child does before exec, prepared in the parent.
struct ChildSetup {
    /// `cgroup.procs` files to join (best effort, as a process that cannot join stays in
    /// the caller's cgroup rather than failing `exec`).
    cgroup_files: Vec<CString>,
    /// Namespaces to join: (fd held open by the parent, CLONE_NEW* type).
    joins: Vec<(RawFd, libc::c_int)>,
    cwd: CString,
    privileges: Privileges,
}

impl ChildSetup {
    /// Runs in the forked child: only async-signal-safe raw system calls, no allocation.
    fn run(&self) -> Result<(), StepFailed> {
        let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
        for f in &self.cgroup_files {
            let _ = init::attach_self(f);
        }
        for (fd, nstype) in &self.joins {
            // SAFETY: setns(2) on a namespace fd the parent holds open until spawn returns.
            if unsafe { libc::setns(*fd, *nstype) } != 0 {
                return Err(StepFailed { step: init::STEP_SETNS, errno: errno() });
            }
        }
        // SAFETY: chdir(2) with a NUL-terminated path.
        if unsafe { libc::chdir(self.cwd.as_ptr()) } != 0 {
            return Err(StepFailed { step: init::STEP_CWD, errno: errno() });
        }
        self.privileges.drop_privileges()?;
        self.privileges.install_late_seccomp()
    }
}
