//! Runs one workload instance on one backend and turns what happened into a
//! [`RunRecord`]: the launch→READY and launch→exit clocks, the footprint
//! sampled while the instance is up, the workload's JSON, and any error.
//! [`record_of`] is the one place a unit's identity goes into its record (every scenario's
//! unit starts from it); [`run_with`] is the one launch → READY → end path, and a scenario
//! that does more at READY (the security-surface probe) hooks in through [`Phases`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::backend::{Backend, BackendId, BackendOptions, Instance, LaunchSpec};
use crate::footprint;
use crate::record::{Footprint, HostTimings, RunRecord, WorkloadOutput, SCHEMA_VERSION};
use crate::workload::Workload;

/// One run to make.
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub workload: Workload,
    pub args: Vec<String>,
    pub options: BackendOptions,
    pub timeout: Duration,
    /// Sample RSS/PSS of the instance's processes once it is READY, and poll
    /// their peak RSS while they run.
    pub sample_footprint: bool,
    /// For `idle`: how long to keep it up after READY before closing stdin (with `group`:
    /// the most it is kept up).
    pub hold: Duration,
    /// Instances up together (density): hold until all of the group are READY, then its window.
    pub group: Option<std::sync::Arc<crate::group_hold::GroupHold>>,
    pub env_id: String,
    pub scenario: String,
    pub iteration: u32,
    /// Launch the instance pinned to this CPU (the launching thread moves
    /// there for the launch call only, so the instance's processes inherit
    /// it and the harness stays where it was).
    pub pin_instance_cpu: Option<usize>,
    /// Drop the page cache before the unit's cold part (cold-start pull, image-depth mount):
    /// `cvbench bench --drop-caches`, carried in the plan.
    pub drop_caches: bool,
}

impl RunRequest {
    pub fn new(workload: Workload, args: Vec<String>) -> RunRequest {
        RunRequest {
            workload,
            args,
            options: BackendOptions::default(),
            timeout: Duration::from_secs(120),
            sample_footprint: false,
            hold: Duration::ZERO,
            group: None,
            env_id: String::new(),
            scenario: workload.to_string(),
            iteration: 0,
            pin_instance_cpu: None,
            drop_caches: false,
        }
    }
}

/// What a scenario adds to the one run path. The defaults are a plain run: nothing extra at
/// READY, and the workload's end (exit status, result line) decides the record.
pub trait Phases {
    /// Called once the instance printed READY (after the footprint sample, before the hold).
    /// An error becomes the record's error, after the instance has been ended and collected.
    fn at_ready(&mut self, _inst: &dyn Instance, _rec: &mut RunRecord) -> Result<(), String> {
        Ok(())
    }

    /// Whether the workload's own end decides the record. A probe that needs the instance
    /// only up to READY says no: then only READY (and `at_ready`) can fail it, and the record
    /// carries no metrics and no host-representativeness note (it holds no timing result).
    fn judges_the_end(&self) -> bool {
        true
    }
}

/// A plain run.
struct Plain;

impl Phases for Plain {}

/// Lines the stdout reader reports.
enum Event {
    Ready(Instant),
    Done { output: Option<WorkloadOutput>, other: Vec<String> },
}

/// Errors while wiring the run itself (before the backend is involved).
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("creating the {0} pipe")]
    Pipe(&'static str, #[source] nix::Error),
}

fn pipes() -> Result<[(std::os::fd::OwnedFd, std::os::fd::OwnedFd); 2], RunnerError> {
    let out = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| RunnerError::Pipe("stdout", e))?;
    let err = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| RunnerError::Pipe("stderr", e))?;
    Ok([out, err])
}

/// The record of one unit of `req` on `backend`, started now, before anything is measured:
/// the one place a unit's identity (backend, workload, arguments, environment, scenario,
/// round) is copied into its record, for the runner and the bench's own units alike.
pub fn record_for(backend: &dyn Backend, req: &RunRequest) -> RunRecord {
    record_named(backend.name(), req)
}

