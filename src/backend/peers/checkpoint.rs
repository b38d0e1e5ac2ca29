//! Container checkpoint/restore through the runtimes' own CLIs: gVisor (`runsc checkpoint` /
//! `restore`, its own state save, no CRIU), runc and our `cvbench-runtime` (both through the
//! `criu` binary). [`take`] runs the workload's waiting form (`wait-go`) in the runtime's
//! foreground `run`, checkpoints it at READY into an image directory and seals that directory
//! with a manifest (`cvbench_runtime::checkpoint::image`); [`launch_restored`] verifies the image
//! against the manifest before the runtime sees it, then starts `<runtime> restore` in the
//! foreground, ready when the runtime writes its pid file; [`launch_cold`] is the same waiting
//! form started fresh, ready at its READY line; [`WaitingContainer::go`] sends the go line and
//! collects the run into a record (phases restore → first output → exit, the job's own metrics,
//! the image's size on disk, the page faults of the restored process tree).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use cvbench_runtime::checkpoint::image::{self, ImageError, Manifest};

use super::oci::{self, RunConfig};
use super::oci_runtime::{Kind, Platform};
use super::PeerError;
use crate::backend::{restore, BackendId};
use crate::paths;
use crate::record::{ExitInfo, RunRecord, WorkloadOutput};
use crate::workload::Workload;

/// Why a container could not be checkpointed or restored.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{0} has no checkpoint/restore here: it runs on gvisor, gvisor-ptrace, runc and cvbench-runtime")]
    NotSupported(BackendId),
    #[error(transparent)]
    Workload(#[from] restore::RestoreError),
    #[error("cannot prepare the bundle")]
    Prepare(#[from] PeerError),
    #[error("cannot start {what}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} ended before its container was ready (exit {code:?}): {stderr}")]
    NotReady { what: String, code: Option<i32>, stderr: String },
    #[error("{what} was not ready within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    #[error("{what} failed (exit {code:?}): {stderr}")]
    Tool { what: String, code: Option<i32>, stderr: String },
    #[error("the checkpoint image cannot be restored")]
    Image(#[from] ImageError),
}

/// The runtime of a backend that can checkpoint, or why not.
pub fn kind_for(backend: BackendId) -> Result<Kind, CheckpointError> {
    match backend {
        BackendId::Gvisor => Ok(Kind::Gvisor(Platform::Systrap)),
        BackendId::GvisorPtrace => Ok(Kind::Gvisor(Platform::Ptrace)),
        BackendId::Runc => Ok(Kind::Runc),
        BackendId::CvbenchRuntime => Ok(Kind::Cvbench),
        other => Err(CheckpointError::NotSupported(other)),
    }
}

/// Does this runtime checkpoint through CRIU (which this host's kernel may not support)?
pub fn uses_criu(kind: Kind) -> bool {
    matches!(kind, Kind::Runc | Kind::Cvbench)
}

/// A bundle (rootfs with the workload, `config.json` running its waiting form) and the
/// runtime's state root, removed with this value; a Ctrl-C removes what is left in the root.
struct Setup {
    kind: Kind,
    dir: tempfile::TempDir,
    bundle: PathBuf,
    root: PathBuf,
}

impl Setup {
    fn new(kind: Kind, workload: Workload, args: &[String]) -> Result<Setup, CheckpointError> {
        let guest = restore::wait_go_args(workload, args)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("cvbench-ckpt-{}-{}-", kind.name(), std::process::id()))
            .tempdir_in("/run")
            .map_err(|e| PeerError::Io(PathBuf::from("/run"), e))?;
        let rootfs = dir.path().join("rootfs");
        let bin = paths::workload_binary().map_err(|e| PeerError::Other(e.to_string()))?;
        oci::make_rootfs(&rootfs, &bin)?;
        let bundle = dir.path().join("bundle");
        oci::write_bundle(&bundle, &RunConfig { rootfs: &rootfs, args: guest, netns: None, data: None })?;
        let root = dir.path().join("state");
        std::fs::create_dir_all(&root).map_err(|e| PeerError::Io(root.clone(), e))?;
        let program = kind.program().unwrap_or_else(|_| PathBuf::from(kind.name()));
        live_roots(|v| v.push((program, root.clone())));
        cvbench_signals::remove_on_interrupt(dir.path().to_path_buf());
        Ok(Setup { kind, dir, bundle, root })
    }

    /// runc writes its criu logs into the image directory unless told otherwise, which would
    /// change a sealed image: give it a work directory of its own, `name`, beside the image.
    fn work_path(&self, cmd: &mut Command, name: &str) -> Result<(), CheckpointError> {
        if self.kind == Kind::Runc {
            let work = self.dir.path().join(name);
            std::fs::create_dir_all(&work).map_err(|e| PeerError::Io(work.clone(), e))?;
            cmd.arg("--work-path").arg(work);
        }
        Ok(())
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(self.kind.program().unwrap_or_else(|_| PathBuf::from(self.kind.name())));
        cmd.arg("--root").arg(&self.root);
        if let Kind::Gvisor(p) = self.kind {
            // Only the netstack's loopback: the waiting workload makes no connections.
            cmd.arg(p.flag()).arg("--network=none");
        }
        cmd
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let program = self.kind.program().unwrap_or_else(|_| PathBuf::from(self.kind.name()));
        force_delete_all(&program, &self.root);
        live_roots(|v| v.retain(|(_, r)| r != &self.root));
    }
}

/// The state roots of the set-ups alive now, with their runtime: one interrupt callback
/// (registered with the signal owner on first use) deletes what is left in each on Ctrl-C.
fn live_roots(f: impl FnOnce(&mut Vec<(PathBuf, PathBuf)>)) {
    static LIVE: std::sync::Mutex<Vec<(PathBuf, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        cvbench_signals::on_interrupt(|| {
            let live = LIVE.lock().map(|v| v.clone()).unwrap_or_default();
            for (program, root) in live {
                force_delete_all(&program, &root);
            }
        })
    });
    if let Ok(mut v) = LIVE.lock() {
        f(&mut v);
    }
}

