//! Starting a micro-VM from a snapshot, for either guest kind ([`Guest`]). [`take_snapshot`]
//! boots `cvbench-vmm bare` (or `linux`) with the workload's `wait-go` form and lets it save
//! itself where it waits for its go line; [`launch_restored`] starts `cvbench-vmm
//! bare-restore` (or `linux-restore`) on that snapshot (its "ready" is the VMM's `restored`
//! line on a pipe of its own: the guest printed its READY before it was saved), and
//! [`WaitingVm::go`] sends the go line and collects the run into a [`RunRecord`] with the
//! phases restore → first output → exit, the job's own time and faults, the snapshot's size on
//! disk and the VMM's page faults after the restore. The Linux guest reads its go line from
//! its console, whose tty echoes it: that echo is not counted as the first output.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cvbench_microvm::snapshot::memory::Load;
use cvbench_microvm::stats::{BareStats, LinuxStats, RestoreInfo, SnapshotInfo};

use super::BackendId;
use crate::paths;
use crate::record::{ExitInfo, RunRecord, WorkloadOutput};
use crate::workload::Workload;

/// Guest memory of snapshotted VMs, as the bare backend's default.
pub const SNAPSHOT_MEM_MIB: u32 = 512;

/// Which VMM guest a snapshot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guest {
    /// `cvbench-vmm bare`: the workload at CPL3, no guest kernel.
    Bare,
    /// `cvbench-vmm linux`: the guest kernel, `/init` and the workload.
    Linux,
}

impl Guest {
    /// The guest of `backend`, if it has snapshots.
    pub fn of(backend: BackendId) -> Option<Guest> {
        match backend {
            BackendId::MicrovmBare => Some(Guest::Bare),
            BackendId::Microvm => Some(Guest::Linux),
            _ => None,
        }
    }

    pub fn backend(self) -> BackendId {
        match self {
            Guest::Bare => BackendId::MicrovmBare,
            Guest::Linux => BackendId::Microvm,
        }
    }

    /// Guest memory of a snapshotted VM.
    pub fn mem_mib(self) -> u32 {
        match self {
            Guest::Bare => SNAPSHOT_MEM_MIB,
            Guest::Linux => super::guestkit::DEFAULT_MEM_MIB,
        }
    }

    const fn boot_mode(self) -> &'static str {
        match self {
            Guest::Bare => "bare",
            Guest::Linux => "linux",
        }
    }

    const fn restore_mode(self) -> &'static str {
        match self {
            Guest::Bare => "bare-restore",
            Guest::Linux => "linux-restore",
        }
    }

    /// The `cvbench-vmm` command booting this guest (the caller adds the workload's
    /// arguments), with its scratch directory (the Linux guest's initramfs), which must
    /// outlive the boot.
    fn boot_command(self, timeout: Duration) -> Result<(Command, tempfile::TempDir), RestoreError> {
        let scratch = tempfile::Builder::new().prefix("cvbench-snapboot-").tempdir().map_err(RestoreError::Dir)?;
        let mut cmd = Command::new(vmm()?);
        cmd.args([self.boot_mode(), "--mem-mib", &self.mem_mib().to_string()])
            .args(["--timeout-s", &timeout.as_secs_f64().to_string()]);
        match self {
            Guest::Bare => {
                cmd.arg("--elf").arg(paths::workload_binary()?);
            }
            Guest::Linux => {
                let kernel = super::guestkit::kernel::kernel().map_err(RestoreError::Guest)?;
                let initrd = scratch.path().join("initramfs.cpio");
                let img = cvbench_microvm::linux::initramfs::GuestImage {
                    workload: paths::workload_binary()?,
                    busybox: PathBuf::from("/bin/busybox"),
                };
                cvbench_microvm::linux::initramfs::write_guest_image(&img, &initrd)
                    .map_err(|e| RestoreError::Guest(e.to_string()))?;
                cmd.arg("--kernel").arg(kernel).arg("--initrd").arg(initrd).args(["--cmdline", "quiet"]);
            }
        }
        Ok((cmd, scratch))
    }
}

/// What a VMM's `--stats-json` says, by guest kind.
enum VmmStats {
    Bare(BareStats),
    Linux(LinuxStats),
}

impl VmmStats {
    fn snapshot(&self) -> Option<&SnapshotInfo> {
        match self {
            VmmStats::Bare(s) => s.snapshot.as_ref(),
            VmmStats::Linux(s) => s.snapshot.as_ref(),
        }
    }