/// [`record_for`] by the backend's id, for units that do not go through a [`Backend`] object
/// (a restored VM).
pub fn record_of(backend: BackendId, req: &RunRequest) -> RunRecord {
    record_named(backend.name(), req)
}

fn record_named(backend: &str, req: &RunRequest) -> RunRecord {
    RunRecord {
        schema_version: SCHEMA_VERSION,
        backend: backend.to_string(),
        workload: req.workload.to_string(),
        args: req.args.clone(),
        env_id: req.env_id.clone(),
        scenario: req.scenario.clone(),
        iteration: req.iteration,
        started_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
        host: HostTimings::default(),
        footprint: Footprint::default(),
        exit: None,
        metrics: BTreeMap::new(),
        extra: BTreeMap::new(),
        notes: Vec::new(),
        error: None,
    }
}

/// Run one instance to completion and describe it. Never panics on a failed
/// run: the failure goes into `error`.
pub fn run(backend: &dyn Backend, req: &RunRequest) -> RunRecord {
    run_with(backend, req, &mut Plain)
}

/// [`run`] with a scenario's [`Phases`].
pub fn run_with(backend: &dyn Backend, req: &RunRequest, phases: &mut dyn Phases) -> RunRecord {
    let mut rec = record_for(backend, req);
    if let Err(e) = run_into(backend, req, phases, &mut rec) {
        rec.error = Some(e);
    }
    rec
}

