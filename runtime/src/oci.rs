//! OCI bundles: turn a runtime-spec `config.json` into a [`ContainerConfig`] (common fields
//! only; anything else is a clear error), and the `create/start/state/kill/delete` verbs.

use crate::config::{ContainerConfig, IdMap, MountSpec, NetMode, Resources, RootfsSource, User};
use crate::container::{self, Container, Gate, Stdio};
use crate::namespaces::Namespace;
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
    #[error("container `{0}` is still running (use --force)")]
    Running(String),
}

/// Mounts the runtime always provides itself; a bundle listing them is fine.
const PROVIDED: &[&str] = &["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"];

fn check_keys(v: &Value, path: &str, allowed: &[&str]) -> Result<(), Error> {
    if let Some(obj) = v.as_object() {
        for k in obj.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(Error::Unsupported(format!("{path}.{k}")));
            }
        }
    }
    Ok(())
}

fn strings(v: &Value, field: &str) -> Result<Vec<String>, Error> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Error::Invalid { field: field.into(), reason: "expected strings".into() })
            })
            .collect(),
        _ => Err(Error::Invalid { field: field.into(), reason: "expected an array".into() }),
    }
}

fn maps(v: &Value, field: &str) -> Result<Vec<IdMap>, Error> {
    let Some(a) = v.as_array() else {
        return Ok(Vec::new());
    };
    a.iter()
        .map(|m| {
            let g = |k: &str| {
                m.get(k)
                    .and_then(Value::as_u64)
                    .map(|x| x as u32)
                    .ok_or_else(|| Error::Invalid { field: format!("{field}.{k}"), reason: "missing number".into() })
            };
            Ok(IdMap { container_id: g("containerID")?, host_id: g("hostID")?, size: g("size")? })
        })
        .collect()
}

/// Parse `<bundle>/config.json`.
pub fn load_bundle(bundle: &Path, run_root: &Path) -> Result<ContainerConfig, Error> {
    let path = bundle.join("config.json");
    let text = fs::read(&path).map_err(|source| Error::Read { path: path.clone(), source })?;
    let v: Value =
        serde_json::from_slice(&text).map_err(|e| Error::Json { path: path.clone(), reason: e.to_string() })?;
    parse_spec(&v, bundle, run_root)
}

