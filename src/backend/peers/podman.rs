//! The `podman` backend: `podman run --rm` with podman's default OCI runtime and no daemon,
//! against a private store (its own `--root`, `--runroot` and `--tmpdir`, so the host's podman
//! images and containers are neither used nor touched) holding the same image as the docker
//! peers. Podman writes its events to a file in the private tmpdir; each run's create → init →
//! start → died → remove events become the record's phases, the daemonless engine's
//! counterpart of Docker's dockerd → containerd → shim breakdown.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::oci_runtime::{detach_unified, needs_unified_detach};
use super::{launch_err, oci, PeerError};
use crate::backend::netpath::{Client, NetPath};
use crate::backend::process::ChildProcess;
use crate::backend::{Backend, BackendError, BackendId, Instance, LaunchSpec};
use crate::paths;
use crate::record::ExitInfo;
use crate::workload::Needs;

const PODMAN: &str = BackendId::Podman.name();
const IMAGE: &str = "localhost/cvbench-workload:latest";

/// The private store: podman's storage, run and tmp directories, with the image imported.
struct Store {
    base: PathBuf,
    run: PathBuf,
}

impl Store {
    fn open() -> Result<Store, PeerError> {
        let pid = std::process::id();
        let base = PathBuf::from(format!("/var/tmp/cvbench-podman-{pid}"));
        let run = PathBuf::from(format!("/run/cvbench-podman-{pid}"));
        for d in [&base, &run] {
            std::fs::create_dir_all(d).map_err(|e| PeerError::Io(d.clone(), e))?;
        }
        let s = Store { base, run };
        let rootfs = s.base.join("rootfs");
        let bin = paths::workload_binary().map_err(|e| PeerError::Other(e.to_string()))?;
        oci::make_rootfs(&rootfs, &bin)?;
        let tar = s.base.join("image.tar");
        super::run_tool(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg("."))?;
        super::run_tool(s.cli().args(["import", "--quiet"]).arg(&tar).arg(IMAGE))?;
        Ok(s)
    }

    fn events_log(&self) -> PathBuf {
        self.run.join("tmp/events/events.log")
    }

