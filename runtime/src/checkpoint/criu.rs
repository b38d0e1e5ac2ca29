//! `checkpoint` and `restore` of our runtime's containers through the `criu` binary, the way
//! runc drives it. Checkpoint: `criu dump` of the container's init (its namespaces, mounts,
//! seccomp filter and credentials come along; the process is stopped), the container's stdio
//! recorded as `descriptors.json`, the image sealed ([`super::image`]). The init leads its own
//! session (`process/init.rs`), as CRIU needs without `--shell-job`. Restore: the image
//! verified as untrusted input before anything exists, a cgroup of its own made from the
//! bundle's limits (criu starts inside it, so every restored task is charged there and keeps
//! the device rules), the bundle's rootfs bind-mounted in a private mount namespace as criu's
//! `--root`, the recorded stdio pipes mapped onto ours (`--inherit-fd`), then
//! `criu restore --restore-detached` with this process as the child subreaper: the restored
//! init becomes our child, its pid goes to the pid file, and we wait for it like `run`.
//!
//! What is not carried: the container's writable overlay layer (the restored root is the
//! bundle's rootfs, as in runc), and a network namespace with interfaces other than loopback.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::image::{self, ImageError, Manifest};
use crate::config::RootfsSource;
use crate::state::{Keeper, State, Status};

/// The name this runtime writes into its images' manifests.
pub const RUNTIME: &str = "cvbench-runtime";
/// The container's stdio as criu saw it, one entry per descriptor 0..=2.
pub const DESCRIPTORS: &str = "descriptors.json";

/// Why a checkpoint or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("criu is not installed (apt-get install criu)")]
    NoCriu,
    #[error("container `{0}` is not running: only a running container can be checkpointed")]
    NotRunning(String),
    #[error("checkpoint image directory {0} already holds files")]
    ImageNotEmpty(PathBuf),
    #[error("cannot start criu")]
    Spawn(#[source] std::io::Error),
    #[error("criu {verb} failed ({status}); the end of its log {log}:\n{tail}")]
    Criu { verb: &'static str, status: String, log: PathBuf, tail: String },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("the checkpoint's stdio record {path} is not valid: {reason}")]
    Descriptors { path: PathBuf, reason: String },
    #[error("restore needs the bundle's rootfs as a directory, not an image from the store")]
    RootfsNotDir,
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wait for the restored container (pid {pid})")]
    Wait {
        pid: i32,
        #[source]
        source: nix::Error,
    },
    #[error(transparent)]
    Runtime(#[from] Box<crate::Error>),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn runtime(e: impl Into<crate::Error>) -> Error {
    Error::Runtime(Box::new(e.into()))
}

/// The criu binary on `PATH`.
pub fn criu_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("criu")).find(|p| p.is_file())
}

/// The facts that decide whether CRIU can checkpoint here, read without running it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriuFacts {
    /// `criu` on `PATH`, with the version `criu --version` prints (major, minor).
    pub criu: Option<(std::path::PathBuf, Option<(u32, u32)>)>,
    /// The kernel maps a `[vvar_vclock]` area into every process (x86 since 6.13: the vDSO's
    /// clock pages split from `[vvar]`).
    pub vvar_vclock: bool,
}

impl CriuFacts {
    pub fn probe() -> CriuFacts {
        let criu = criu_binary().map(|p| {
            let v = std::process::Command::new(&p)
                .arg("--version")
                .output()
                .ok()
                .and_then(|o| parse_criu_version(&String::from_utf8_lossy(&o.stdout)));
            (p, v)
        });
        let vvar_vclock = std::fs::read_to_string("/proc/self/maps").is_ok_and(|m| m.contains("[vvar_vclock]"));
        CriuFacts { criu, vvar_vclock }
    }

    /// Ok(what runs) or Err(why CRIU cannot checkpoint here).
    pub fn verdict(&self) -> Result<String, String> {
        let Some((path, version)) = &self.criu else {
            return Err(
                "criu is not installed, so runc and cvbench-runtime cannot checkpoint here (fix: apt-get install criu)"
                    .into(),
            );
        };
        let shown = version.map_or("an unknown version".into(), |(a, b)| format!("{a}.{b}"));
        // CRIU learned the split mapping in 4.1 (upstream issue #2532); older releases fail
        // in `criu check` and every dump with "vdso: Unexpected rt vDSO area bounds".
        if self.vvar_vclock && version.is_none_or(|v| v < (4, 1)) {
            return Err(format!(
                "criu {shown} ({}) cannot run on this kernel: the kernel maps [vvar_vclock] (x86 6.13 and later), which CRIU handles from 4.1 on; `criu check` fails with \"vdso: Unexpected rt vDSO area bounds\", so runc and cvbench-runtime checkpoint/restore run in the test host (Debian's kernel)",
                path.display()
            ));
        }
        Ok(format!("criu {shown} at {}: runc and cvbench-runtime checkpoint/restore", path.display()))
    }
}