/// Convert a parsed runtime spec.
pub fn parse_spec(v: &Value, bundle: &Path, run_root: &Path) -> Result<ContainerConfig, Error> {
    check_keys(v, "", &["ociVersion", "process", "root", "hostname", "mounts", "linux", "annotations"])?;
    let mut cfg =
        ContainerConfig { run_root: run_root.to_path_buf(), namespaces: Default::default(), ..Default::default() };
    let p = &v["process"];
    check_keys(p, "process", &["terminal", "user", "args", "env", "cwd", "capabilities", "noNewPrivileges"])?;
    if p["terminal"].as_bool() == Some(true) {
        return Err(Error::Unsupported("process.terminal=true".into()));
    }
    cfg.args = strings(&p["args"], "process.args")?;
    cfg.env = strings(&p["env"], "process.env")?;
    cfg.cwd = p["cwd"].as_str().unwrap_or("/").to_string();
    let u = &p["user"];
    check_keys(u, "process.user", &["uid", "gid", "additionalGids", "umask"])?;
    cfg.user = User {
        uid: u["uid"].as_u64().unwrap_or(0) as u32,
        gid: u["gid"].as_u64().unwrap_or(0) as u32,
        additional_gids: u["additionalGids"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).map(|x| x as u32).collect())
            .unwrap_or_default(),
    };
    if let Some(caps) = p.get("capabilities") {
        check_keys(caps, "process.capabilities", &["bounding", "effective", "permitted", "inheritable", "ambient"])?;
        cfg.capabilities = Some(strings(&caps["bounding"], "process.capabilities.bounding")?);
    }
    let root = &v["root"];
    check_keys(root, "root", &["path", "readonly"])?;
    let rp = root["path"].as_str().unwrap_or("rootfs");
    let rp = if Path::new(rp).is_absolute() { PathBuf::from(rp) } else { bundle.join(rp) };
    cfg.rootfs = RootfsSource::Dir(rp);
    cfg.readonly_rootfs = root["readonly"].as_bool().unwrap_or(false);
    cfg.hostname = v["hostname"].as_str().unwrap_or("").to_string();
    if let Some(ms) = v["mounts"].as_array() {
        for m in ms {
            check_keys(m, "mounts[]", &["destination", "type", "source", "options"])?;
            let dest = m["destination"].as_str().unwrap_or("");
            if PROVIDED.contains(&dest) {
                continue;
            }
            let opts = strings(&m["options"], "mounts[].options")?;
            let kind = match (m["type"].as_str(), opts.iter().any(|o| o == "bind" || o == "rbind")) {
                (_, true) | (Some("bind"), _) => "bind",
                (Some("tmpfs"), _) => "tmpfs",
                (t, _) => return Err(Error::Unsupported(format!("mount type {:?} at {dest}", t.unwrap_or("")))),
            };
            let src = m["source"].as_str().unwrap_or("tmpfs");
            let src =
                if Path::new(src).is_absolute() || kind == "tmpfs" { PathBuf::from(src) } else { bundle.join(src) };
            cfg.mounts.push(MountSpec {
                kind: kind.into(),
                source: src,
                destination: dest.into(),
                readonly: opts.iter().any(|o| o == "ro"),
            });
        }
    }
    let l = &v["linux"];
    check_keys(
        l,
        "linux",
        &[
            "namespaces",
            "uidMappings",
            "gidMappings",
            "resources",
            "maskedPaths",
            "readonlyPaths",
            "cgroupsPath",
            "seccomp",
        ],
    )?;
    for ns in l["namespaces"].as_array().into_iter().flatten() {
        if ns.get("path").is_some() {
            return Err(Error::Unsupported("linux.namespaces[].path (joining)".into()));
        }
        let t = ns["type"].as_str().unwrap_or("");
        let kind: Namespace = t.parse().map_err(|e: crate::namespaces::Error| Error::Invalid {
            field: "linux.namespaces[].type".into(),
            reason: e.to_string(),
        })?;
        cfg.namespaces.insert(kind);
    }
    cfg.net = if cfg.has(Namespace::Net) {
        NetMode::Loopback
    } else {
        cfg.privileged = true;
        NetMode::Host
    };
    cfg.uid_map = maps(&l["uidMappings"], "linux.uidMappings")?;
    cfg.gid_map = maps(&l["gidMappings"], "linux.gidMappings")?;
    if l.get("seccomp").is_some() {
        return Err(Error::Unsupported("linux.seccomp (custom profiles); omit it to get the default profile".into()));
    }
    if l.get("maskedPaths").is_some() {
        cfg.masked_paths = Some(strings(&l["maskedPaths"], "linux.maskedPaths")?);
    }
    if l.get("readonlyPaths").is_some() {
        cfg.readonly_paths = Some(strings(&l["readonlyPaths"], "linux.readonlyPaths")?);
    }
    let r = &l["resources"];
    check_keys(r, "linux.resources", &["memory", "cpu", "pids", "devices"])?;
    check_keys(&r["memory"], "linux.resources.memory", &["limit", "swap"])?;
    check_keys(&r["cpu"], "linux.resources.cpu", &["shares", "quota", "period", "cpus", "mems"])?;
    cfg.resources = Resources {
        memory_bytes: r["memory"]["limit"].as_u64(),
        memory_swap_bytes: r["memory"]["swap"].as_u64(),
        cpu_quota_us: r["cpu"]["quota"].as_i64(),
        cpu_period_us: r["cpu"]["period"].as_u64(),
        cpu_shares: r["cpu"]["shares"].as_u64(),
        pids_max: r["pids"]["limit"].as_u64(),
        cpuset_cpus: r["cpu"]["cpus"].as_str().map(str::to_string),
        cpuset_mems: r["cpu"]["mems"].as_str().map(str::to_string),
    };
    Ok(cfg)
}

/// Load a container's state file.
pub fn load_state(run_root: &Path, id: &str) -> Result<State, crate::Error> {
    State::load(run_root, id)?.ok_or_else(|| crate::Error::NoSuchContainer(id.to_string()))
}