    fn restore(&self) -> Option<&RestoreInfo> {
        match self {
            VmmStats::Bare(s) => s.restore.as_ref(),
            VmmStats::Linux(s) => s.restore.as_ref(),
        }
    }
}

/// Why a snapshot could not be taken or a restored VM could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("workload {0} has no waiting form: a snapshot start runs noop, cpu or mem-touch")]
    NoWaitingForm(Workload),
    #[error("cannot find a binary")]
    Paths(#[from] paths::PathsError),
    #[error("cannot make the snapshot directory")]
    Dir(#[source] std::io::Error),
    #[error("cannot start {what}")]
    Spawn {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("taking the snapshot failed (cvbench-vmm exit {code:?}): {stderr}")]
    Take { code: Option<i32>, stderr: String },
    #[error("cannot read the stats file {path}")]
    Stats {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the stats file {path} is not valid")]
    StatsParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the VMM ended before its guest was ready (exit {code:?}): {stderr}")]
    NotRestored { code: Option<i32>, stderr: String },
    #[error("cannot prepare the Linux guest: {0}")]
    Guest(String),
}

/// The `wait-go` arguments that run `workload` with `args` after the go line.
pub fn wait_go_args(workload: Workload, args: &[String]) -> Result<Vec<String>, RestoreError> {
    let job = match workload {
        Workload::Noop | Workload::Cpu | Workload::MemTouch => workload.name(),
        other => return Err(RestoreError::NoWaitingForm(other)),
    };
    Ok(["wait-go", "--job", job].into_iter().map(String::from).chain(args.iter().cloned()).collect())
}

/// A snapshot on disk, removed with this value.
pub struct Snapshot {
    pub guest: Guest,
    dir: tempfile::TempDir,
    pub info: SnapshotInfo,
    /// How long `cvbench-vmm bare --snapshot-to` took, boot to saved.
    pub take_ns: u64,
}

impl Snapshot {
    /// The snapshot directory (`memory`, `state`).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("snapshot")
    }
}

fn vmm() -> Result<PathBuf, RestoreError> {
    Ok(paths::sibling_binary("cvbench-vmm", "CVBENCH_VMM")?)
}

fn read_stats(guest: Guest, path: &Path) -> Result<VmmStats, RestoreError> {
    let bytes = std::fs::read(path).map_err(|source| RestoreError::Stats { path: path.into(), source })?;
    let parse = |source| RestoreError::StatsParse { path: path.into(), source };
    match guest {
        Guest::Bare => serde_json::from_slice(&bytes).map(VmmStats::Bare).map_err(parse),
        Guest::Linux => serde_json::from_slice(&bytes).map(VmmStats::Linux).map_err(parse),
    }
}

/// Boot `workload` in its waiting form on `guest` and save it where it waits for the go line.
pub fn take_snapshot(
    guest: Guest,
    workload: Workload,
    args: &[String],
    timeout: Duration,
) -> Result<Snapshot, RestoreError> {
    let guest_args = wait_go_args(workload, args)?;
    let dir = tempfile::Builder::new().prefix("cvbench-snapshot-").tempdir().map_err(RestoreError::Dir)?;
    let stats = dir.path().join("take-stats.json");
    let snap = dir.path().join("snapshot");
    std::fs::create_dir(&snap).map_err(RestoreError::Dir)?;
    let (mut cmd, _scratch) = guest.boot_command(timeout)?;
    let t = Instant::now();
    let out = cmd
        .arg("--stats-json")
        .arg(&stats)
        .arg("--snapshot-to")
        .arg(&snap)
        .arg("--")
        .args(&guest_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| RestoreError::Spawn { what: "cvbench-vmm", source })?;
    let take_ns = t.elapsed().as_nanos() as u64;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(RestoreError::Take { code: out.status.code(), stderr });
    }
    let info = read_stats(guest, &stats)?
        .snapshot()
        .cloned()
        .ok_or_else(|| RestoreError::Take { code: Some(0), stderr: "the VMM reported no snapshot".into() })?;
    Ok(Snapshot { guest, dir, info, take_ns })
}

/// A bare VM whose guest waits for its go line: booted cold (ready at its READY line) or
/// restored from a snapshot (ready at the VMM's `restored` line).
pub struct WaitingVm {
    guest: Guest,
    child: Option<Child>,
    /// The cold boot's initramfs, kept until the VM ends.
    _scratch: Option<tempfile::TempDir>,
    stats: tempfile::NamedTempFile,
    t0: Instant,
    started_unix_ms: u64,
    restored_at: Instant,
    /// `None` for a cold boot.
    load: Option<Load>,
    stdout: BufReader<std::process::ChildStdout>,
    stderr: std::thread::JoinHandle<String>,
}