/// `Version: 3.17.1` → (3, 17).
fn parse_criu_version(out: &str) -> Option<(u32, u32)> {
    let v = out.lines().find_map(|l| l.strip_prefix("Version:"))?.trim();
    let mut it = v.split('.').map(|x| x.parse::<u32>().ok());
    Some((it.next()??, it.next().flatten().unwrap_or(0)))
}

/// The lines of a criu log worth showing: its last error lines and its last lines (the cause
/// often sits just before "Dumping FAILED" without an error mark), in log order.
fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let errors: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].contains("Error")).collect();
    let mut pick: Vec<usize> = errors[errors.len().saturating_sub(6)..].to_vec();
    pick.extend(lines.len().saturating_sub(6)..lines.len());
    pick.sort_unstable();
    pick.dedup();
    pick.into_iter().map(|i| lines[i]).collect::<Vec<_>>().join("\n")
}

/// Check one recorded descriptor: a pipe (`pipe:[INODE]`), a socket, anon inode or an
/// absolute path, printable, bounded. Only pipes are mapped onto the restorer's descriptors.
fn check_descriptor(d: &str) -> Result<Option<u64>, String> {
    if d.len() > 4096 || d.chars().any(|c| c.is_control()) {
        return Err(format!("entry {d:?} is too long or holds control characters"));
    }
    if let Some(ino) = d.strip_prefix("pipe:[").and_then(|r| r.strip_suffix(']')) {
        return ino.parse::<u64>().map(Some).map_err(|_| format!("entry {d:?} is not pipe:[<inode>]"));
    }
    if d.starts_with('/') || d.starts_with("socket:[") || d.starts_with("anon_inode:") {
        return Ok(None);
    }
    Err(format!("entry {d:?} is neither a pipe, a socket nor an absolute path"))
}

/// Read and check `descriptors.json`: three entries; the pipes among them as criu
/// `--inherit-fd` values (`fd[N]:pipe:[INODE]`).
pub fn inherit_fds(image_dir: &Path) -> Result<Vec<String>, Error> {
    let path = image_dir.join(DESCRIPTORS);
    let bad = |reason: String| Error::Descriptors { path: path.clone(), reason };
    let text = fs::read(&path).map_err(|e| bad(e.to_string()))?;
    let v: Vec<String> = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    if v.len() != 3 {
        return Err(bad(format!("{} entries, not 3 (stdin, stdout, stderr)", v.len())));
    }
    let mut out = Vec::new();
    for (fd, d) in v.iter().enumerate() {
        if let Some(ino) = check_descriptor(d).map_err(bad)? {
            out.push(format!("fd[{fd}]:pipe:[{ino}]"));
        }
    }
    Ok(out)
}

/// `checkpoint`: dump the running container `id` into `image_dir` (made if missing, must be
/// empty) and seal it. The container's processes are stopped by the dump.
pub fn checkpoint(id: &str, run_root: &Path, image_dir: &Path) -> Result<Manifest, Error> {
    let criu = criu_binary().ok_or(Error::NoCriu)?;
    let st = crate::oci::load_state(run_root, id).map_err(runtime)?;
    if st.current_status() != Status::Running {
        return Err(Error::NotRunning(id.to_string()));
    }
    fs::create_dir_all(image_dir).map_err(io(image_dir))?;
    if fs::read_dir(image_dir).map_err(io(image_dir))?.next().is_some() {
        return Err(Error::ImageNotEmpty(image_dir.to_path_buf()));
    }
    let mut desc = Vec::new();
    for fd in 0..3 {
        let p = PathBuf::from(format!("/proc/{}/fd/{fd}", st.pid));
        desc.push(fs::read_link(&p).map(|t| t.to_string_lossy().into_owned()).unwrap_or_else(|_| "/dev/null".into()));
    }
    let dp = image_dir.join(DESCRIPTORS);
    fs::write(&dp, serde_json::to_vec(&desc).unwrap_or_default()).map_err(io(&dp))?;
    let log = st.run_dir.join("criu-dump.log");
    let status = Command::new(criu)
        .arg("dump")
        .arg("--tree")
        .arg(st.pid.to_string())
        .arg("--images-dir")
        .arg(image_dir)
        .arg("--work-dir")
        .arg(&st.run_dir)
        .arg("--log-file")
        .arg("criu-dump.log")
        .arg("-v4")
        .arg("--manage-cgroups=ignore")
        .status()
        .map_err(Error::Spawn)?;
    if !status.success() {
        return Err(Error::Criu { verb: "dump", status: status.to_string(), tail: log_tail(&log), log });
    }
    Ok(image::seal(image_dir, RUNTIME)?)
}