/// OCI `create`: set the container up; its process waits until `start`.
pub fn create(id: &str, bundle: &Path, run_root: &Path) -> Result<i32, crate::Error> {
    let mut cfg = load_bundle(bundle, run_root)?;
    cfg.id = id.to_string();
    let mut c = Container::create_gated(&cfg, Stdio::default(), Gate::Fifo)?;
    let pid = c.pid();
    c.state_mut().bundle = Some(bundle.to_path_buf());
    c.persist()?;
    c.detach();
    Ok(pid)
}

/// OCI `start`: release a created container.
pub fn start(id: &str, run_root: &Path) -> Result<(), crate::Error> {
    let mut st = load_state(run_root, id)?;
    let fifo = st.run_dir.join("exec.fifo");
    if !st.current_status().can_start() || !fifo.exists() {
        return Err(Error::NotCreated(id.to_string()).into());
    }
    // Opening the read end unblocks the container's write open.
    let bytes = fs::read(&fifo).map_err(|source| crate::Error::Io { path: fifo.clone(), source })?;
    let _ = fs::remove_file(&fifo);
    if bytes.is_empty() {
        return Err(Error::NotCreated(id.to_string()).into());
    }
    st.status = Status::Running;
    st.save()?;
    Ok(())
}

/// OCI `state` as JSON.
pub fn state_json(id: &str, run_root: &Path) -> Result<Value, crate::Error> {
    let st = load_state(run_root, id)?;
    let status = st.current_status();
    Ok(serde_json::json!({
        "ociVersion": "1.0.2",
        "id": st.id,
        "status": status.as_str(),
        "pid": if status == Status::Stopped { 0 } else { st.pid },
        "bundle": st.bundle,
    }))
}

/// OCI `kill`.
pub fn kill(id: &str, sig: i32, run_root: &Path) -> Result<(), crate::Error> {
    let st = load_state(run_root, id)?;
    if st.current_status().can_kill() {
        // SAFETY: kill(2) of the container process identified by pid and start time.
        unsafe { libc::kill(st.pid, sig) };
    }
    Ok(())
}

/// OCI `delete`: remove a stopped container (or kill it first with `force`).
pub fn delete(id: &str, force: bool, run_root: &Path) -> Result<Vec<String>, crate::Error> {
    let st = load_state(run_root, id)?;
    if !st.current_status().can_delete() {
        if !force {
            return Err(Error::Running(id.to_string()).into());
        }
        // SAFETY: as in `kill`.
        unsafe { libc::kill(st.pid, libc::SIGKILL) };
        for _ in 0..200 {
            if !st.process_alive() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    Ok(container::delete_stored(&st))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: Value) -> Value {
        let mut v = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["/bin/true"], "cwd": "/", "env": ["A=1"], "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"},
            "hostname": "h",
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "network"}],
                      "resources": {"memory": {"limit": 67108864}, "pids": {"limit": 10}}}
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                o.insert(k.clone(), x.clone());
            }
        }
        v
    }

    #[test]
    fn parse_spec_reads_common_fields() {
        let cfg = parse_spec(&spec(Value::Null), Path::new("/b"), Path::new("/s")).unwrap();
        assert_eq!(cfg.args, ["/bin/true"]);
        assert_eq!(cfg.rootfs, RootfsSource::Dir("/b/rootfs".into()));
        assert_eq!(cfg.resources.memory_bytes, Some(64 << 20));
        assert_eq!(cfg.resources.pids_max, Some(10));
        assert!(cfg.has(Namespace::Net));
        assert!(!cfg.has(Namespace::Uts));
    }

    #[test]
    fn parse_spec_rejects_unknown_fields() {
        let err = parse_spec(&spec(serde_json::json!({"solaris": {}})), Path::new("/b"), Path::new("/s")).unwrap_err();
        assert!(err.to_string().contains("solaris"), "{err}");
    }

    #[test]
    fn parse_spec_rejects_unknown_namespace() {
        let v = spec(serde_json::json!({"linux": {"namespaces": [{"type": "time"}]}}));
        let err = parse_spec(&v, Path::new("/b"), Path::new("/s")).unwrap_err();
        assert!(err.to_string().contains("time"), "{err}");
    }
}
