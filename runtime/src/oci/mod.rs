//! OCI bundles and the verbs other programs drive: `create` (with hooks and a pid file),
//! `start`, `state`, `kill`, `delete`. The spec itself is parsed in [`spec`], hooks run in
//! [`hooks`].

use crate::config::ContainerConfig;
use crate::container::{self, Container, Gate, Stdio};
use crate::process::{channel, kill};
use crate::state::{State, Status};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

/// Errors reading bundles and driving OCI containers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {reason}")]
    Json { path: PathBuf, reason: String },
    #[error("unsupported field `{0}` in config.json")]
    Unsupported(String),
    #[error("invalid value for `{field}` in config.json: {reason}")]
    Invalid { field: String, reason: String },
    #[error("container `{0}` is not in the created state")]
    NotCreated(String),
    #[error("{phase} hook {index} failed: {reason}")]
    Hook { phase: String, index: usize, reason: String },
    #[error("the container's terminal")]
    Console(#[from] console::Error),
}

pub mod console;
pub mod exec;
pub mod hooks;
pub mod spec;

pub use spec::Bundle;

/// Parse `<bundle>/config.json` into a container config (strict; see [`spec`]).
pub fn load_bundle(bundle: &Path, run_root: &Path) -> Result<ContainerConfig, Error> {
    Ok(load_warned(bundle, run_root)?.config)
}

/// [`spec::load`], with a warning on stderr for each property it ignored (not in the spec).
pub fn load_warned(bundle: &Path, run_root: &Path) -> Result<Bundle, Error> {
    let b = spec::load(bundle, run_root)?;
    for k in &b.ignored {
        eprintln!("cvbench-runtime: warning: ignoring `{k}` in config.json: not a runtime-spec property");
    }
    for w in &b.deprecated {
        eprintln!("cvbench-runtime: warning: {w}");
    }
    Ok(b)
}

/// The OCI state document of a container (what `state` prints and hooks read).
pub fn state_doc(st: &State, status: Status) -> Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "id": st.id,
        "status": status.as_str(),
        "pid": if status == Status::Stopped { 0 } else { st.pid },
        "bundle": st.bundle.as_ref().map(|b| b.display().to_string()).unwrap_or_default(),
        "annotations": st.annotations,
    })
}

/// Whether an LSM named by a spec field is active (then its labels cannot be ignored).
pub(crate) fn spec_lsm_enabled(field: &str) -> bool {
    let lsm = if field.contains("apparmor") { "apparmor" } else { "selinux" };
    spec::lsm_enabled(lsm)
}

/// Host pids of every process in the container's cgroup.
pub fn pids(id: &str, run_root: &Path) -> Result<Vec<i32>, crate::Error> {
    let st = load_state(run_root, id)?;
    let mut v: Vec<i32> = st
        .cgroups
        .iter()
        .flat_map(|cg| {
            fs::read_to_string(cg.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// The runtime-spec `features` document: what this runtime honours.
pub fn features() -> Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "sync", "async", "dirsync",
            "mand", "nomand", "atime", "noatime", "diratime", "nodiratime", "relatime", "norelatime", "strictatime",
            "nostrictatime", "bind", "rbind", "private", "rprivate", "shared", "rshared", "slave", "rslave",
            "unbindable", "runbindable", "nosymfollow", "symfollow", "tmpcopyup", "notmpcopyup"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": crate::capabilities::NAMES,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD",
                    "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP", "SCMP_ACT_LOG"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_GT",
                    "SCMP_CMP_GE", "SCMP_CMP_MASKED_EQ"],
                "archs": ["SCMP_ARCH_X86_64"]
            },
            "apparmor": {"enabled": true},
            "selinux": {"enabled": false}
        }
    })
}

/// Options of `create` beyond the id and bundle.
#[derive(Debug, Default)]
pub struct CreateOptions {
    /// Write the container's host pid here (an absolute path; its directory must exist).
    pub pid_file: Option<PathBuf>,
    /// For `process.terminal`: the UNIX socket to send the terminal's master side to.
    pub console_socket: Option<PathBuf>,
}

