//! Criterion benches over the same `RunRequest`/`Backend` code the matrix
//! uses: one launch of `noop` is one iteration (launch→READY and launch→exit,
//! timed by the harness), and `syscall`, where the workload times itself
//! (ns per getppid). Backends that cannot run here print `SKIPPED: <reason>`.
//! Every record is also written to `results/criterion-<unix time>/` in the
//! harness's own schema (criterion's JSON is not parsed).
//!
//! Select backends with CVBENCH_BACKENDS=native,crun (default: every backend
//! `cvbench doctor` says can run here, decided from host facts in
//! milliseconds; a Linux guest under kvm_pvm is ruled out up front instead of
//! waiting for its timeout). One `SKIPPED: <backend>: <reason>` line per
//! backend left out. A full default run takes a few minutes on 2 cores.

use cvbench::backend::BackendId;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::Criterion;

use cvbench::backend::{self, Backend};
use cvbench::doctor::backends::{self as verdicts, Host};
use cvbench::env::Manifest;
use cvbench::record::RunRecord;
use cvbench::results::RecordSink;
use cvbench::runner::{self, RunRequest};

static SINK: Mutex<Option<RecordSink>> = Mutex::new(None);
static SINK_DIR: OnceLock<PathBuf> = OnceLock::new();

fn keep(rec: &RunRecord) {
    if let Ok(mut g) = SINK.lock() {
        if g.is_none() {
            let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let dir = cvbench::paths::repo_root().join("results").join(format!("criterion-{t}"));
            match RecordSink::create(&dir, &Manifest::collect()) {
                Ok(s) => {
                    *g = Some(s);
                    let _ = SINK_DIR.set(dir);
                }
                Err(e) => eprintln!("cvbench bench: not keeping records: {e}"),
            }
        }
        if let Some(s) = g.as_mut() {
            let _ = s.append(rec);
        }
    }
}

/// Backends to bench, chosen from host facts only (a backend's own `check`
/// may start a daemon; the trial run in [`works`] catches the rest); the
/// ones that cannot run are reported, one line each.
fn backends() -> Vec<Box<dyn Backend>> {
    let t0 = Instant::now();
    let host = Host::probe();
    let names: Vec<String> = match std::env::var("CVBENCH_BACKENDS") {
        Ok(v) => v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect(),
        Err(_) => backend::ALL.iter().map(|s| s.to_string()).collect(),
    };
    let mut out = Vec::new();
    for n in names {
        let id = n.parse::<backend::BackendId>().map_err(|e| format!("{e} (fix: cvbench run --help)"));
        match id.and_then(|id| verdicts::verdict(id, &host).map(|()| id.backend()).map_err(|b| b.to_string())) {
            Ok(b) => out.push(b),
            Err(why) => eprintln!("SKIPPED: {n}: {why}"),
        }
    }
    let chosen: Vec<&str> = out.iter().map(|b| b.name()).collect();
    eprintln!(
        "cvbench bench: backends {} (chosen in {:.1} ms; set CVBENCH_BACKENDS to choose)",
        chosen.join(","),
        t0.elapsed().as_secs_f64() * 1e3
    );
    out
}

/// Slow launchers get the minimum sample count criterion allows.
fn sample_size(id: BackendId) -> usize {
    match id {
        BackendId::Native => 50,
        BackendId::Docker | BackendId::Qemu | BackendId::Microvm => 10,
        _ => 20,
    }
}

fn request(workload: &str, args: &[&str], scenario: &str) -> RunRequest {
    let mut r =
        RunRequest::new(workload.parse().expect("a known workload"), args.iter().map(|s| s.to_string()).collect());
    r.timeout = Duration::from_secs(60);
    r.scenario = scenario.to_string();
    r
}

/// One trial run: `false` (after printing why) when it failed, so a broken
/// backend is reported once instead of failing mid-bench. Under `--list`
/// nothing runs.
fn works(b: &dyn Backend, req: &RunRequest) -> bool {
    if std::env::args().any(|a| a == "--list") {
        return true;
    }
    let rec = runner::run(b, req);
    keep(&rec);
    match &rec.error {
        None => true,
        Some(e) => {
            eprintln!("SKIPPED: {} {}: {e}", b.name(), req.workload);
            false
        }
    }
}

/// Which of a record's host timings an iteration is.
#[derive(Clone, Copy)]
enum Until {
    Ready,
    Exit,
}

/// `iters` launches of `req` on `b`, each kept, summed on the harness's clock (launch→READY
/// or launch→exit). A failed launch counts as the timeout: visible, never flattering.
fn timed_launches(b: &dyn Backend, req: &RunRequest, iters: u64, until: Until) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let rec = runner::run(b, req);
        keep(&rec);
        let ns = match until {
            Until::Ready => rec.host.launch_to_ready_ns,
            Until::Exit => rec.host.launch_to_exit_ns,
        };
        total += ns.map(Duration::from_nanos).unwrap_or(req.timeout);
    }
    total
}