/// Boot `workload`'s waiting form cold on `guest` and wait (up to `timeout`) for its READY
/// line (the Linux guest's console may print kernel lines first).
pub fn launch_cold(
    guest: Guest,
    workload: Workload,
    args: &[String],
    timeout: Duration,
) -> Result<WaitingVm, RestoreError> {
    let guest_args = wait_go_args(workload, args)?;
    let stats = tempfile::NamedTempFile::new().map_err(RestoreError::Dir)?;
    let (mut cmd, scratch) = guest.boot_command(timeout)?;
    if guest == Guest::Linux {
        cmd.arg("--console-input");
    }
    let started_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let t0 = Instant::now();
    let mut child = cmd
        .arg("--stats-json")
        .arg(stats.path())
        .arg("--")
        .args(&guest_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| RestoreError::Spawn { what: "cvbench-vmm", source })?;
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let stderr = read_stderr(&mut child);
    let mut ready = false;
    let mut line = String::new();
    loop {
        line.clear();
        match stdout.read_line(&mut line) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
        ready = crate::record::is_ready_line(line.trim_end());
        // The bare guest's first line is READY or nothing; the Linux console may lead with
        // kernel lines.
        if ready || guest == Guest::Bare {
            break;
        }
    }
    let restored_at = Instant::now();
    let mut vm = WaitingVm {
        guest,
        child: Some(child),
        _scratch: Some(scratch),
        stats,
        t0,
        started_unix_ms,
        restored_at,
        load: None,
        stdout,
        stderr,
    };
    if !ready {
        return Err(vm.failed_before_ready());
    }
    Ok(vm)
}

fn read_stderr(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut err = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = (&mut err).take(64 << 10).read_to_string(&mut s);
        s
    })
}

/// Start `cvbench-vmm bare-restore` (or `linux-restore`) on `snapshot` and wait (up to
/// `timeout`) for its `restored` line.
pub fn launch_restored(
    guest: Guest,
    snapshot: &Path,
    load: Load,
    timeout: Duration,
) -> Result<WaitingVm, RestoreError> {
    let stats = tempfile::NamedTempFile::new().map_err(RestoreError::Dir)?;
    let (ready_r, ready_w): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| RestoreError::Spawn { what: "the ready pipe", source: e.into() })?;
    let w = ready_w.as_raw_fd();
    let mut cmd = Command::new(vmm()?);
    cmd.args([guest.restore_mode(), "--load", load.name(), "--ready-fd", "3"])
        .args(["--timeout-s", &timeout.as_secs_f64().to_string(), "--snapshot"])
        .arg(snapshot)
        .arg("--stats-json")
        .arg(stats.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec the closure calls only dup2, which is async-signal-safe;
    // it puts the pipe's write end at descriptor 3 without close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(w, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let t0 = Instant::now();
    let mut child = cmd.spawn().map_err(|source| RestoreError::Spawn { what: "cvbench-vmm restore", source })?;
    drop(ready_w);
    let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let stderr = read_stderr(&mut child);
    // One line, or end-of-file if the VMM refused the snapshot and exited. The VMM's own
    // timeout bounds this wait.
    let mut line = String::new();
    let _ = BufReader::new(std::fs::File::from(ready_r)).read_line(&mut line);
    let restored_at = Instant::now();
    let mut vm = WaitingVm {
        guest,
        child: Some(child),
        _scratch: None,
        stats,
        t0,
        started_unix_ms,
        restored_at,
        load: Some(load),
        stdout,
        stderr,
    };
    if line.trim() != "restored" {
        return Err(vm.failed_before_ready());
    }
    Ok(vm)
}