/// An error with its whole cause chain on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn run_into(
    backend: &dyn Backend,
    req: &RunRequest,
    phases: &mut dyn Phases,
    rec: &mut RunRecord,
) -> Result<(), String> {
    // Dropped on every way out: an instance that ends before READY releases its group.
    let mut member = req.group.as_deref().map(crate::group_hold::GroupHold::join);
    let [(out_r, out_w), (err_r, err_w)] = pipes().map_err(|e| chain(&e))?;
    let spec = LaunchSpec {
        workload: req.workload,
        args: req.args.clone(),
        stdin_pipe: req.workload.needs().long_running,
        stdout: out_w,
        stderr: err_w,
        timeout: req.timeout,
        options: BackendOptions { instance_cpu: req.pin_instance_cpu, ..req.options.clone() },
    };
    let (tx, rx) = mpsc::channel();
    let stdout_reader = std::thread::spawn(move || {
        let mut output = None;
        let mut other = Vec::new();
        for line in BufReader::new(std::fs::File::from(out_r)).lines() {
            let Ok(line) = line else { break };
            if crate::record::is_ready_line(&line) {
                let _ = tx.send(Event::Ready(Instant::now()));
            } else if let Some(o) = WorkloadOutput::parse(&line) {
                output = Some(o);
            } else if other.len() < 200 {
                other.push(line);
            }
        }
        let _ = tx.send(Event::Done { output, other });
    });
    let (err_tx, err_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::fs::File::from(err_r).take(64 << 10).read_to_end(&mut buf);
        let _ = err_tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    // Both readers end when the last writer of their pipe closes it. A process that outlives the
    // instance while holding a pipe (a leftover grandchild, a VMM stuck in the kernel) would
    // make that wait endless: past the instance's end it is bounded, and the run fails saying so.
    let readers = Readers { stdout: Some(stdout_reader), stderr: err_rx };

    let home = req.pin_instance_cpu.and_then(|cpu| {
        let before = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu).ok()?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).ok()?;
        Some(before)
    });
    let t0 = Instant::now();
    let launched = backend.launch(spec);
    if let Some(before) = home {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &before);
    }
    let mut inst = match launched {
        Ok(i) => i,
        Err(e) => {
            let (stderr, _) = readers.finish(&rx, false, PIPE_DRAIN);
            return Err(with_stderr(chain(&e), &stderr.unwrap_or_default()));
        }
    };

    let sampler = req.sample_footprint.then(|| footprint::PeakSampler::start(inst.pids(), Duration::from_millis(10)));
    // Wait for READY (or the end of output) within the timeout.
    let mut ready = None;
    let mut done = None;
    let mut ready_hwm = None;
    let mut vmm_mem = None;
    let mut shared_mem = None;
    let mut hooked = Ok(());
    match rx.recv_timeout(req.timeout) {
        Ok(Event::Ready(t)) => ready = Some(t),
        Ok(d @ Event::Done { .. }) => done = Some(d),
        Err(_) => {}
    }
    if let Some(t) = ready {
        rec.host.launch_to_ready_ns = Some(t.duration_since(t0).as_nanos() as u64);
        if req.sample_footprint {
            let f = footprint::sample(&inst.pids());
            // A short-lived instance can be gone before the poller's first look: the
            // high-water mark read at READY is a lower bound the peak never falls below.
            ready_hwm = footprint::hwm_sum(&inst.pids());
            if let (Some(bytes), Some(pid)) = (inst.guest_ram_bytes(), inst.pids().first().copied()) {
                vmm_mem = footprint::vmm_memory(pid, bytes);
            }
            rec.footprint.rss_kib = f.rss_kib;
            rec.footprint.pss_kib = f.pss_kib;
            let shared = inst.shared_pids();
            if !shared.is_empty() {
                shared_mem = Some((footprint::sample(&shared), shared.len()));
            }
        }
        hooked = phases.at_ready(inst.as_ref(), rec);
        match member.as_mut() {
            Some(m) => m.ready_and_hold(req.hold),
            None if !req.hold.is_zero() => std::thread::sleep(req.hold),
            None => {}
        }
    }
    inst.close_stdin();
    let remaining = req.timeout.saturating_sub(t0.elapsed()).max(Duration::from_millis(1));
    let waited = inst.wait(remaining);
    let t_exit = Instant::now();
    rec.footprint.peak_rss_kib = match (sampler.and_then(|s| s.finish()), ready_hwm) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    if let Some(a) = inst.effective_args() {
        rec.args = a;
    }
    let stopped_idle = inst.stopped_instead_of_closing_stdin();
    rec.host.phases = inst.phases();
    rec.extra = inst.extra();
    if let Some(m) = vmm_mem {
        // At READY: the VMM's RSS split into guest RAM the guest touched and the VMM's own.
        rec.extra.insert("vmm_rss_at_ready_kib".into(), m.rss_kib as f64);
        rec.extra.insert("guest_ram_touched_kib".into(), m.guest_touched_kib as f64);
        rec.extra.insert("vmm_overhead_kib".into(), m.overhead_kib() as f64);
    }
    if let Some((s, n)) = shared_mem {
        // At READY: the daemon processes every instance of this backend shares.
        for (k, v) in [("shared_daemon_rss_kib", s.rss_kib), ("shared_daemon_pss_kib", s.pss_kib)] {
            if let Some(v) = v {
                rec.extra.insert(k.into(), v as f64);
            }
        }
        rec.extra.insert("shared_daemon_processes".into(), n as f64);
    }
    rec.notes.extend(inst.notes());
    if phases.judges_the_end() {
        rec.notes.extend(crate::hostkind::not_representative_note(&crate::hostkind::host_cpu()));
    }
    // A backend with exact accounting (a cgroup's peak) overrides the sampled peak.
    if let Some(k) = rec.extra.remove("peak_rss_kib") {
        rec.footprint.peak_rss_kib = Some(k as u64);
    }
    drop(inst);

    let (stderr, drained) = readers.finish(&rx, done.is_some(), PIPE_DRAIN);
    if done.is_none() {
        done = drained;
    }
    let Some(stderr) = stderr else {
        let why = format!(
            "the instance's output pipes stayed open {} s after it ended (a process it left behind holds them)",
            PIPE_DRAIN.as_secs()
        );
        return Err(match waited {
            Err(e) => format!("{}; {why}", chain(&e)),
            Ok(_) => why,
        });
    };
    let exit = waited.map_err(|e| with_stderr(chain(&e), &stderr));
    if !phases.judges_the_end() {
        // A probe: READY and what it read there decide; the end only goes into the record.
        rec.exit = exit.ok();
        return match ready {
            Some(_) => hooked,
            None => Err(with_stderr(format!("{} never printed READY within {:?}", req.workload, req.timeout), &stderr)),
        };
    }
    hooked?;
    let exit = exit?;
    rec.exit = Some(exit);
    rec.host.launch_to_exit_ns = Some(t_exit.duration_since(t0).as_nanos() as u64);
    let (output, other) = match done {
        Some(Event::Done { output, other }) => (output, other),
        _ => (None, Vec::new()),
    };
    if exit.oom_killed {
        return Err(with_stderr("the instance was killed by the OOM killer".into(), &stderr));
    }
    if !exit.success() {
        let how = match (exit.code, exit.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (_, Some(s)) => format!("signal {s}"),
            _ => "unknown status".into(),
        };
        let mut msg = format!("workload {} ended with {how}", req.workload);
        if !other.is_empty() {
            msg.push_str(&format!(" (stdout: {})", other.join(" | ")));
        }
        return Err(with_stderr(msg, &stderr));
    }
    if ready.is_none() {
        return Err(with_stderr(format!("workload {} never printed READY", req.workload), &stderr));
    }
    match output {
        Some(o) if o.workload == req.workload.name() => {
            rec.metrics = o.finite_metrics();
            Ok(())
        }
        Some(o) => Err(format!("workload printed a result for {:?}, expected {:?}", o.workload, req.workload)),
        None if stopped_idle && req.workload == Workload::Idle => {
            rec.notes.push("idle: the instance was stopped after READY (it has no stdin to close), so the workload printed no result line".into());
            Ok(())
        }
        None => Err(with_stderr(format!("workload {} printed no JSON result", req.workload), &stderr)),
    }
}