    /// `podman` with the private store's global flags. crun (podman's default runtime on Debian
    /// 12) refuses a hybrid hierarchy whose cgroup2 mount has controllers, so there every podman
    /// call runs in a private mount namespace with that mount detached, as the crun backend does.
    fn cli(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.base.join("storage"))
            .arg("--runroot")
            .arg(self.run.join("runroot"))
            .arg("--tmpdir")
            .arg(self.run.join("tmp"))
            .args(["--cgroup-manager=cgroupfs", "--events-backend=file", "--log-level=error"])
            .process_group(0);
        if needs_unified_detach() {
            detach_unified(&mut c);
        }
        c
    }

    fn shutdown(&self) {
        let _ = super::run_tool(self.cli().args(["rm", "--all", "--force"]));
        let _ = super::run_tool(self.cli().args(["system", "reset", "--force"]));
        for d in [&self.run, &self.base] {
            if let Err(e) = std::fs::remove_dir_all(d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    eprintln!("cvbench: podman: removing {}: {e}", d.display());
                }
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[derive(Default)]
pub struct Podman {
    store: Mutex<Option<Arc<Store>>>,
}

impl Podman {
    pub fn new() -> Podman {
        Podman::default()
    }

    fn store(&self) -> Result<Arc<Store>, String> {
        let mut g = self.store.lock().map_err(|_| "store lock poisoned".to_string())?;
        if let Some(s) = g.as_ref() {
            return Ok(s.clone());
        }
        let s = Arc::new(Store::open().map_err(|e| e.to_string())?);
        let weak = Arc::downgrade(&s);
        cvbench_signals::on_interrupt(move || {
            if let Some(s) = weak.upgrade() {
                s.shutdown();
            }
        });
        *g = Some(s.clone());
        Ok(s)
    }
}

/// The rlimits the container gets: `RLIMIT_NOFILE` 1024 as in the OCI bundle of the exec'd
/// runtimes, and `RLIMIT_NPROC` 1024. Podman's defaults raise both above the caller's, which needs
/// CAP_SYS_RESOURCE (a host may not grant it even to root: the development machines do not);
/// the workload opens a few files and never forks.
const ULIMITS: [&str; 2] = ["nofile=1024:1024", "nproc=1024:1024"];

struct PodmanInstance {
    child: ChildProcess,
    name: String,
    store: Arc<Store>,
    launched_unix_ns: u128,
    pids: Mutex<Option<Vec<i32>>>,
    net: Option<NetPath>,
    scratch: Option<tempfile::TempDir>,
    notes: Vec<String>,
}

fn unix_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

impl Backend for Podman {
    fn id(&self) -> BackendId {
        BackendId::Podman
    }

    fn check(&self) -> Result<(), String> {
        if !super::on_path("podman") {
            return Err("podman is not installed (fix: apt-get install podman, or scripts/install-deps)".into());
        }
        if !crate::env::is_root() {
            return Err("needs root for a private podman store".into());
        }
        self.store().map(|_| ())
    }

    fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn Instance>, BackendError> {
        let w = spec.workload.name();
        let store = self.store().map_err(|e| launch_err(PODMAN, w, e))?;
        let name = super::unique("cvb-podman");
        let mut notes = vec![format!(
            "podman: `podman run --rm`, no daemon: podman → conmon → its default OCI runtime; default seccomp profile and capabilities; private store (--root/--runroot under /var/tmp and /run); ulimits {} (as the OCI bundle, not podman's raised defaults); footprint counts the podman CLI, conmon and the container",
            ULIMITS.join(",")
        )];
        let mut args = spec.args.clone();
        let mut cmd = store.cli();
        cmd.args(["run", "--rm", "--name", &name]);
        for u in ULIMITS {
            cmd.arg("--ulimit").arg(u);
        }
        let mut net = None;
        let mut scratch = None;
        match spec.needs() {
            Needs { network: true, .. } => {
                let bin = paths::workload_binary().map_err(|e| launch_err(PODMAN, w, e))?;
                let p = NetPath::start(&bin, PODMAN, Client::NewNamespace).map_err(|e| launch_err(PODMAN, w, e))?;
                let ns = p.client_netns().ok_or_else(|| launch_err(PODMAN, w, "the net path made no namespace"))?;
                cmd.arg("--network").arg(format!("ns:{}", ns.display()));
                args.extend(["--peer".to_string(), p.peer()]);
                notes.push(p.note());
                net = Some(p);
            }
            _ => {
                cmd.args(["--network", "none"]);
            }
        }
        if spec.needs().disk {
            let d = super::scratch("cvbench-disk-").map_err(|e| launch_err(PODMAN, w, e))?;
            cmd.arg("-v").arg(format!("{}:{}", d.path().display(), oci::DATA_DIR));
            args.extend(["--dir".to_string(), oci::DATA_DIR.to_string()]);
            notes.push(format!("disk: bind volume from {}", d.path().display()));
            scratch = Some(d);
        }
        if spec.stdin_pipe {
            cmd.arg("-i");
        }
        cmd.arg(IMAGE).arg(oci::GUEST_WORKLOAD).arg(w).args(&args);
        let launched_unix_ns = unix_ns();
        let child = ChildProcess::spawn(PODMAN, cmd, spec)?;
        Ok(Box::new(PodmanInstance {
            child,
            name,
            store,
            launched_unix_ns,
            pids: Mutex::new(None),
            net,
            scratch,
            notes,
        }))
    }
}

fn ppid(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|v| v.trim().parse().ok())
}

/// Podman's container events in order, each ending the phase named beside it.
const MILESTONES: &[(&str, &str)] = &[
    ("create", "cli+storage create"),
    ("init", "conmon+runtime create"),
    ("start", "runtime start"),
    ("died", "workload until exit"),
    ("remove", "cleanup and remove"),
];

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Nanoseconds since the epoch of an RFC 3339 UTC time as podman writes it
/// (`2026-12-06T22:52:08.024487809Z`); `None` for any other form.
pub fn parse_utc_ns(t: &str) -> Option<u128> {
    let t = t.strip_suffix('Z')?;
    let (date, time) = t.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut h = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || hh > 23 || mm > 59 || ss > 60 || frac.len() > 9 {
        return None;
    }
    let nanos: u128 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().ok()? };
    let secs = days_from_civil(y, mo, da) * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(u128::try_from(secs).ok()? * 1_000_000_000 + nanos)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Event {
    #[serde(default)]
    name: String,
    status: String,
    time: String,
    #[serde(rename = "Type")]
    kind: String,
}

/// The phases of container `name` from podman's events log, measured from `launched_unix_ns`.
pub fn phases_from_log(text: &str, name: &str, launched_unix_ns: u128) -> Vec<(String, u64)> {
    let events: Vec<(u128, String)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Event>(l).ok())
        .filter(|e| e.kind == "container" && e.name == name)
        .filter_map(|e| Some((parse_utc_ns(&e.time)?, e.status)))
        .collect();
    let mut prev = launched_unix_ns;
    let mut out = Vec::new();
    for (status, phase) in MILESTONES {
        let Some(t) = events.iter().find(|(_, s)| s == status).map(|(t, _)| *t) else { continue };
        out.push((phase.to_string(), t.saturating_sub(prev) as u64));
        prev = prev.max(t);
    }
    out
}