/// Delete every container left in the state root `root` (a run stopped half-way): those
/// `list -q` names, or (a runtime without `list`, ours) the state directories under it.
fn force_delete_all(program: &Path, root: &Path) {
    let listed = Command::new(program).arg("--root").arg(root).args(["list", "-q"]).stderr(Stdio::null()).output();
    let mut ids: Vec<String> = match listed {
        Ok(out) if out.status.success() => {
            String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect()
        }
        _ => Vec::new(),
    };
    if let Ok(dir) = std::fs::read_dir(root.join("containers")) {
        ids.extend(dir.flatten().map(|e| e.file_name().to_string_lossy().into_owned()));
    }
    ids.sort();
    ids.dedup();
    for id in ids {
        let _ = Command::new(program)
            .arg("--root")
            .arg(root)
            .args(["delete", "--force", &id])
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status();
    }
}

/// A checkpoint of the waiting workload on disk, removed with this value.
pub struct Checkpoint {
    setup: Setup,
    image: PathBuf,
    pub manifest: Manifest,
    /// `run` → READY → checkpoint written and sealed.
    pub take_ns: u64,
    /// The `<runtime> checkpoint` call alone.
    pub checkpoint_ns: u64,
}

impl Checkpoint {
    /// The image directory (what `<runtime> restore --image-path` reads).
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// Bytes on disk of the image (allocated blocks, sparse files counted as stored).
    pub fn disk_bytes(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::read_dir(&self.image)
            .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.blocks() * 512).sum())
            .unwrap_or(0)
    }
}

/// The output lines of a child, each stamped when it was read, from a thread of their own.
fn line_reader(out: impl Read + Send + 'static) -> Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

fn stderr_reader(child: &mut Child) -> std::thread::JoinHandle<String> {
    let err = child.stderr.take();
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = err {
            let _ = (&mut e).take(64 << 10).read_to_string(&mut s);
        }
        s
    })
}

/// Sum of the minor page faults of `pid` and its descendants (field 10 of `/proc/<pid>/stat`).
fn minflt_tree(pid: i32) -> Option<u64> {
    let one = |p: i32| -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        // The command name may hold spaces: fields count from after its closing parenthesis.
        let rest = &s[s.rfind(')')? + 2..];
        rest.split_whitespace().nth(7)?.parse().ok()
    };
    let mut total = one(pid)?;
    total += super::descendants(pid).into_iter().filter_map(one).sum::<u64>();
    Some(total)
}