impl WaitingVm {
    /// The VMM ended (or said something else) before its guest was ready: reap it and say why.
    fn failed_before_ready(&mut self) -> RestoreError {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
        }
        let status = self.child.take().and_then(|mut c| c.wait().ok());
        let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new)).join().unwrap_or_default();
        RestoreError::NotRestored { code: status.and_then(|s| s.code()), stderr: stderr.trim().into() }
    }

    /// The VMM's pid (for memory sampling while it waits).
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Send the go line, wait for the run to end, and record it into `rec` (the unit's record
    /// as `runner::record_of` started it; its start time becomes this VM's launch time).
    pub fn go(mut self, mut rec: RunRecord, snapshot: Option<&Snapshot>) -> RunRecord {
        rec.started_unix_ms = self.started_unix_ms;
        let mut child = self.child.take().expect("a restored VM has its child until go");
        let t_go = Instant::now();
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"go\n");
        }
        let mut first = None;
        let mut output = None;
        for line in (&mut self.stdout).lines() {
            let Ok(line) = line else { break };
            // The Linux guest's tty echoes the go line back: that is not the workload's output.
            if !(self.guest == Guest::Linux && first.is_none() && line.trim() == "go") {
                first.get_or_insert_with(Instant::now);
            }
            if let Some(o) = WorkloadOutput::parse(&line) {
                output = Some(o);
            }
        }
        let status = child.wait();
        let t_exit = Instant::now();
        let ns = |a: Instant, b: Instant| b.saturating_duration_since(a).as_nanos() as u64;
        rec.host.launch_to_ready_ns = Some(ns(self.t0, self.restored_at));
        rec.host.launch_to_exit_ns = Some(ns(self.t0, t_exit));
        let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new)).join().unwrap_or_default();
        match status {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                rec.exit = Some(ExitInfo { code: s.code(), signal: s.signal(), oom_killed: false });
                if !s.success() {
                    rec.error = Some(format!("the restored VM failed: {}", stderr.trim()));
                }
            }
            Err(e) => rec.error = Some(format!("cannot wait for the restored VM: {e}")),
        }
        if let Some(o) = output {
            rec.metrics = o.finite_metrics();
        } else if rec.error.is_none() {
            rec.error = Some("the restored workload printed no result line".into());
        }
        match read_stats(self.guest, self.stats.path()) {
            Ok(s) => self.fill_from_stats(&mut rec, &s),
            Err(e) if rec.error.is_none() => rec.error = Some(e.to_string()),
            Err(_) => {}
        }
        let first = first.unwrap_or(t_exit);
        let first_phase = if self.load.is_some() { "restore" } else { "boot_to_ready" };
        rec.host.phases.push((first_phase.into(), ns(self.t0, self.restored_at)));
        rec.host.phases.push(("go_to_first_output".into(), ns(t_go, first)));
        rec.host.phases.push(("first_output_to_exit".into(), ns(first, t_exit)));
        if let (Some(load), Some(snapshot)) = (self.load, snapshot) {
            rec.extra.insert("snapshot_memory_disk_kib".into(), (snapshot.info.memory_disk_bytes >> 10) as f64);
            rec.extra.insert("snapshot_memory_kib".into(), (snapshot.info.memory_bytes >> 10) as f64);
            rec.extra.insert("snapshot_state_bytes".into(), snapshot.info.state_bytes as f64);
            rec.notes.push(format!(
                "started from a snapshot ({} memory): the guest printed READY before it was saved, so \"ready\" is the VMM's restored line",
                load.name()
            ));
        }
        rec
    }

    fn fill_from_stats(&self, rec: &mut RunRecord, s: &VmmStats) {
        let kvm_kind = match s {
            VmmStats::Bare(s) => {
                for (name, ns) in &s.phases {
                    rec.host.phases.push((format!("vmm_{name}"), *ns));
                }
                rec.footprint.peak_rss_kib = s.vmm_peak_rss_kib;
                s.kvm_kind
            }
            VmmStats::Linux(s) => {
                rec.notes.extend(s.notes.iter().map(|n| format!("microvm: {n}")));
                Some(s.kvm_kind)
            }
        };
        if let Some(r) = s.restore() {
            rec.extra.insert("restore_vmm_ns".into(), r.restore_ns as f64);
            rec.extra.insert("minflt_after_restore".into(), r.minflt_after_restore as f64);
            rec.extra.insert("majflt_after_restore".into(), r.majflt_after_restore as f64);
        }
        if let Some(k) = kvm_kind {
            rec.extra
                .insert("kvm_software_pvm".into(), f64::from(u8::from(k == cvbench_microvm::KvmKind::SoftwarePvm)));
        }
    }
}

impl Drop for WaitingVm {
    fn drop(&mut self) {
        // A VM never told to go (a failed caller) is stopped: ours, by its pid.
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_jobs_with_a_waiting_form_can_be_snapshotted() {
        let args = wait_go_args(Workload::Cpu, &["--sha-mib".into(), "1".into()]).unwrap();
        assert_eq!(args, ["wait-go", "--job", "cpu", "--sha-mib", "1"]);
        assert!(matches!(wait_go_args(Workload::Idle, &[]), Err(RestoreError::NoWaitingForm(Workload::Idle))));
        assert!(wait_go_args(Workload::NetRr, &[]).is_err());
    }
}