impl Instance for PodmanInstance {
    fn pids(&self) -> Vec<i32> {
        let mut v = vec![self.child.pid()];
        let Ok(mut cache) = self.pids.lock() else { return v };
        if cache.is_none() {
            let out = super::run_tool(self.store.cli().args(["inspect", "-f", "{{.State.Pid}}", &self.name]));
            if let Some(pid) = out.ok().and_then(|s| s.trim().parse::<i32>().ok()).filter(|p| *p > 0) {
                // The container's init and its conmon.
                *cache = Some([ppid(pid), Some(pid)].into_iter().flatten().collect());
            }
        }
        v.extend(cache.iter().flatten().copied());
        v
    }

    fn close_stdin(&mut self) {
        self.child.close_stdin();
    }

    fn wait(&mut self, timeout: Duration) -> Result<ExitInfo, BackendError> {
        let r = self.child.wait(timeout);
        if let Some(p) = self.net.as_mut() {
            p.stop();
        }
        r
    }

    fn stop(&mut self) -> Result<ExitInfo, BackendError> {
        let _ = super::run_tool(self.store.cli().args(["kill", &self.name]));
        self.child.stop(Duration::from_secs(5))
    }

    fn phases(&self) -> Vec<(String, u64)> {
        let text = std::fs::read_to_string(self.store.events_log()).unwrap_or_default();
        phases_from_log(&text, &self.name, self.launched_unix_ns)
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
}

impl Drop for PodmanInstance {
    fn drop(&mut self) {
        let clean = self.child.try_wait(Duration::ZERO).ok().flatten().is_some_and(|e| e.signal.is_none());
        if !clean {
            let _ = self.child.stop(Duration::from_millis(200));
            let _ = super::run_tool(self.store.cli().args(["rm", "--force", &self.name]));
        }
        if let Some(p) = self.net.as_mut() {
            p.stop();
        }
        self.scratch.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_times_parse_to_epoch_nanoseconds() {
        assert_eq!(parse_utc_ns("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        assert_eq!(parse_utc_ns("2000-03-01T00:00:00Z"), Some(951_868_800 * 1_000_000_000));
        assert_eq!(parse_utc_ns("2026-12-06T22:52:08.024487809Z").map(|n| n % 1_000_000_000), Some(24_487_809));
        for bad in ["2026-12-06 22:52:08Z", "2026-13-01T00:00:00Z", "2026-12-06T22:52:08+01:00", "x"] {
            assert_eq!(parse_utc_ns(bad), None, "{bad}");
        }
    }

    #[test]
    fn phases_follow_the_milestones_of_the_named_container_only() {
        let log = r#"{"ID":"a","Name":"mine","Status":"create","Time":"1970-01-01T00:00:01Z","Type":"container"}
{"ID":"b","Name":"other","Status":"init","Time":"1970-01-01T00:00:01.1Z","Type":"container"}
{"ID":"a","Name":"mine","Status":"init","Time":"1970-01-01T00:00:01.2Z","Type":"container"}
{"ID":"a","Name":"mine","Status":"start","Time":"1970-01-01T00:00:01.25Z","Type":"container"}
{"Name":"img","Status":"pull","Time":"1970-01-01T00:00:01.3Z","Type":"image"}
{"ID":"a","Name":"mine","Status":"died","Time":"1970-01-01T00:00:02Z","Type":"container"}
not json
{"ID":"a","Name":"mine","Status":"remove","Time":"1970-01-01T00:00:02.1Z","Type":"container"}"#;
        let p = phases_from_log(log, "mine", 500_000_000);
        let names: Vec<&str> = p.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, MILESTONES.iter().map(|(_, n)| *n).collect::<Vec<_>>());
        let ns: Vec<u64> = p.iter().map(|(_, n)| *n).collect();
        assert_eq!(ns, vec![500_000_000, 200_000_000, 50_000_000, 750_000_000, 100_000_000]);
    }
}