/// Run the waiting form of `workload` in `backend`'s runtime, checkpoint it where it waits for
/// its go line, and seal the image.
pub fn take(
    backend: BackendId,
    workload: Workload,
    args: &[String],
    timeout: Duration,
) -> Result<Checkpoint, CheckpointError> {
    let kind = kind_for(backend)?;
    let setup = Setup::new(kind, workload, args)?;
    let t = Instant::now();
    let id = super::unique("cvb-ckpt");
    let mut run = setup.command();
    run.arg("run").arg("--bundle").arg(&setup.bundle).arg(&id);
    let mut vm = WaitingContainer::spawn(&setup, run, id, None, format!("{} run", kind.name()), timeout)?;
    let image = setup.dir.path().join("image");
    std::fs::create_dir(&image).map_err(|e| PeerError::Io(image.clone(), e))?;
    let tc = Instant::now();
    let mut cmd = setup.command();
    cmd.arg("checkpoint").arg("--image-path").arg(&image);
    setup.work_path(&mut cmd, "work-checkpoint")?;
    let out = cmd
        .arg(&vm.id)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CheckpointError::Spawn { what: format!("{} checkpoint", kind.name()), source })?;
    let checkpoint_ns = tc.elapsed().as_nanos() as u64;
    if !out.status.success() {
        return Err(CheckpointError::Tool {
            what: format!("{} checkpoint", kind.name()),
            code: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    // The checkpoint stopped the container: its foreground `run` ends now.
    vm.reap(timeout);
    drop(vm);
    let manifest = image::seal(&image, kind.name())?;
    Ok(Checkpoint { setup, image, manifest, take_ns: t.elapsed().as_nanos() as u64, checkpoint_ns })
}

/// A container whose workload waits for its go line: started fresh (ready at READY) or
/// restored from a checkpoint (ready when the runtime wrote its pid file).
pub struct WaitingContainer {
    kind: Kind,
    child: Option<Child>,
    id: String,
    /// What `delete --force` needs if the run does not end by itself.
    delete: Command,
    lines: Receiver<(Instant, String)>,
    stderr: Option<std::thread::JoinHandle<String>>,
    t0: Instant,
    ready_at: Instant,
    restored: bool,
    pid: Option<i32>,
    minflt_at_ready: Option<u64>,
    /// The cold form's own bundle (a restore uses its checkpoint's).
    _setup: Option<Setup>,
}

impl WaitingContainer {
    /// Start `cmd` (a foreground `run` or `restore`) and wait for its ready sign: a pid file
    /// with a pid in it (`pid_file`), else the READY line.
    fn spawn(
        setup: &Setup,
        mut cmd: Command,
        id: String,
        pid_file: Option<PathBuf>,
        what: String,
        timeout: Duration,
    ) -> Result<WaitingContainer, CheckpointError> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut delete = setup.command();
        delete.args(["delete", "--force", &id]).stdout(Stdio::null()).stderr(Stdio::null());
        let t0 = Instant::now();
        let mut child = cmd.spawn().map_err(|source| CheckpointError::Spawn { what: what.clone(), source })?;
        let lines = line_reader(child.stdout.take().expect("stdout is piped"));
        let stderr = Some(stderr_reader(&mut child));
        let mut w = WaitingContainer {
            kind: setup.kind,
            child: Some(child),
            id,
            delete,
            lines,
            stderr,
            t0,
            ready_at: t0,
            restored: pid_file.is_some(),
            pid: None,
            minflt_at_ready: None,
            _setup: None,
        };
        let deadline = t0 + timeout;
        match pid_file {
            Some(p) => loop {
                if let Some(pid) = super::read_pid(&p) {
                    w.ready_at = Instant::now();
                    w.pid = Some(pid);
                    break;
                }
                if w.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some()) {
                    return Err(w.not_ready(what));
                }
                if Instant::now() > deadline {
                    return Err(CheckpointError::Timeout { what, timeout });
                }
                std::thread::sleep(Duration::from_micros(200));
            },
            None => loop {
                match w.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok((at, line)) if crate::record::is_ready_line(line.trim_end()) => {
                        w.ready_at = at;
                        break;
                    }
                    Ok(_) => {}
                    Err(RecvTimeoutError::Timeout) => return Err(CheckpointError::Timeout { what, timeout }),
                    Err(RecvTimeoutError::Disconnected) => return Err(w.not_ready(what)),
                }
            },
        }
        if w.pid.is_none() {
            // runc and runsc name the container's process (runsc: the sandbox) in `state`.
            w.pid = state_pid(setup, &w.id);
        }
        w.minflt_at_ready = w.pid.and_then(minflt_tree);
        Ok(w)
    }

    fn not_ready(&mut self, what: String) -> CheckpointError {
        let code = self.reap(Duration::from_secs(2)).and_then(|e| e.code);
        let stderr = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
        CheckpointError::NotReady { what, code, stderr: stderr.trim().to_string() }
    }

    /// Wait up to `timeout` for the runtime process to end; kill it past that.
    fn reap(&mut self, timeout: Duration) -> Option<ExitInfo> {
        use std::os::unix::process::ExitStatusExt;
        let mut c = self.child.take()?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            match c.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                _ => {
                    let _ = c.kill();
                    break c.wait().ok();
                }
            }
        };
        status.map(|s| ExitInfo { code: s.code(), signal: s.signal(), oom_killed: false })
    }

    /// The pid the ready sign named (runsc: the sandbox; runc, cvbench-runtime: the workload).
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// Send the go line, wait (up to `timeout`) for the run to end, and fill `rec` (made by
    /// `runner::record_for`) with it.
    pub fn go(mut self, mut rec: RunRecord, timeout: Duration, ckpt: Option<&Checkpoint>) -> RunRecord {
        let t_go = Instant::now();
        if let Some(stdin) = self.child.as_mut().and_then(|c| c.stdin.as_mut()) {
            let _ = stdin.write_all(b"go\n");
        }
        let deadline = t_go + timeout;
        let (mut first, mut output, mut minflt_end) = (None, None, None);
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok((at, line)) => {
                    first.get_or_insert(at);
                    if let Some(o) = WorkloadOutput::parse(&line) {
                        // The last line: sample the tree's faults before it is gone.
                        minflt_end = self.pid.and_then(minflt_tree);
                        output = Some(o);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    rec.error = Some(format!("the {} run did not end within {timeout:?}", self.what()));
                    break;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let exit = self.reap(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100)));
        let t_exit = Instant::now();
        let stderr = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
        let ns = |a: Instant, b: Instant| b.saturating_duration_since(a).as_nanos() as u64;
        rec.host.launch_to_ready_ns = Some(ns(self.t0, self.ready_at));
        rec.host.launch_to_exit_ns = Some(ns(self.t0, t_exit));
        match &exit {
            Some(e) if e.code == Some(0) => {}
            Some(e) if rec.error.is_none() => {
                rec.error = Some(format!("the {} run failed ({e:?}): {}", self.what(), stderr.trim()));
            }
            _ => {}
        }
        rec.exit = exit;
        match output {
            Some(o) => rec.metrics = o.finite_metrics(),
            None if rec.error.is_none() => {
                rec.error = Some(format!("the workload printed no result line: {}", stderr.trim()))
            }
            None => {}
        }
        let first = first.unwrap_or(t_exit);
        rec.host
            .phases
            .push(((if self.restored { "restore" } else { "boot_to_ready" }).into(), ns(self.t0, self.ready_at)));
        rec.host.phases.push(("go_to_first_output".into(), ns(t_go, first)));
        rec.host.phases.push(("first_output_to_exit".into(), ns(first, t_exit)));
        if let Some(k) = self.minflt_at_ready {
            rec.extra.insert("minflt_to_ready".into(), k as f64);
            if let Some(end) = minflt_end {
                let key = if self.restored { "minflt_after_restore" } else { "minflt_after_ready" };
                rec.extra.insert(key.into(), end.saturating_sub(k) as f64);
            }
        }
        if let (true, Some(c)) = (self.restored, ckpt) {
            rec.extra.insert("snapshot_memory_disk_kib".into(), (c.disk_bytes() >> 10) as f64);
            rec.extra.insert("checkpoint_image_bytes".into(), c.manifest.bytes() as f64);
            rec.extra.insert("snapshot_take_ns".into(), c.take_ns as f64);
            rec.extra.insert("checkpoint_ns".into(), c.checkpoint_ns as f64);
            rec.notes.push(format!(
                "restored from a {} checkpoint taken where the workload waits for its go line: \"ready\" is the runtime's pid file after `restore` (the workload printed READY before it was saved); page faults are those of the process tree under that pid ({})",
                if uses_criu(self.kind) { "CRIU" } else { "gVisor" },
                if matches!(self.kind, Kind::Gvisor(_)) { "the sandbox: sentry and stubs" } else { "the workload" }
            ));
        }
        rec
    }

    fn what(&self) -> String {
        format!("{} {}", self.kind.name(), if self.restored { "restore" } else { "run" })
    }
}