/// What a restore made, removed (restored tasks killed first) when dropped.
struct Made {
    state: State,
}

impl Drop for Made {
    fn drop(&mut self) {
        let _ = crate::cleanup::remove_leftovers(&self.state);
        crate::cleanup::untrack(&self.state.id);
    }
}

/// Options of `restore`.
pub struct RestoreOptions<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub run_root: &'a Path,
    pub image_dir: &'a Path,
    pub pid_file: Option<&'a Path>,
}

/// `restore`: verify the image, restore it as container `o.id` from the bundle `o.bundle`,
/// write the pid file, wait for the restored container and return its exit code (128+signal
/// when killed). Everything made is removed when it ends or fails.
pub fn restore(o: &RestoreOptions) -> Result<i32, Error> {
    image::verify(o.image_dir, RUNTIME)?;
    let inherit = inherit_fds(o.image_dir)?;
    let criu = criu_binary().ok_or(Error::NoCriu)?;
    let b = crate::oci::load_warned(o.bundle, o.run_root).map_err(runtime)?;
    let rootfs = match &b.config.rootfs {
        RootfsSource::Dir(p) => p.clone(),
        RootfsSource::Image(_) => return Err(Error::RootfsNotDir),
    };
    let run_dir = o.run_root.join("containers").join(o.id);
    let parent = run_dir.parent().unwrap_or(o.run_root);
    fs::create_dir_all(parent).map_err(io(parent))?;
    match fs::create_dir(&run_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(runtime(crate::Error::Exists(o.id.to_string())))
        }
        Err(e) => return Err(io(&run_dir)(e)),
    }
    let me = std::process::id();
    let mut made = Made {
        state: State {
            id: o.id.to_string(),
            status: Status::Creating,
            owner_pid: me,
            owner_start: crate::state::proc_start_time(me as i32).unwrap_or(0),
            bundle: Some(o.bundle.to_path_buf()),
            keeper: Keeper::Owner,
            run_dir: run_dir.clone(),
            ..Default::default()
        },
    };
    crate::cleanup::install_signal_handlers();
    let mut cg =
        crate::cgroups::manager(&b.config.cgroup, &format!("cvbench-{me}-restore-{}", o.id)).map_err(runtime)?;
    let created = cg.create(&b.config.resources);
    made.state.cgroups = cg.paths();
    made.state.cgroup_parents = cg.created_parents();
    crate::cleanup::track(&made.state);
    created.map_err(runtime)?;
    made.state.save().map_err(runtime)?;
    // The files criu writes "0" to, between fork and exec, to move itself into the cgroup.
    let mut join = cg.self_attach_files();
    if join.is_empty() {
        join = cg.paths().iter().map(|p| p.join("cgroup.procs")).collect();
    }
    let join: Vec<OwnedFd> = join
        .iter()
        .map(|p| fs::OpenOptions::new().write(true).open(p).map(OwnedFd::from).map_err(io(p)))
        .collect::<Result<_, _>>()?;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| Error::Io {
            path: p.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })
    };
    let (root_c, rootfs_c) = (CString::new("/").unwrap_or_default(), c(&rootfs)?);
    let criu_pid_file = run_dir.join("criu.pid");
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER and a constant argument changes only this
    // process's reaping role: the restored init, once criu exits, becomes our child.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(io(Path::new("prctl(PR_SET_CHILD_SUBREAPER)"))(std::io::Error::last_os_error()));
    }
    let mut cmd = Command::new(criu);
    cmd.arg("restore")
        .arg("--images-dir")
        .arg(o.image_dir)
        .arg("--work-dir")
        .arg(&run_dir)
        .arg("--log-file")
        .arg("criu-restore.log")
        .arg("-v4")
        .arg("--root")
        .arg(&rootfs)
        .arg("--restore-detached")
        .arg("--pidfile")
        .arg(&criu_pid_file)
        .arg("--manage-cgroups=ignore");
    for i in &inherit {
        cmd.arg("--inherit-fd").arg(i);
    }
    let join_raw: Vec<i32> = join.iter().map(|f| f.as_raw_fd()).collect();
    // SAFETY: between fork and exec the child makes only raw system calls (write, unshare,
    // mount), async-signal-safe, on descriptors and strings prepared before the fork. The
    // mount namespace is the child's own, so the bind mount is seen by criu and what it
    // restores, never by the host.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &join_raw {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let private = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(std::ptr::null(), root_c.as_ptr(), std::ptr::null(), private, std::ptr::null()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let bind = libc::MS_BIND | libc::MS_REC;
            if libc::mount(rootfs_c.as_ptr(), rootfs_c.as_ptr(), std::ptr::null(), bind, std::ptr::null()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd.status().map_err(Error::Spawn)?;
    drop(join);
    let log = run_dir.join("criu-restore.log");
    if !status.success() {
        return Err(Error::Criu { verb: "restore", status: status.to_string(), tail: log_tail(&log), log });
    }
    let pid: i32 = fs::read_to_string(&criu_pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| Error::Criu { verb: "restore", status: "no pid file".into(), tail: log_tail(&log), log })?;
    made.state.pid = pid;
    made.state.pid_start = crate::state::proc_start_time(pid).unwrap_or(0);
    made.state.status = Status::Running;
    made.state.save().map_err(runtime)?;
    crate::cleanup::track(&made.state);
    let slot = crate::cleanup::register_pid(pid);
    if let Some(p) = o.pid_file {
        let tmp = p.with_extension("cvbench-tmp");
        fs::write(&tmp, pid.to_string()).and_then(|()| fs::rename(&tmp, p)).map_err(io(p))?;
    }
    let ws = loop {
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r.map_err(|source| Error::Wait { pid, source })?,
        }
    };
    if let Some(s) = slot {
        crate::cleanup::unregister_pid(s);
    }
    let code = match ws {
        nix::sys::wait::WaitStatus::Exited(_, c) => c,
        nix::sys::wait::WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        _ => 1,
    };
    drop(made);
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criu_before_4_1_is_refused_on_a_kernel_with_vvar_vclock_and_accepted_without() {
        let facts = |v: Option<(u32, u32)>, vvar_vclock| CriuFacts {
            criu: Some((std::path::PathBuf::from("/usr/sbin/criu"), v)),
            vvar_vclock,
        };
        let e = facts(Some((3, 17)), true).verdict().unwrap_err();
        assert!(e.contains("criu 3.17") && e.contains("[vvar_vclock]") && e.contains("test host"), "{e}");
        assert!(facts(None, true).verdict().is_err());
        assert!(facts(Some((3, 17)), false).verdict().is_ok());
        assert!(facts(Some((4, 1)), true).verdict().is_ok());
        let none = CriuFacts { criu: None, vvar_vclock: false }.verdict().unwrap_err();
        assert!(none.contains("apt-get install criu"), "{none}");
    }

    #[test]
    fn criu_version_lines_parse() {
        assert_eq!(parse_criu_version("Version: 3.17.1\nGitID: v3.17\n"), Some((3, 17)));
        assert_eq!(parse_criu_version("Version: 4.1\n"), Some((4, 1)));
        assert_eq!(parse_criu_version("nonsense"), None);
    }

    fn write_desc(dir: &Path, v: &serde_json::Value) {
        fs::write(dir.join(DESCRIPTORS), v.to_string()).unwrap();
    }

    #[test]
    fn pipes_become_inherit_fd_values_and_others_are_kept_out() {
        let d = tempfile::tempdir().unwrap();
        write_desc(d.path(), &serde_json::json!(["pipe:[123]", "/dev/null", "pipe:[77]"]));
        assert_eq!(inherit_fds(d.path()).unwrap(), ["fd[0]:pipe:[123]", "fd[2]:pipe:[77]"]);
    }

    #[test]
    fn a_descriptor_record_with_odd_entries_is_refused_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        for bad in [
            serde_json::json!(["pipe:[1]", "pipe:[2]"]),
            serde_json::json!(["pipe:[x]", "/dev/null", "/dev/null"]),
            serde_json::json!(["relative", "/dev/null", "/dev/null"]),
            serde_json::json!(["/dev/null\n--root=/", "/dev/null", "/dev/null"]),
            serde_json::json!({"0": "pipe:[1]"}),
        ] {
            write_desc(d.path(), &bad);
            let e = inherit_fds(d.path()).unwrap_err();
            assert!(e.to_string().contains(DESCRIPTORS), "{bad}: {e}");
        }
    }

    #[test]
    fn the_log_tail_keeps_the_error_lines_and_the_last_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.log");
        let mut text: Vec<String> = (0..20).map(|i| format!("line {i}")).collect();
        text[3] = "Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed".into();
        fs::write(&p, text.join("\n")).unwrap();
        let tail = log_tail(&p);
        assert!(tail.starts_with("Error (criu/kerndat.c:1615)"), "{tail}");
        assert!(tail.ends_with("line 19") && tail.contains("line 14") && !tail.contains("line 13"), "{tail}");
    }
}