/// Load a container's state file.
pub fn load_state(run_root: &Path, id: &str) -> Result<State, crate::Error> {
    State::load(run_root, id)?.ok_or_else(|| crate::Error::NoSuchContainer(id.to_string()))
}

/// OCI `create`: set the container up; its process waits until `start`. Runs the
/// prestart, createRuntime and createContainer hooks; any failure removes the container.
pub fn create(id: &str, bundle: &Path, run_root: &Path, opts: &CreateOptions) -> Result<i32, crate::Error> {
    if let Some(p) = &opts.pid_file {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(Error::Invalid {
                field: "--pid-file".into(),
                reason: format!("{} is not a directory", dir.display()),
            }
            .into());
        }
    }
    let b = load_warned(bundle, run_root)?;
    let mut cfg = b.config;
    cfg.id = id.to_string();
    // As runc: a terminal needs somewhere to send its master side, and a socket a terminal.
    let pty = match (cfg.terminal, &opts.console_socket) {
        (true, Some(_)) => Some(console::Pty::open(cfg.console_size).map_err(Error::from)?),
        (true, None) => {
            return Err(Error::Invalid {
                field: "process.terminal".into(),
                reason: "create needs --console-socket to hand the terminal to (or use run)".into(),
            }
            .into())
        }
        (false, Some(_)) => {
            return Err(Error::Invalid {
                field: "--console-socket".into(),
                reason: "given, but process.terminal is false".into(),
            }
            .into())
        }
        (false, None) => None,
    };
    let stdio = match &pty {
        Some(p) => p.stdio().map_err(Error::from)?,
        None => Stdio::default(),
    };
    let mut c = Container::create_gated(&cfg, stdio, Gate::Fifo)?;
    let pid = c.pid();
    c.state_mut().bundle = Some(bundle.to_path_buf());
    c.state_mut().annotations = b.annotations;
    c.state_mut().hooks = Some(b.hooks.clone());
    c.persist()?;
    // runc (and the runtime-tools suite) report `created` to the create-time hooks.
    let doc = state_doc(c.state(), Status::Created);
    hooks::run_create_phases(&b.hooks, &doc)?;
    if let Some(p) = &opts.pid_file {
        let tmp = p.with_extension("cvbench-tmp");
        fs::write(&tmp, pid.to_string())
            .and_then(|()| fs::rename(&tmp, p))
            .map_err(|source| crate::Error::Io { path: p.clone(), source })?;
    }
    if let (Some(p), Some(sock)) = (pty, &opts.console_socket) {
        p.send_master(sock).map_err(Error::from)?;
    }
    // Dropping `c` on an error above deletes the container; from here it is handed over.
    c.detach();
    Ok(pid)
}

/// OCI `run` of a loaded bundle (its `config.id` set): create, start, wait and delete in one
/// process, with the bundle's hooks under the same rules as the separate verbs. Returns how
/// the container ended.
/// Returns the exit status and the host-side phase timings (name, ns), in order.
pub fn run(
    b: Bundle,
    bundle: &Path,
    stdio: Stdio,
) -> Result<(container::ExitStatus, Vec<(String, u64)>), crate::Error> {
    let h = &b.hooks;
    let all =
        [h.prestart(), h.create_runtime(), h.create_container(), h.start_container(), h.poststart(), h.poststop()];
    if all.iter().all(|v| v.as_ref().is_none_or(Vec::is_empty)) {
        // No hooks: the fast path, which overlaps the cgroup attach with the child's set-up.
        let r = container::run(&b.config, stdio, None)?;
        return Ok((r.exit, r.phases));
    }
    let mut c = Container::create_gated(&b.config, stdio, Gate::Ready)?;
    c.state_mut().bundle = Some(bundle.to_path_buf());
    c.state_mut().annotations = b.annotations;
    c.persist()?;
    let doc = state_doc(c.state(), Status::Created);
    hooks::run_create_phases(h, &doc)?;
    hooks::run("startContainer", h.start_container(), &doc)?;
    c.start()?;
    hooks::run_warn("poststart", h.poststart(), &state_doc(c.state(), Status::Running));
    let exit = c.wait(None);
    let deleted = c.delete();
    hooks::run_warn("poststop", h.poststop(), &state_doc(c.state(), Status::Stopped));
    deleted?;
    Ok((exit?, c.phases().to_vec()))
}