impl Drop for WaitingContainer {
    fn drop(&mut self) {
        // Told to stop early (a failed caller) or already ended: either way nothing of this
        // container may stay. Killing the runtime process alone can leave runsc's sandbox.
        let _ = self.child.as_mut().map(Child::kill);
        self.reap(Duration::from_millis(500));
        let _ = self.delete.status();
    }
}

/// The container's pid from `<runtime> state ID`.
fn state_pid(setup: &Setup, id: &str) -> Option<i32> {
    let out = setup.command().args(["state", id]).stderr(Stdio::null()).output().ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get("pid")?.as_i64().filter(|p| *p > 0).map(|p| p as i32)
}

/// Start the waiting form fresh in `backend`'s runtime; ready at its READY line.
pub fn launch_cold(
    backend: BackendId,
    workload: Workload,
    args: &[String],
    timeout: Duration,
) -> Result<WaitingContainer, CheckpointError> {
    let kind = kind_for(backend)?;
    let setup = Setup::new(kind, workload, args)?;
    let id = super::unique("cvb-cold");
    let mut cmd = setup.command();
    cmd.arg("run").arg("--bundle").arg(&setup.bundle).arg(&id);
    let mut w = WaitingContainer::spawn(&setup, cmd, id, None, format!("{} run", kind.name()), timeout)?;
    w._setup = Some(setup);
    Ok(w)
}

