//! `cvbench run`: one workload on one backend, once (one record) or `--runs N`
//! times with `--warmup` and a `--baseline`, summarised hyperfine-style.

use anyhow::Context;
use clap::{Args, ValueEnum};
use std::time::Duration;

use super::args::{parse_duration, workload_parser, Format};
use super::exit::{self, CannotRun, Usage};
use super::summary::{self, Timing};
use cvbench::backend::{Backend, BackendId, BackendOptions, NetMode};
use cvbench::doctor::backends::{self as verdicts, Host};
use cvbench::record::RunRecord;
use cvbench::runner::{self, RunRequest};
use cvbench::workload::Workload;
use cvbench_microvm::snapshot::memory::Load;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Seccomp {
    Default,
    Unconfined,
}

/// How restored guest memory is brought in (`cvbench_microvm::snapshot::memory::Load`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LoadArg {
    Lazy,
    Eager,
}

impl From<LoadArg> for Load {
    fn from(l: LoadArg) -> Load {
        match l {
            LoadArg::Lazy => Load::Lazy,
            LoadArg::Eager => Load::Eager,
        }
    }
}

#[derive(Args, Debug)]
#[command(after_help = exit::HELP)]
pub struct RunArgs {
    /// Where the workload runs.
    #[arg(long, short, value_enum)]
    pub backend: BackendId,
    /// Workload to run.
    #[arg(long, short, value_parser = workload_parser())]
    pub workload: Workload,
    /// Output: a readable summary, or every record as one JSON line.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Same as `--format json`.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Kill a run after this long (500ms, 90s, 2m; a bare number is seconds).
    #[arg(long, value_parser = parse_duration, default_value = "2m", alias = "timeout-s")]
    pub timeout: Duration,
    /// For `idle`: keep it up this long after READY (footprint is sampled then).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub hold: Duration,
    /// `--hold` in milliseconds (older spelling).
    #[arg(long, hide = true, conflicts_with = "hold")]
    pub hold_ms: Option<u64>,
    /// Measured runs; more than one prints mean ± σ and min … max.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub runs: u32,
    /// Unmeasured runs first (warm caches, images, daemons).
    #[arg(long, default_value_t = 0)]
    pub warmup: u32,
    /// Also run this backend, interleaved, and print the ratio against it.
    #[arg(long, value_enum)]
    pub baseline: Option<BackendId>,
    /// Containers: keep all capabilities and drop seccomp and masked paths.
    #[arg(long)]
    pub privileged: bool,
    /// Containers: seccomp profile.
    #[arg(long, value_enum, default_value = "default")]
    pub seccomp: Seccomp,
    /// Containers: network mode.
    #[arg(long, value_enum)]
    pub net: Option<NetMode>,
    /// Containers: memory limit, in MiB.
    #[arg(long)]
    pub memory_mib: Option<u64>,
    /// Containers: CPU quota, percent of one CPU.
    #[arg(long)]
    pub cpu_pct: Option<u32>,
    /// Containers: maximum number of tasks.
    #[arg(long)]
    pub pids_max: Option<u64>,
    /// Containers: comma-separated namespaces (pid,mount,uts,ipc,net,cgroup,user).
    #[arg(long, value_delimiter = ',')]
    pub namespaces: Option<Vec<String>>,
    /// Containers: image name in the local store.
    #[arg(long)]
    pub image: Option<String>,
    /// VMs: guest memory in MiB.
    #[arg(long)]
    pub guest_mem_mib: Option<u32>,
    /// microvm-bare, microvm: boot the workload's waiting form once, save it where it waits for its go
    /// line, then time each run as restore → go → exit (noop, cpu, mem-touch). gvisor,
    /// gvisor-ptrace, runc, cvbench-runtime: the same with the runtime's checkpoint/restore.
    #[arg(long)]
    pub from_snapshot: bool,
    /// With --from-snapshot: map the memory file lazily (MAP_PRIVATE) or read it in first.
    #[arg(long, value_enum, default_value = "lazy", requires = "from_snapshot")]
    pub load: LoadArg,
    /// Arguments for the workload itself (after `--`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

impl TryFrom<&RunArgs> for RunRequest {
    type Error = anyhow::Error;