/// OCI `start`: release a created container.
pub fn start(id: &str, run_root: &Path) -> Result<(), crate::Error> {
    let mut st = load_state(run_root, id)?;
    let fifo = st.run_dir.join("exec.fifo");
    if !st.current_status().can_start() || !fifo.exists() {
        return Err(Error::NotCreated(id.to_string()).into());
    }
    if let Some(h) = &st.hooks {
        // startContainer runs before the user process; a failure stops the container.
        if let Err(e) = hooks::run("startContainer", h.start_container(), &state_doc(&st, Status::Created)) {
            // Best effort: the hook's error is the one to report.
            let _ = kill::send_to(st.pid, st.pid_start, libc::SIGKILL);
            return Err(e.into());
        }
    }
    // Opening the read end unblocks the container's write open.
    let bytes = read_gate(&fifo, &st).map_err(|source| crate::Error::Io { path: fifo.clone(), source })?;
    let _ = fs::remove_file(&fifo);
    let Some((_go, after)) = bytes.split_first() else {
        return Err(Error::NotCreated(id.to_string()).into());
    };
    // What the container failed at between the gate and exec (capabilities, ids, seccomp...).
    if let Some(r) = channel::records(after).find(|r| r.kind == channel::KIND_ERROR) {
        let step = crate::process::init::step_label(r.code).map_or(format!("step {}", r.code), str::to_string);
        let source = std::io::Error::from_raw_os_error(r.errno);
        return Err(crate::process::Error::ChildStep { step, source }.into());
    }
    st.status = Status::Running;
    st.save()?;
    // Poststart failures are warnings (the process runs already).
    if let Some(h) = &st.hooks {
        hooks::run_warn("poststart", h.poststart(), &state_doc(&st, Status::Running));
    }
    Ok(())
}

/// What the container writes to the start FIFO: its go byte, then (only if set-up fails after
/// the gate) an error record, until the write end closes at exec or exit. The read end is
/// opened without blocking and polled while the container process lives: one that died after
/// `create` (its user could not open the FIFO, a signal) makes `start` fail instead of waiting
/// for a writer forever.
fn read_gate(fifo: &Path, st: &State) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(fifo)?;
    let mut out = Vec::new();
    loop {
        let mut pfd = libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(&f), events: libc::POLLIN, revents: 0 };
        // SAFETY: one pollfd on the stack for the fd owned by `f`, 100 ms timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n > 0 {
            let mut buf = [0u8; 8];
            match f.read(&mut buf) {
                Ok(0) => return Ok(out), // the writer came and closed
                Ok(k) => out.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        if !st.process_alive() || crate::state::zombie(st.pid) {
            return Ok(out);
        }
    }
}

/// OCI `state` as JSON.
pub fn state_json(id: &str, run_root: &Path) -> Result<Value, crate::Error> {
    let st = load_state(run_root, id)?;
    Ok(state_doc(&st, st.current_status()))
}

/// OCI `kill`: signal the container's process (with `all`, every process in its cgroup).
/// A stopped container is an error, as the spec wants.
pub fn kill(id: &str, sig: i32, all: bool, run_root: &Path) -> Result<(), crate::Error> {
    let st = load_state(run_root, id)?;
    let status = st.current_status();
    if !status.can_kill() {
        return Err(crate::Error::BadStatus { id: id.to_string(), verb: "kill", status });
    }
    if all {
        for cg in &st.cgroups {
            for pid in fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default().lines() {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    // Best effort, as before: a member may exit meanwhile.
                    let _ = kill::send_to(pid, 0, sig);
                }
            }
        }
    }
    if !kill::send_to(st.pid, st.pid_start, sig)? {
        return Err(crate::process::Error::Signal { pid: st.pid, source: nix::Error::ESRCH }.into());
    }
    Ok(())
}

