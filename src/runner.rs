//! Runs one workload instance on one backend and turns what happened into a
//! [`RunRecord`]: the launch→READY and launch→exit clocks, the footprint
//! sampled while the instance is up, the workload's JSON, and any error.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::backend::{Backend, BackendOptions, LaunchSpec};
use crate::footprint;
use crate::record::{Footprint, HostTimings, RunRecord, WorkloadOutput, SCHEMA_VERSION};

/// One run to make.
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub workload: String,
    pub args: Vec<String>,
    pub options: BackendOptions,
    pub timeout: Duration,
    /// Sample RSS/PSS of the instance's processes once it is READY, and poll
    /// their peak RSS while they run.
    pub sample_footprint: bool,
    /// For `idle`: how long to keep it up after READY before closing stdin.
    pub hold: Duration,
    pub env_id: String,
    pub scenario: String,
    pub iteration: u32,
    /// Launch the instance pinned to this CPU (the launching thread moves
    /// there for the launch call only, so the instance's processes inherit
    /// it and the harness stays where it was).
    pub pin_instance_cpu: Option<usize>,
}

impl RunRequest {
    pub fn new(workload: &str, args: Vec<String>) -> RunRequest {
        RunRequest {
            workload: workload.to_string(),
            args,
            options: BackendOptions::default(),
            timeout: Duration::from_secs(120),
            sample_footprint: false,
            hold: Duration::ZERO,
            env_id: String::new(),
            scenario: workload.to_string(),
            iteration: 0,
            pin_instance_cpu: None,
        }
    }
}

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

/// Run one instance to completion and describe it. Never panics on a failed
/// run: the failure goes into `error`.
pub fn run(backend: &dyn Backend, req: &RunRequest) -> RunRecord {
    let mut rec = RunRecord {
        schema_version: SCHEMA_VERSION,
        backend: backend.name().to_string(),
        workload: req.workload.clone(),
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
    };
    if let Err(e) = run_into(backend, req, &mut rec) {
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

fn run_into(backend: &dyn Backend, req: &RunRequest, rec: &mut RunRecord) -> Result<(), String> {
    let [(out_r, out_w), (err_r, err_w)] = pipes().map_err(|e| chain(&e))?;
    let spec = LaunchSpec {
        workload: req.workload.clone(),
        args: req.args.clone(),
        stdin_pipe: crate::workload::Workload::needs_of(&req.workload).long_running,
        stdout: out_w,
        stderr: err_w,
        timeout: req.timeout,
        options: req.options.clone(),
    };
    let (tx, rx) = mpsc::channel();
    let stdout_reader = std::thread::spawn(move || {
        let mut output = None;
        let mut other = Vec::new();
        for line in BufReader::new(std::fs::File::from(out_r)).lines() {
            let Ok(line) = line else { break };
            if line.trim() == "READY" {
                let _ = tx.send(Event::Ready(Instant::now()));
            } else if let Some(o) = WorkloadOutput::parse(&line) {
                output = Some(o);
            } else if other.len() < 200 {
                other.push(line);
            }
        }
        let _ = tx.send(Event::Done { output, other });
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::fs::File::from(err_r).take(64 << 10).read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });

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
            let _ = stdout_reader.join();
            let stderr = stderr_reader.join().unwrap_or_default();
            return Err(with_stderr(chain(&e), &stderr));
        }
    };

    let sampler = req.sample_footprint.then(|| footprint::PeakSampler::start(inst.pids(), Duration::from_millis(10)));
    // Wait for READY (or the end of output) within the timeout.
    let mut ready = None;
    let mut done = None;
    let mut ready_hwm = None;
    let mut vmm_mem = None;
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
        }
        if !req.hold.is_zero() {
            std::thread::sleep(req.hold);
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
    rec.notes = inst.notes();
    rec.notes.extend(crate::hostkind::not_representative_note(&crate::hostkind::host_cpu()));
    // A backend with exact accounting (a cgroup's peak) overrides the sampled peak.
    if let Some(k) = rec.extra.remove("peak_rss_kib") {
        rec.footprint.peak_rss_kib = Some(k as u64);
    }
    drop(inst);

    let stderr = stderr_reader.join().unwrap_or_default();
    let _ = stdout_reader.join();
    if done.is_none() {
        done = rx.try_iter().find(|e| matches!(e, Event::Done { .. }));
    }
    let exit = waited.map_err(|e| with_stderr(chain(&e), &stderr))?;
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
        Some(o) if o.workload == req.workload => {
            rec.metrics = o.finite_metrics();
            Ok(())
        }
        Some(o) => Err(format!("workload printed a result for {:?}, expected {:?}", o.workload, req.workload)),
        None if stopped_idle && req.workload == crate::workload::Workload::Idle.name() => {
            rec.notes.push("idle: the instance was stopped after READY (it has no stdin to close), so the workload printed no result line".into());
            Ok(())
        }
        None => Err(with_stderr(format!("workload {} printed no JSON result", req.workload), &stderr)),
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
