//! OCI bundles for the peer runtimes: a read-only rootfs holding only the
//! workload binary (plus busybox for docker's image), and a `config.json`
//! generated per run with the workload's arguments, the namespaces, the
//! capabilities kept and the mounts.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};

use super::PeerError;

/// Where the workload sits inside every peer image.
pub const GUEST_WORKLOAD: &str = "/cvbench-workload";
/// Where the scratch volume for `disk` is mounted.
pub const DATA_DIR: &str = "/data";

/// Capabilities every peer container keeps: the set `runc spec` generates.
pub const CAPS: &[&str] = &["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

/// Namespaces every peer container gets (network joins a path for net runs).
pub const NAMESPACES: &[&str] = &["pid", "network", "ipc", "uts", "mount", "cgroup"];

/// Make `dir` a rootfs: the workload binary and the mount points.
pub fn make_rootfs(dir: &Path, workload: &Path) -> Result<(), PeerError> {
    for d in ["proc", "dev", "tmp", "data", "sys"] {
        let p = dir.join(d);
        std::fs::create_dir_all(&p).map_err(|e| PeerError::Io(p, e))?;
    }
    let dst = dir.join(&GUEST_WORKLOAD[1..]);
    std::fs::copy(workload, &dst).map_err(|e| PeerError::Io(dst, e))?;
    Ok(())
}

/// What varies between runs of one bundle.
pub struct RunConfig<'a> {
    pub rootfs: &'a Path,
    pub args: Vec<String>,
    /// Join this network namespace instead of creating an empty one.
    pub netns: Option<PathBuf>,
    /// Bind this host directory at [`DATA_DIR`].
    pub data: Option<&'a Path>,
}

/// The `config.json` for one run.
pub fn config(rc: &RunConfig) -> Value {
    let caps: Vec<&str> = CAPS.to_vec();
    let namespaces: Vec<Value> = NAMESPACES
        .iter()
        .map(|ns| match (*ns, &rc.netns) {
            ("network", Some(p)) => json!({"type": "network", "path": p}),
            _ => json!({ "type": ns }),
        })
        .collect();
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]}),
    ];
    if let Some(d) = rc.data {
        mounts.push(json!({"destination": DATA_DIR, "type": "bind", "source": d,
                           "options": ["rbind", "rw"]}));
    }
    let mut args = vec![GUEST_WORKLOAD.to_string()];
    args.extend(rc.args.iter().cloned());
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "inheritable": caps
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": rc.rootfs, "readonly": true},
        "hostname": "cvbench",
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
                            "/proc/scsi", "/sys/firmware"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq",
                              "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// Write `config.json` into a fresh bundle directory `dir`.
pub fn write_bundle(dir: &Path, rc: &RunConfig) -> Result<(), PeerError> {
    std::fs::create_dir_all(dir).map_err(|e| PeerError::Io(dir.to_path_buf(), e))?;
    let p = dir.join("config.json");
    let text = serde_json::to_vec_pretty(&config(rc)).map_err(|e| PeerError::Json(p.clone(), e))?;
    std::fs::write(&p, text).map_err(|e| PeerError::Io(p, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_runs_the_workload_with_its_args_read_only() {
        let c = config(&RunConfig {
            rootfs: Path::new("/r"),
            args: vec!["cpu".into(), "--sha-mib".into(), "1".into()],
            netns: None,
            data: None,
        });
        assert_eq!(c["process"]["args"], json!(["/cvbench-workload", "cpu", "--sha-mib", "1"]));
        assert_eq!(c["root"]["readonly"], json!(true));
        assert_eq!(c["linux"]["namespaces"][1], json!({"type": "network"}));
    }

    #[test]
    fn config_joins_a_given_netns_and_binds_the_data_volume() {
        let c = config(&RunConfig {
            rootfs: Path::new("/r"),
            args: vec![],
            netns: Some(PathBuf::from("/proc/42/ns/net")),
            data: Some(Path::new("/var/tmp/x")),
        });
        assert_eq!(c["linux"]["namespaces"][1]["path"], json!("/proc/42/ns/net"));
        let mounts = c["mounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["destination"] == json!("/data")));
    }
}