/// OCI `delete`: remove a stopped container (or kill it first with `force`); runs the
/// poststop hooks (failures are warnings).
pub fn delete(id: &str, force: bool, run_root: &Path) -> Result<Vec<String>, crate::Error> {
    let st = load_state(run_root, id)?;
    let status = st.current_status();
    if !status.can_delete() {
        if !force {
            return Err(crate::Error::BadStatus { id: id.to_string(), verb: "delete", status });
        }
        // Best effort: whatever happens, the wait below sees whether it is gone.
        let _ = kill::send_to(st.pid, st.pid_start, libc::SIGKILL);
        for _ in 0..400 {
            if !st.process_alive() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    let removed = container::delete_stored(&st);
    if let Some(h) = &st.hooks {
        hooks::run_warn("poststop", h.poststop(), &state_doc(&st, Status::Stopped));
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NetMode, RootfsSource};
    use crate::namespaces::Namespace;

    fn spec(extra: Value) -> Value {
        let mut v = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["/bin/true"], "cwd": "/", "env": ["A=1"], "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"},
            "hostname": "h",
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "network"}, {"type": "uts"}],
                      "resources": {"memory": {"limit": 67108864}, "pids": {"limit": 10}}}
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                o.insert(k.clone(), x.clone());
            }
        }
        v
    }

    fn bundle(v: &Value) -> (tempfile::TempDir, Result<Bundle, Error>) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("rootfs")).unwrap();
        fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
        let b = spec::load(dir.path(), Path::new("/s"));
        (dir, b)
    }

    #[test]
    fn load_reads_common_fields() {
        let (dir, b) = bundle(&spec(Value::Null));
        let cfg = b.unwrap().config;
        assert_eq!(cfg.args, ["/bin/true"]);
        assert_eq!(cfg.rootfs, RootfsSource::Dir(dir.path().join("rootfs")));
        assert_eq!(cfg.resources.memory_bytes, Some(64 << 20));
        assert_eq!(cfg.resources.pids_max, Some(10));
        assert!(cfg.has(Namespace::Net));
        assert!(cfg.has(Namespace::Uts));
        assert!(!cfg.has(Namespace::Ipc));
    }

    #[test]
    fn load_rejects_unknown_fields_by_name() {
        let (_d, b) = bundle(&spec(serde_json::json!({"solaris": {}})));
        let err = b.unwrap_err();
        assert!(err.to_string().contains("solaris"), "{err}");
        let mut v = spec(Value::Null);
        v["process"]["ioPriority"] = serde_json::json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0});
        let err = bundle(&v).1.unwrap_err();
        assert!(err.to_string().contains("process.ioPriority"), "{err}");
    }

    #[test]
    fn load_ignores_properties_the_spec_does_not_define_and_lists_them() {
        let mut v = spec(serde_json::json!({"unknown": "x"}));
        v["process"]["notASpecField"] = serde_json::json!(1);
        let b = bundle(&v).1.unwrap();
        assert_eq!(b.ignored, ["unknown", "process.notASpecField"]);
        assert_eq!(b.config.args, ["/bin/true"]);
    }

    #[test]
    fn load_rejects_an_oci_version_that_is_not_semver_1() {
        for bad in
            [serde_json::json!("invalid"), serde_json::json!("2.0.0"), serde_json::json!("1.0"), serde_json::json!(1)]
        {
            let mut v = spec(Value::Null);
            v["ociVersion"] = bad.clone();
            let err = bundle(&v).1.unwrap_err();
            assert!(err.to_string().contains("ociVersion"), "{bad}: {err}");
        }
        for good in ["1.0.2-dev", "1.1.0", "1.0.0+build.1"] {
            let mut v = spec(Value::Null);
            v["ociVersion"] = serde_json::json!(good);
            assert!(bundle(&v).1.is_ok(), "{good}");
        }
    }

    #[test]
    fn a_hostname_may_go_to_a_joined_uts_namespace() {
        let base = |ns: Value| spec(serde_json::json!({"hostname": "h", "linux": {"namespaces": ns}}));
        let joined = base(serde_json::json!([{"type": "mount"}, {"type": "uts", "path": "/proc/1/ns/uts"}]));
        let cfg = bundle(&joined).1.unwrap().config;
        assert_eq!(cfg.hostname, "h");
        assert!(!cfg.has(Namespace::Uts), "joined, not new");
    }

    #[test]
    fn an_unreaped_child_reads_as_a_zombie() {
        use crate::state::zombie;
        assert!(!zombie(std::process::id() as i32));
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !zombie(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(zombie(pid), "an exited, unreaped child is a zombie");
        child.wait().expect("reap");
        assert!(!zombie(pid), "reaped: gone");
    }

    #[test]
    fn deprecated_kernel_memory_limits_are_ignored_with_a_warning() {
        let mut v = spec(Value::Null);
        v["linux"]["resources"]["memory"]["kernel"] = serde_json::json!(33554432);
        v["linux"]["resources"]["memory"]["kernelTCP"] = serde_json::json!(16777216);
        let b = bundle(&v).1.unwrap();
        assert_eq!(b.deprecated.len(), 2, "{:?}", b.deprecated);
        assert!(b.deprecated[0].contains("linux.resources.memory.kernel`"), "{:?}", b.deprecated);
        assert!(b.deprecated[1].contains("linux.resources.memory.kernelTCP`"), "{:?}", b.deprecated);
        assert_eq!(b.config.resources.memory_bytes, Some(64 << 20), "the rest of memory still applies");
        assert!(bundle(&spec(Value::Null)).1.unwrap().deprecated.is_empty());
    }

    #[test]
    fn an_empty_cgroups_path_leaves_the_name_to_the_runtime() {
        let mut v = spec(Value::Null);
        v["linux"]["cgroupsPath"] = serde_json::json!("");
        assert_eq!(bundle(&v).1.unwrap().config.cgroups_path, None);
        v["linux"]["cgroupsPath"] = serde_json::json!("/a/b");
        assert_eq!(bundle(&v).1.unwrap().config.cgroups_path, Some(PathBuf::from("/a/b")));
    }

    #[test]
    fn load_rejects_time_namespace() {
        let v = spec(serde_json::json!({"linux": {"namespaces": [{"type": "mount"}, {"type": "time"}]}}));
        let err = bundle(&v).1.unwrap_err();
        assert!(err.to_string().contains("time"), "{err}");
    }

    #[test]
    fn no_network_namespace_shares_the_host_network_but_stays_confined() {
        let mut v = spec(serde_json::json!({"linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}]}}));
        v.as_object_mut().unwrap().remove("hostname");
        let cfg = bundle(&v).1.unwrap().config;
        assert_eq!(cfg.net, NetMode::Host);
        assert!(!cfg.privileged, "a bundle without a netns must not become privileged");
        assert_eq!(cfg.capability_sets, Some(Default::default()), "no capabilities listed: none granted");
        assert!(crate::container::validate(&cfg).is_ok());
    }

    #[test]
    fn non_numeric_uid_is_an_error_not_root() {
        let mut v = spec(Value::Null);
        v["process"]["user"]["uid"] = serde_json::json!("nobody");
        let err = bundle(&v).1.unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
        v["process"]["user"]["uid"] = serde_json::json!(-1);
        assert!(bundle(&v).1.is_err());
    }

    #[test]
    fn duplicate_rlimits_are_refused() {
        let mut v = spec(Value::Null);
        v["process"]["rlimits"] = serde_json::json!([
            {"type": "RLIMIT_NOFILE", "hard": 10, "soft": 10},
            {"type": "RLIMIT_NOFILE", "hard": 20, "soft": 20}
        ]);
        let err = bundle(&v).1.unwrap_err();
        assert!(err.to_string().contains("process.rlimits"), "{err}");
    }

    #[test]
    fn hostname_without_uts_namespace_is_refused() {
        let v = spec(serde_json::json!({"linux": {"namespaces": [{"type": "mount"}]}}));
        let err = bundle(&v).1.unwrap_err();
        assert!(err.to_string().contains("hostname"), "{err}");
    }
}