    fn try_from(a: &RunArgs) -> anyhow::Result<RunRequest> {
        if a.timeout.is_zero() {
            return Err(Usage("--timeout must be more than 0".into()).into());
        }
        let mut r = RunRequest::new(a.workload, a.args.clone());
        r.timeout = a.timeout;
        r.hold = a.hold_ms.map(Duration::from_millis).unwrap_or(a.hold);
        r.sample_footprint = true;
        r.options = BackendOptions {
            privileged: a.privileged,
            seccomp_unconfined: matches!(a.seccomp, Seccomp::Unconfined),
            net: a.net.unwrap_or_default(),
            namespaces: a.namespaces.clone(),
            memory_limit: a.memory_mib.map(|m| m << 20),
            cpu_quota_pct: a.cpu_pct,
            pids_limit: a.pids_max,
            image: a.image.clone(),
            guest_mem_mib: a.guest_mem_mib,
            vcpus: None,
            ..Default::default()
        };
        Ok(r)
    }
}

/// The backend, after the host checks: a blocker is exit 3 with its fix,
/// except one the backend still starts despite (a Linux guest under
/// kvm_pvm), which is a warning: that run shows how far the guest gets.
fn resolve(b: BackendId, host: &Host) -> anyhow::Result<Box<dyn Backend>> {
    let name = b.name();
    let backend = b.backend();
    let cannot = |why: String, fix: Option<String>| CannotRun { what: format!("backend {name}"), why, fix };
    match verdicts::verdict(b, host) {
        Err(blocker) if !blocker.starts_anyway => return Err(cannot(blocker.reason, blocker.fix).into()),
        Err(blocker) => eprintln!("cvbench: warning: {name}: {}", blocker.reason),
        Ok(()) => {}
    }
    backend.check().map_err(|why| cannot(why, None))?;
    Ok(backend)
}

pub fn execute(a: RunArgs) -> anyhow::Result<i32> {
    let format = a.format.resolve(a.json);
    let host = Host::probe();
    let target = resolve(a.backend, &host)?;
    if a.from_snapshot && cvbench::backend::restore::Guest::of(a.backend).is_none() {
        return from_checkpoint(&a, target.as_ref(), format);
    }
    if a.from_snapshot {
        return from_snapshot(&a, format);
    }
    let baseline = a.baseline.map(|b| resolve(b, &host)).transpose()?;
    let mut req = RunRequest::try_from(&a)?;
    req.env_id = cvbench::env::cached_env_id();

    let mut backends: Vec<&dyn Backend> = vec![target.as_ref()];
    backends.extend(baseline.as_deref());
    for _ in 0..a.warmup {
        for b in &backends {
            let rec = runner::run(*b, &req);
            if let Some(e) = &rec.error {
                eprintln!("cvbench: warmup run on {} failed: {e}", b.name());
            }
        }
    }
    // Interleaved (target, baseline, target, ...) so drift hits both alike.
    let mut recs: Vec<Vec<RunRecord>> = vec![Vec::new(); backends.len()];
    for i in 0..a.runs {
        req.iteration = i;
        for (b, out) in backends.iter().zip(recs.iter_mut()) {
            let rec = runner::run(*b, &req);
            if format == Format::Json {
                println!("{}", serde_json::to_string(&rec).context("serialising the record")?);
            }
            out.push(rec);
        }
    }
    let failed = recs.iter().flatten().any(|r| r.error.is_some());
    if a.runs == 1 && baseline.is_none() {
        if format == Format::Table {
            print_summary(&recs[0][0]);
        }
    } else {
        let text = hyperfine_summary(&a, &recs);
        match format {
            Format::Table => print!("{text}"),
            Format::Json => eprint!("{text}"),
        }
    }
    if let Some(hint) = recs.iter().flatten().find_map(|r| r.error.as_deref()).and_then(exit::hint_for) {
        eprintln!("hint: {hint}");
    }
    Ok(if failed { exit::RUN_FAILED } else { exit::OK })
}

/// `--from-snapshot`: one snapshot, then `--warmup` + `--runs` restores of it.
fn from_snapshot(a: &RunArgs, format: Format) -> anyhow::Result<i32> {
    use cvbench::backend::restore;
    let guest = match restore::Guest::of(a.backend) {
        Some(g) if a.baseline.is_none() => g,
        _ => {
            return Err(Usage(
                "--from-snapshot runs on --backend microvm-bare or microvm only, without --baseline".into(),
            )
            .into())
        }
    };
    if let Some(why) = cvbench::bench::restore::not_applicable(a.backend, cvbench::bench::restore::StartKind::Lazy) {
        return Err(Usage(why).into());
    }
    restore::wait_go_args(a.workload, &a.args).map_err(|e| Usage(e.to_string()))?;
    eprintln!("cvbench: taking the snapshot ({} waiting for its go line) ...", a.workload);
    let snap = restore::take_snapshot(guest, a.workload, &a.args, a.timeout)?;
    eprintln!(
        "cvbench: snapshot taken in {:.1} ms: memory {} MiB ({} KiB on disk), state {} bytes",
        snap.take_ns as f64 / 1e6,
        snap.info.memory_bytes >> 20,
        snap.info.memory_disk_bytes >> 10,
        snap.info.state_bytes
    );
    let mut req = RunRequest::try_from(a)?;
    req.env_id = cvbench::env::cached_env_id();
    req.scenario = "from-snapshot".into();
    restores(a, format, &mut req, |req| {
        restore::launch_restored(guest, &snap.path(), a.load.into(), a.timeout)
            .map(|vm| vm.go(cvbench::runner::record_of(guest.backend(), req), Some(&snap)))
            .map_err(|e| cvbench::runner::chain(&e))
    })
}

/// `--from-snapshot` on a container backend: one checkpoint of the waiting workload, then
/// `--warmup` + `--runs` restores of it.
fn from_checkpoint(a: &RunArgs, target: &dyn Backend, format: Format) -> anyhow::Result<i32> {
    use cvbench::backend::peers::checkpoint;
    if a.baseline.is_some() || a.load != LoadArg::Lazy {
        return Err(Usage("--from-snapshot on a container backend takes neither --baseline nor --load".into()).into());
    }
    checkpoint::kind_for(a.backend).map_err(|e| Usage(e.to_string()))?;
    cvbench::backend::restore::wait_go_args(a.workload, &a.args).map_err(|e| Usage(e.to_string()))?;
    eprintln!("cvbench: checkpointing {} ({} waiting for its go line) ...", a.backend, a.workload);
    let ckpt = checkpoint::take(a.backend, a.workload, &a.args, a.timeout)?;
    eprintln!(
        "cvbench: checkpoint taken in {:.1} ms (the checkpoint call {:.1} ms): image {} KiB on disk in {} files, at {}",
        ckpt.take_ns as f64 / 1e6,
        ckpt.checkpoint_ns as f64 / 1e6,
        ckpt.disk_bytes() >> 10,
        ckpt.manifest.files.len(),
        ckpt.image().display()
    );
    let mut req = RunRequest::try_from(a)?;
    req.env_id = cvbench::env::cached_env_id();
    req.scenario = "from-snapshot".into();
    restores(a, format, &mut req, |req| {
        checkpoint::launch_restored(&ckpt, a.timeout)
            .map(|w| w.go(runner::record_for(target, req), a.timeout, Some(&ckpt)))
            .map_err(|e| runner::chain(&e))
    })
}

/// `--warmup` + `--runs` restores, each by `restore_one` (a record, or why the restore itself
/// failed, which ends the series), printed like `run`'s own series.
fn restores(
    a: &RunArgs,
    format: Format,
    req: &mut RunRequest,
    mut restore_one: impl FnMut(&RunRequest) -> Result<RunRecord, String>,
) -> anyhow::Result<i32> {
    let mut recs = Vec::new();
    for i in 0..a.warmup + a.runs {
        req.iteration = i.saturating_sub(a.warmup);
        let rec = match restore_one(req) {
            Ok(rec) => rec,
            Err(e) => {
                eprintln!("cvbench: restore failed: {e}");
                return Ok(exit::RUN_FAILED);
            }
        };
        if i < a.warmup {
            continue;
        }
        if format == Format::Json {
            println!("{}", serde_json::to_string(&rec).context("serialising the record")?);
        }
        recs.push(rec);
    }
    let failed = recs.iter().any(|r| r.error.is_some());
    if a.runs == 1 {
        if format == Format::Table {
            print_summary(&recs[0]);
        }
    } else {
        let text = hyperfine_summary(a, &[recs]);
        match format {
            Format::Table => print!("{text}"),
            Format::Json => eprint!("{text}"),
        }
    }
    Ok(if failed { exit::RUN_FAILED } else { exit::OK })
}

/// Timings of every backend, then the ratio against the baseline (or, with
/// none, nothing more: one backend has nothing to compare with).
fn hyperfine_summary(a: &RunArgs, recs: &[Vec<RunRecord>]) -> String {
    let mut out = String::new();
    let mut timings = Vec::new();
    for (i, rs) in recs.iter().enumerate() {
        let label = format!("{} · {}", rs[0].backend, rs[0].workload);
        // Only runs that succeeded are timed; the others are counted as failed.
        let ok: Vec<&RunRecord> =
            rs.iter().filter(|r| r.error.is_none() && r.host.launch_to_exit_ns.is_some()).collect();
        let secs = |ns: Option<u64>| ns.map(|n| n as f64 / 1e9);
        let to_exit: Vec<f64> = ok.iter().filter_map(|r| secs(r.host.launch_to_exit_ns)).collect();
        let ready: Vec<f64> = ok.iter().filter_map(|r| secs(r.host.launch_to_ready_ns)).collect();
        let failed = rs.len() - ok.len();
        let what = format!("{} runs, {} warmup", a.runs, a.warmup);
        match Timing::new(&label, to_exit, failed) {
            Some(t) => {
                let ready = Timing::new(&label, ready, 0);
                out.push_str(&summary::block(i + 1, &what, &t, ready.as_ref()));
                timings.push(t);
            }
            None => {
                let first = rs.iter().find_map(|r| r.error.clone()).unwrap_or_default();
                out.push_str(&format!("Benchmark {}: {label}\n  every run FAILED: {first}\n", i + 1));
            }
        }
        out.push('\n');
    }
    if let (Some(_), [target, base]) = (a.baseline, timings.as_slice()) {
        out.push_str(&summary::comparison(base, &[target]));
    }
    out
}

fn ms(ns: Option<u64>) -> String {
    ns.map(|n| format!("{:.3} ms", n as f64 / 1e6)).unwrap_or_else(|| "-".into())
}

fn print_summary(r: &RunRecord) {
    println!("backend   {}", r.backend);
    println!("workload  {} {}", r.workload, r.args.join(" "));
    println!("ready     {}", ms(r.host.launch_to_ready_ns));
    println!("exit      {}", ms(r.host.launch_to_exit_ns));
    for (name, ns) in &r.host.phases {
        println!("  phase {name:<20} {:.3} ms", *ns as f64 / 1e6);
    }
    if let Some(k) = r.footprint.peak_rss_kib {
        println!("peak RSS  {k} KiB");
    }
    if let (Some(rss), Some(pss)) = (r.footprint.rss_kib, r.footprint.pss_kib) {
        println!("RSS/PSS   {rss} / {pss} KiB (sampled at READY)");
    }
    for (k, v) in &r.metrics {
        println!("  {k:<24} {v}");
    }
    for (k, v) in &r.extra {
        println!("  [{k}] {v}");
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    if let Some(e) = &r.error {
        println!("error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn run_args_convert_into_a_request() {
        let t = T::try_parse_from([
            "x",
            "--backend",
            "container",
            "--workload",
            "mem-bw",
            "--memory-mib",
            "64",
            "--",
            "--array-mib",
            "4",
        ])
        .unwrap();
        let r = RunRequest::try_from(&t.run).unwrap();
        assert_eq!(r.workload, Workload::MemBw);
        assert_eq!(r.args, vec!["--array-mib", "4"]);
        assert_eq!(r.options.memory_limit, Some(64 << 20));
    }

    #[test]
    fn net_defaults_to_none_and_takes_the_three_modes() {
        let t = T::try_parse_from(["x", "-b", "container", "-w", "noop"]).unwrap();
        assert_eq!(RunRequest::try_from(&t.run).unwrap().options.net, NetMode::None);
        for (arg, mode) in [("none", NetMode::None), ("loopback", NetMode::Loopback), ("veth", NetMode::Veth)] {
            let t = T::try_parse_from(["x", "-b", "container", "-w", "noop", "--net", arg]).unwrap();
            assert_eq!(RunRequest::try_from(&t.run).unwrap().options.net, mode);
        }
        assert!(T::try_parse_from(["x", "-b", "container", "-w", "noop", "--net", "host"]).is_err());
    }

    #[test]
    fn unknown_workload_is_rejected() {
        assert!(T::try_parse_from(["x", "--backend", "native", "--workload", "fork-bomb"]).is_err());
    }

    #[test]
    fn zero_timeout_is_a_usage_error() {
        let t = T::try_parse_from(["x", "-b", "native", "-w", "noop", "--timeout-s", "0"]).unwrap();
        let e = RunRequest::try_from(&t.run).unwrap_err();
        assert_eq!(exit::code_for(&e), exit::USAGE);
    }

    #[test]
    fn unknown_backend_is_rejected_by_the_parser() {
        let e = T::try_parse_from(["x", "--backend", "teleport", "--workload", "noop"]).err().unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        assert!(e.to_string().contains("microvm-bare"), "{e}");
    }

    #[test]
    fn every_backend_and_workload_name_parses() {
        for b in cvbench::backend::ALL {
            for w in Workload::names() {
                let t = T::try_parse_from(["x", "-b", b, "-w", w]).unwrap();
                assert_eq!((t.run.backend.name(), t.run.workload.name()), (*b, w));
            }
        }
    }

    #[test]
    fn timeout_takes_human_durations_and_old_seconds() {
        let t = T::try_parse_from(["x", "-b", "native", "-w", "noop", "--timeout", "500ms"]).unwrap();
        assert_eq!(RunRequest::try_from(&t.run).unwrap().timeout, Duration::from_millis(500));
        let t = T::try_parse_from(["x", "-b", "native", "-w", "noop", "--timeout-s", "30"]).unwrap();
        assert_eq!(t.run.timeout, Duration::from_secs(30));
    }

    #[test]
    fn hold_takes_a_duration_or_the_old_milliseconds() {
        let t = T::try_parse_from(["x", "-b", "native", "-w", "idle", "--hold", "2s"]).unwrap();
        assert_eq!(RunRequest::try_from(&t.run).unwrap().hold, Duration::from_secs(2));
        let t = T::try_parse_from(["x", "-b", "native", "-w", "idle", "--hold-ms", "250"]).unwrap();
        assert_eq!(RunRequest::try_from(&t.run).unwrap().hold, Duration::from_millis(250));
        assert!(T::try_parse_from(["x", "-b", "native", "-w", "idle", "--hold", "1s", "--hold-ms", "5"]).is_err());
    }

    #[test]
    fn runs_warmup_and_baseline_parse() {
        let t = T::try_parse_from([
            "x",
            "-b",
            "container",
            "-w",
            "noop",
            "--runs",
            "10",
            "--warmup",
            "2",
            "--baseline",
            "native",
        ])
        .unwrap();
        assert_eq!((t.run.runs, t.run.warmup, t.run.baseline), (10, 2, Some(BackendId::Native)));
    }

    #[test]
    fn load_needs_from_snapshot_and_takes_lazy_or_eager() {
        let t =
            T::try_parse_from(["x", "-b", "microvm-bare", "-w", "noop", "--from-snapshot", "--load", "eager"]).unwrap();
        assert!(t.run.from_snapshot);
        assert_eq!(Load::from(t.run.load), Load::Eager);
        assert!(T::try_parse_from(["x", "-b", "microvm-bare", "-w", "noop", "--load", "eager"]).is_err());
        assert!(T::try_parse_from(["x", "-b", "microvm-bare", "-w", "noop", "--from-snapshot", "--load", "x"]).is_err());
    }

    #[test]
    fn zero_runs_is_rejected() {
        assert!(T::try_parse_from(["x", "-b", "native", "-w", "noop", "--runs", "0"]).is_err());
    }

    #[test]
    fn format_json_and_the_json_alias_agree() {
        let t = T::try_parse_from(["x", "-b", "native", "-w", "noop", "--format", "json"]).unwrap();
        assert_eq!(t.run.format.resolve(t.run.json), Format::Json);
        let t = T::try_parse_from(["x", "-b", "native", "-w", "noop", "--json"]).unwrap();
        assert_eq!(t.run.format.resolve(t.run.json), Format::Json);
        assert!(T::try_parse_from(["x", "-b", "native", "-w", "noop", "--format", "yaml"]).is_err());
    }
}