/// How long the output pipes may stay open once the instance has ended.
const PIPE_DRAIN: Duration = Duration::from_secs(15);

/// The two threads reading the instance's stdout and stderr.
struct Readers {
    stdout: Option<std::thread::JoinHandle<()>>,
    stderr: mpsc::Receiver<String>,
}

impl Readers {
    /// Wait up to `limit` for both pipes to reach end-of-file: the stderr text (None if it did
    /// not end in time) and the stdout reader's final event, if it came. A reader still blocked
    /// is left detached; it ends when the pipe's last holder exits.
    /// `seen_done`: the caller already took the final event.
    fn finish(
        mut self,
        events: &mpsc::Receiver<Event>,
        seen_done: bool,
        limit: Duration,
    ) -> (Option<String>, Option<Event>) {
        let deadline = Instant::now() + limit;
        let stderr = self.stderr.recv_timeout(limit).ok();
        let mut done = None;
        if !seen_done {
            // The stdout reader's last event; a late READY before it is skipped.
            while let Ok(e) = events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                if matches!(e, Event::Done { .. }) {
                    done = Some(e);
                    break;
                }
            }
        }
        let stdout_ended = seen_done || done.is_some();
        if stdout_ended {
            if let Some(h) = self.stdout.take() {
                let _ = h.join();
            }
        }
        (stderr.filter(|_| stdout_ended), done)
    }
}