fn startup(c: &mut Criterion, backends: &[Box<dyn Backend>]) {
    for b in backends {
        let req = request("noop", &[], "criterion-startup");
        if !works(b.as_ref(), &req) {
            continue;
        }
        let mut g = c.benchmark_group(format!("startup/{}", b.name()));
        g.sample_size(sample_size(b.id()));
        g.warm_up_time(Duration::from_millis(500));
        for (id, until) in [("launch_to_ready", Until::Ready), ("launch_to_exit", Until::Exit)] {
            g.bench_function(id, |bench| bench.iter_custom(|iters| timed_launches(b.as_ref(), &req, iters, until)));
        }
        g.finish();
    }
}

/// The workload times its own getppid loop; an iteration is one call.
fn syscall(c: &mut Criterion, backends: &[Box<dyn Backend>]) {
    const PER_RUN: u64 = 20_000;
    for b in backends {
        let req = request("syscall", &["--iters", &PER_RUN.to_string()], "criterion-syscall");
        if !works(b.as_ref(), &req) {
            continue;
        }
        let mut g = c.benchmark_group(format!("syscall/{}", b.name()));
        g.sample_size(10);
        g.warm_up_time(Duration::from_millis(500));
        g.bench_function("getppid", |bench| {
            bench.iter_custom(|iters| {
                // Runs of PER_RUN calls until `iters` calls are covered; the
                // measured ns/call is scaled to `iters`.
                let mut ns_per_call = Vec::new();
                let runs = iters.div_ceil(PER_RUN).clamp(1, 20);
                for _ in 0..runs {
                    let rec = runner::run(b.as_ref(), &req);
                    keep(&rec);
                    ns_per_call.extend(rec.metrics.get("ns_per_call").copied());
                }
                let mean = if ns_per_call.is_empty() {
                    f64::from(u32::MAX)
                } else {
                    ns_per_call.iter().sum::<f64>() / ns_per_call.len() as f64
                };
                Duration::from_nanos((mean * iters as f64) as u64)
            })
        });
        g.finish();
    }
}

/// What the VMM's jail costs at startup: the same noop on microvm-bare, jailed (the default)
/// and with `--no-jail`, side by side in one group.
fn jail(c: &mut Criterion, backends: &[Box<dyn Backend>]) {
    let Some(b) = backends.iter().find(|b| b.id() == BackendId::MicrovmBare) else { return };
    let jailed = request("noop", &[], "criterion-jail");
    let mut open = jailed.clone();
    open.options.vmm_no_jail = true;
    if !works(b.as_ref(), &jailed) || !works(b.as_ref(), &open) {
        return;
    }
    let mut g = c.benchmark_group("jail/microvm-bare");
    g.sample_size(sample_size(b.id()));
    g.warm_up_time(Duration::from_millis(500));
    for (id, req) in [("jailed", &jailed), ("no_jail", &open)] {
        g.bench_function(id, |bench| bench.iter_custom(|iters| timed_launches(b.as_ref(), req, iters, Until::Exit)));
    }
    g.finish();
}

/// The floor under an exec'd runtime: `unshare` of the same six namespaces the generated bundle
/// asks for (mount, UTS, IPC, network, PID, cgroup) + fork + exec of the workload's noop, beside
/// the `cvbench-runtime` row (the runtime exec'd on a bundle written per launch, as in the
/// matrix). Both are launch→exit on the harness's clock; the ratio is how close the runtime's
/// own work (bundle, rootfs, cgroup, seccomp-free spec) comes to what the kernel charges for the
/// namespaces alone.
fn floor(c: &mut Criterion, backends: &[Box<dyn Backend>]) {
    let Some(b) = backends.iter().find(|b| b.id() == BackendId::CvbenchRuntime) else { return };
    let req = request("noop", &[], "criterion-floor");
    let Ok(workload) = cvbench::paths::workload_binary() else { return };
    if !works(b.as_ref(), &req) {
        return;
    }
    let unshare = || {
        let mut cmd = std::process::Command::new("unshare");
        cmd.args(["--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup", "--fork"]).arg(&workload).arg("noop");
        cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
        cmd
    };
    match unshare().status() {
        Ok(s) if s.success() => {}
        other => {
            eprintln!("SKIPPED: floor/unshare: {other:?}");
            return;
        }
    }
    let mut g = c.benchmark_group("floor/namespaces");
    g.sample_size(sample_size(b.id()));
    g.warm_up_time(Duration::from_millis(500));
    g.bench_function(BackendId::CvbenchRuntime.name(), |bench| {
        bench.iter_custom(|iters| timed_launches(b.as_ref(), &req, iters, Until::Exit))
    });
    g.bench_function("unshare", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut cmd = unshare();
                let t = Instant::now();
                // A failed run counts as the timeout: visible, never flattering.
                total += match cmd.status() {
                    Ok(s) if s.success() => t.elapsed(),
                    _ => req.timeout,
                };
            }
            total
        })
    });
    g.finish();
}

/// Criterion's `criterion_main!`, spelled out so the backends are chosen and
/// checked once for both groups and dropped (daemons stopped) at the end.
fn main() {
    let backends = backends();
    let mut c = Criterion::default().configure_from_args();
    startup(&mut c, &backends);
    syscall(&mut c, &backends);
    jail(&mut c, &backends);
    floor(&mut c, &backends);
    c.final_summary();
    drop(backends);
    if let Some(dir) = SINK_DIR.get() {
        eprintln!("cvbench bench: every record in {} (report: cvbench report --in {0})", dir.display());
    }
}