/// Verify `ckpt`'s image and start `<runtime> restore` on it; ready when the runtime wrote
/// its pid file.
pub fn launch_restored(ckpt: &Checkpoint, timeout: Duration) -> Result<WaitingContainer, CheckpointError> {
    restore_from(&ckpt.setup, &ckpt.image, timeout)
}

fn restore_from(setup: &Setup, image_dir: &Path, timeout: Duration) -> Result<WaitingContainer, CheckpointError> {
    image::verify(image_dir, setup.kind.name())?;
    let id = super::unique("cvb-restored");
    let pid_file = setup.dir.path().join(format!("{id}.pid"));
    let mut cmd = setup.command();
    cmd.arg("restore").arg("--image-path").arg(image_dir);
    setup.work_path(&mut cmd, &format!("work-{id}"))?;
    cmd.arg("--bundle").arg(&setup.bundle).arg("--pid-file").arg(&pid_file).arg(&id);
    let what = format!("{} restore", setup.kind.name());
    let r = WaitingContainer::spawn(setup, cmd, id, Some(pid_file.clone()), what, timeout);
    if r.is_err() {
        let _ = std::fs::remove_file(&pid_file);
    }
    r
}

/// Restore from an image directory that this process did not take (the bad-input path of
/// the tests, and a user's own image): a fresh bundle for `workload`, then [`launch_restored`]'s
/// checks and start. Nothing is left when it fails.
pub fn restore_dir(
    backend: BackendId,
    workload: Workload,
    image_dir: &Path,
    timeout: Duration,
) -> Result<WaitingContainer, CheckpointError> {
    let kind = kind_for(backend)?;
    let setup = Setup::new(kind, workload, &[])?;
    let mut w = restore_from(&setup, image_dir, timeout)?;
    w._setup = Some(setup);
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gvisor_runc_and_ours_checkpoint_and_criu_is_for_the_oci_pair() {
        for b in BackendId::ALL {
            let k = kind_for(b);
            let expect =
                matches!(b, BackendId::Gvisor | BackendId::GvisorPtrace | BackendId::Runc | BackendId::CvbenchRuntime);
            assert_eq!(k.is_ok(), expect, "{b}");
            if let Ok(k) = k {
                assert_eq!(uses_criu(k), !matches!(k, Kind::Gvisor(_)), "{b}");
            }
        }
    }

    #[test]
    fn minflt_of_this_process_is_read() {
        assert!(minflt_tree(std::process::id() as i32).is_some_and(|n| n > 0));
    }
}