fn with_stderr(msg: String, stderr: &str) -> String {
    let tail: String = stderr.trim().chars().rev().take(800).collect::<Vec<_>>().into_iter().rev().collect();
    if tail.is_empty() {
        msg
    } else {
        format!("{msg}; stderr: {tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::process::ChildProcess;
    use crate::backend::{BackendError, Instance};
    use crate::record::ExitInfo;
    use std::process::Command;

    /// A backend whose instance is `sh -c SCRIPT`: a real process, for the runner's own edges.
    struct Shell(String);

    struct ShellInstance(ChildProcess);

    impl Backend for Shell {
        fn id(&self) -> crate::backend::BackendId {
            crate::backend::BackendId::Native
        }
        fn name(&self) -> &'static str {
            "shell"
        }
        fn check(&self) -> Result<(), String> {
            Ok(())
        }
        fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn Instance>, BackendError> {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &self.0]);
            Ok(Box::new(ShellInstance(ChildProcess::spawn("shell", cmd, spec)?)))
        }
    }

    impl Instance for ShellInstance {
        fn pids(&self) -> Vec<i32> {
            vec![self.0.pid()]
        }
        fn close_stdin(&mut self) {
            self.0.close_stdin();
        }
        fn wait(&mut self, timeout: Duration) -> Result<ExitInfo, BackendError> {
            self.0.wait(timeout)
        }
        fn stop(&mut self) -> Result<ExitInfo, BackendError> {
            self.0.stop(Duration::from_secs(1))
        }
    }

    #[test]
    fn a_result_line_after_ready_is_a_complete_record() {
        let b = Shell(r#"echo READY; echo '{"workload":"noop","metrics":{"x":1}}'"#.into());
        let rec = run(&b, &RunRequest::new(Workload::Noop, vec![]));
        assert_eq!(rec.error, None);
        assert_eq!(rec.metrics.get("x"), Some(&1.0));
    }

    #[test]
    fn a_leftover_process_holding_the_pipes_fails_the_run_instead_of_hanging_it() {
        // The instance exits at once, but a background child keeps its stdout and stderr open.
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("bg.pid");
        let b = Shell(format!(
            r#"echo READY; echo '{{"workload":"noop","metrics":{{}}}}'; sleep 40 & echo $! > {}; exit 0"#,
            pid_file.display()
        ));
        let t = Instant::now();
        let rec = run(&b, &RunRequest::new(Workload::Noop, vec![]));
        let took = t.elapsed();
        // The background sleep is this test's own: end it by its pid.
        let pid: i32 = std::fs::read_to_string(&pid_file).expect("pid file").trim().parse().expect("pid");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        let err = rec.error.expect("an error");
        assert!(err.contains("stayed open"), "{err}");
        assert!(took < Duration::from_secs(35), "took {took:?}");
    }

    /// Records what the instance looked like at READY, and fails the unit there when asked.
    struct Probe {
        alive_at_ready: Option<bool>,
        fail: bool,
        judge_end: bool,
    }

    impl Phases for Probe {
        fn at_ready(&mut self, inst: &dyn Instance, rec: &mut RunRecord) -> Result<(), String> {
            let pid = nix::unistd::Pid::from_raw(inst.pids()[0]);
            self.alive_at_ready = Some(nix::sys::signal::kill(pid, None).is_ok());
            rec.notes.push("probe: read at READY".into());
            if self.fail {
                return Err("probe: nothing readable".into());
            }
            Ok(())
        }
        fn judges_the_end(&self) -> bool {
            self.judge_end
        }
    }

    #[test]
    fn a_phase_at_ready_sees_the_live_instance_and_its_error_is_the_records_after_the_end() {
        // The instance waits for stdin after READY: it is up while the phase looks at it.
        let b = Shell(r#"echo READY; read x; echo '{"workload":"noop","metrics":{"x":1}}'"#.into());
        let mut p = Probe { alive_at_ready: None, fail: true, judge_end: true };
        let rec = run_with(&b, &RunRequest::new(Workload::Noop, vec![]), &mut p);
        assert_eq!(p.alive_at_ready, Some(true));
        assert_eq!(rec.error.as_deref(), Some("probe: nothing readable"));
        assert!(rec.notes.iter().any(|n| n == "probe: read at READY"), "{:?}", rec.notes);
        // The instance was still ended and collected.
        assert!(rec.exit.is_none() && rec.host.launch_to_ready_ns.is_some());
    }

    #[test]
    fn a_probe_is_judged_by_ready_and_its_phase_not_by_the_workloads_end() {
        let b = Shell("echo READY; read x; exit 3".into());
        let mut p = Probe { alive_at_ready: None, fail: false, judge_end: false };
        let rec = run_with(&b, &RunRequest::new(Workload::Idle, vec![]), &mut p);
        assert_eq!(rec.error, None);
        assert_eq!(rec.exit.and_then(|e| e.code), Some(3));
        assert!(rec.metrics.is_empty());

        let silent = Shell("exit 0".into());
        let rec = run_with(&silent, &RunRequest::new(Workload::Idle, vec![]), &mut p);
        assert!(rec.error.as_deref().is_some_and(|e| e.contains("never printed READY")), "{:?}", rec.error);
    }
}
