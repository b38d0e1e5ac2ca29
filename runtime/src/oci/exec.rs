//! `exec`: run another process in a running container (what `docker exec` asks for): join
//! its namespaces and cgroup, take the user, capabilities, no_new_privs and the bundle's
//! seccomp profile, then exec. Between fork and exec only raw system calls run, on data
//! prepared here.

use super::Error;
use crate::state::State;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
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
        for (set, field) in
            [(p.apparmor_profile(), "process.apparmorProfile"), (p.selinux_label(), "process.selinuxLabel")]
        {
            if set.as_ref().is_some_and(|s| !s.is_empty()) && super::spec_lsm_enabled(field) {
                return Err(Error::Unsupported(field.into()));
            }
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
    let caps = match p.capabilities() {
        Some(c) => {
            let m = |s: &Option<oci_spec::runtime::Capabilities>| -> Result<u64, crate::Error> {
                let names: Vec<String> = s.iter().flatten().map(|c| format!("CAP_{c}")).collect();
                Ok(crate::capabilities::mask(&names)?)
            };
            Some([m(c.bounding())?, m(c.effective())?, m(c.permitted())?, m(c.inheritable())?, m(c.ambient())?])
        }
        None => Some([0; 5]),
    };
    let last_cap = crate::capabilities::last_cap();
    let nnp = p.no_new_privileges().unwrap_or(false);
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
    let join_raw: Vec<(i32, libc::c_int)> = joins.iter().map(|(f, t)| (f.as_raw_fd(), *t)).collect();
    // SAFETY: the closure runs between fork and exec and makes only raw system calls
    // (open/write/close, setns, chdir, set*id, prctl, capset, seccomp) on data prepared above.
    unsafe {
        cmd.pre_exec(move || {
            child_setup(&cgroup_files, &join_raw, &cwd, uid, gid, &groups, caps, last_cap, nnp, seccomp.as_deref())
        });
    }
    let _pid_guard = match &pid_ns {
        Some(fd) => Some(crate::container::PidNsGuard::enter(fd)?),
        None => None,
    };
    let mut child = cmd.spawn().map_err(|e| crate::Error::Config(format!("exec {prog}: {e}")))?;
    drop(_pid_guard);
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

fn err() -> std::io::Error {
    std::io::Error::last_os_error()
}

#[allow(clippy::too_many_arguments)]
fn child_setup(
    cgroup_files: &[CString],
    joins: &[(i32, libc::c_int)],
    cwd: &CString,
    uid: u32,
    gid: u32,
    groups: &[libc::gid_t],
    caps: Option<[u64; 5]>,
    last_cap: u32,
    nnp: bool,
    seccomp: Option<&[libc::sock_filter]>,
) -> std::io::Result<()> {
    // SAFETY: raw system calls on prepared, NUL-terminated data; see the caller.
    unsafe {
        for f in cgroup_files {
            let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
        }
        for (fd, t) in joins {
            if libc::setns(*fd, *t) != 0 {
                return Err(err());
            }
        }
        if libc::chdir(cwd.as_ptr()) != 0 {
            return Err(err());
        }
        if let Some(c) = caps {
            for cap in 0..=last_cap.min(63) {
                if c[0] & (1u64 << cap) == 0 {
                    libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
                }
            }
            if uid != 0 {
                libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0);
            }
        }
        if !nnp {
            if let Some(f) = seccomp {
                install(f)?;
            }
        }
        if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0
            || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
            || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
        {
            return Err(err());
        }
        if let Some(c) = caps {
            #[repr(C)]
            struct Hdr {
                v: u32,
                pid: i32,
            }
            #[repr(C)]
            struct Data {
                e: u32,
                p: u32,
                i: u32,
            }
            let hdr = Hdr { v: 0x2008_0522, pid: 0 };
            let d = [
                Data { e: c[1] as u32, p: c[2] as u32, i: c[3] as u32 },
                Data { e: (c[1] >> 32) as u32, p: (c[2] >> 32) as u32, i: (c[3] >> 32) as u32 },
            ];
            if libc::syscall(libc::SYS_capset, &hdr, d.as_ptr()) != 0 {
                return Err(err());
            }
            for cap in 0..=last_cap.min(63) {
                if c[4] & c[2] & c[3] & (1u64 << cap) != 0 {
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                        cap as libc::c_ulong,
                        0,
                        0,
                    );
                }
            }
        }
        if nnp {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(err());
            }
            if let Some(f) = seccomp {
                install(f)?;
            }
        }
    }
    Ok(())
}

fn install(f: &[libc::sock_filter]) -> std::io::Result<()> {
    let prog = libc::sock_fprog { len: f.len() as libc::c_ushort, filter: f.as_ptr() as *mut libc::sock_filter };
    // SAFETY: `prog` points at a filter that lives until exec; the kernel copies it.
    if unsafe { libc::syscall(libc::SYS_seccomp, 1u32, 0u32, &prog as *const libc::sock_fprog) } != 0 {
        return Err(err());
    }
    Ok(())
}
