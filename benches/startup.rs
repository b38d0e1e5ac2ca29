//! Criterion benches over the same `RunRequest`/`Backend` code the matrix
//! uses: one launch of `noop` is one iteration (launch→READY and launch→exit,
//! timed by the harness), and `syscall`, where the workload times itself
//! (ns per getppid); `jail/microvm-bare`; and the floors, `floor/namespaces` and `floor/kvm`,
//! each start beside the least the kernel charges for it, ending with medians and ratios (see
//! benches/FLOORS.md); and `linux_vm/boot`, our Linux micro-VM beside QEMU's microvm (boot to
//! READY, VMM memory overhead), where both run a Linux guest (the test host). Backends that
//! cannot run here print `SKIPPED: <reason>`.
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

/// Per-iteration times of the floor groups' rows (ns), kept to print each group's ratios to
/// its floor from the same run (criterion's own report has no cross-row ratios).
static FLOOR_SAMPLES: Mutex<Vec<(String, f64)>> = Mutex::new(Vec::new());

/// `iters` runs of `run_once` (each returns its own duration), summed for criterion and kept per
/// iteration under `row`.
fn kept_iters(row: &str, iters: u64, mut run_once: impl FnMut() -> Duration) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let d = run_once();
        total += d;
        if let Ok(mut v) = FLOOR_SAMPLES.lock() {
            v.push((row.to_string(), d.as_nanos() as f64));
        }
    }
    total
}

/// One exec'd process to exit on the bench's clock; a failed run counts as the timeout:
/// visible, never flattering.
fn exec_once(mut cmd: std::process::Command, timeout: Duration) -> Duration {
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
    let t = Instant::now();
    match cmd.status() {
        Ok(s) if s.success() => t.elapsed(),
        _ => timeout,
    }
}

/// The harness's launch→exit of one `req` on `b`, kept like the other rows.
fn launch_once(b: &dyn Backend, req: &RunRequest) -> Duration {
    let rec = runner::run(b, req);
    keep(&rec);
    rec.host.launch_to_exit_ns.map(Duration::from_nanos).unwrap_or(req.timeout)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// Print each kept row's median and its ratio to `floor`'s median (rows measured in this run
/// only), then forget the samples.
fn print_ratios(group: &str, floor: &str) {
    let samples = FLOOR_SAMPLES.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
    let mut rows: Vec<&str> = Vec::new();
    for (r, _) in &samples {
        if !rows.contains(&r.as_str()) {
            rows.push(r);
        }
    }
    let med = |row: &str| median(samples.iter().filter(|(r, _)| r == row).map(|(_, ns)| *ns).collect());
    let Some(base) = med(floor) else { return };
    eprintln!("cvbench bench: {group}: medians of every timed iteration, ratio to {floor}");
    for row in rows {
        let n = samples.iter().filter(|(r, _)| r == row).count();
        if let Some(m) = med(row) {
            eprintln!("  {row:<28} {:>9.3} ms  {:>6.2}x  (n={n})", m / 1e6, m / base);
        }
    }
}

/// The floor under an exec'd runtime: `unshare` of the same six namespaces the generated bundle
/// asks for (mount, UTS, IPC, network, PID, cgroup) + fork + exec of the workload's noop, beside
/// the `cvbench-runtime` row (the runtime exec'd on a bundle written per launch, as in the
/// matrix) and crun's (the same, when crun is among the backends). All are launch→exit on the
/// harness's clock; the ratio is how close the runtime's own work (bundle, rootfs, cgroup,
/// seccomp-free spec) comes to what the kernel charges for the namespaces alone.
fn floor(c: &mut Criterion, backends: &[Box<dyn Backend>]) {
    let Some(b) = backends.iter().find(|b| b.id() == BackendId::CvbenchRuntime) else { return };
    let req = request("noop", &[], "criterion-floor");
    let Ok(workload) = cvbench::paths::workload_binary() else { return };
    if !works(b.as_ref(), &req) {
        return;
    }
    let crun = backends.iter().find(|b| b.id() == BackendId::Crun).filter(|c| works(c.as_ref(), &req));
    let unshare = || {
        let mut cmd = std::process::Command::new("unshare");
        cmd.args(["--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup", "--fork"]).arg(&workload).arg("noop");
        cmd
    };
    if exec_once(unshare(), Duration::ZERO).is_zero() {
        eprintln!("SKIPPED: floor/namespaces: `unshare` of six namespaces failed here");
        return;
    }
    let mut g = c.benchmark_group("floor/namespaces");
    g.sample_size(sample_size(b.id()));
    g.warm_up_time(Duration::from_millis(500));
    g.bench_function("unshare", |bench| {
        bench.iter_custom(|iters| kept_iters("unshare", iters, || exec_once(unshare(), req.timeout)))
    });
    let mut launched: Vec<&dyn Backend> = vec![b.as_ref()];
    launched.extend(crun.map(|c| c.as_ref()));
    for b in launched {
        g.bench_function(b.name(), |bench| {
            bench.iter_custom(|iters| kept_iters(b.name(), iters, || launch_once(b, &req)))
        });
    }
    g.finish();
    print_ratios("floor/namespaces", "unshare");
}

/// The floor under the bare VM: `cvbench-kvm-floor` (open /dev/kvm, KVM_CREATE_VM, one 2 MiB
/// memory region, one vCPU in 64-bit mode, two guest instructions to an I/O exit, exit) beside
/// `cvbench-vmm bare` running the workload's noop from the config the backend writes, jailed as
/// the backend runs it and with `--no-jail` (the difference is the jail's own cost), and the
/// `microvm-bare` backend's launch→exit (the same VMM with the harness's config file, stats
/// file and pipes around it). Every row is one whole process, exec'd and waited for.
fn floor_kvm(c: &mut Criterion, backends: &[Box<dyn Backend>]) {
    let Some(b) = backends.iter().find(|b| b.id() == BackendId::MicrovmBare) else { return };
    let sibling = |name: &str, env: &str| cvbench::paths::sibling_binary(name, env).map_err(|e| e.to_string());
    let (floor_bin, vmm, workload) = match (
        sibling("cvbench-kvm-floor", "CVBENCH_KVM_FLOOR"),
        sibling("cvbench-vmm", "CVBENCH_VMM"),
        cvbench::paths::workload_binary().map_err(|e| e.to_string()),
    ) {
        (Ok(f), Ok(v), Ok(w)) => (f, v, w),
        (f, v, w) => {
            let why: Vec<String> = [f, v, w].into_iter().filter_map(Result::err).collect();
            eprintln!("SKIPPED: floor/kvm: {}", why.join("; "));
            return;
        }
    };
    let req = request("noop", &[], "criterion-floor-kvm");
    if !works(b.as_ref(), &req) {
        return;
    }
    let Ok(dir) = tempfile::tempdir() else {
        eprintln!("SKIPPED: floor/kvm: cannot create a temporary directory");
        return;
    };
    let config_for = |jail: bool| {
        let config = cvbench_microvm::bare::BareConfig {
            elf: workload.clone(),
            argv: vec![workload.display().to_string(), "noop".into()],
            env: Vec::new(),
            mem_mib: cvbench::backend::microvm_bare::DEFAULT_MEM_MIB,
            timeout: Some(req.timeout),
            measure_memory: true,
            run_dir: None,
            max_file_mib: cvbench_microvm::bare::default_max_file_mib(),
            net: None,
            jail,
            selftest_forbidden_syscall: false,
            snapshot_to: None,
        };
        let path = dir.path().join(if jail { "jailed.json" } else { "no-jail.json" });
        std::fs::write(&path, serde_json::to_vec(&config).expect("a BareConfig serialises")).map(|()| path)
    };
    let (Ok(jailed), Ok(open)) = (config_for(true), config_for(false)) else {
        eprintln!("SKIPPED: floor/kvm: cannot write the VMM configs in {}", dir.path().display());
        return;
    };
    let stats = dir.path().join("stats.json");
    let vmm_cmd = |config: &PathBuf| {
        let mut cmd = std::process::Command::new(&vmm);
        cmd.arg("bare").arg("--config").arg(config).arg("--stats-json").arg(&stats);
        cmd
    };
    let floor_cmd = || std::process::Command::new(&floor_bin);
    for (what, cmd) in [("cvbench-kvm-floor", floor_cmd()), ("cvbench-vmm bare", vmm_cmd(&jailed))] {
        if exec_once(cmd, Duration::ZERO).is_zero() {
            eprintln!("SKIPPED: floor/kvm: {what} failed here (run it by hand to see why)");
            return;
        }
    }
    let mut g = c.benchmark_group("floor/kvm");
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(500));
    g.bench_function("kvm_floor", |bench| {
        bench.iter_custom(|iters| kept_iters("kvm_floor", iters, || exec_once(floor_cmd(), req.timeout)))
    });
    for (row, config) in [("vmm_bare_jailed", &jailed), ("vmm_bare_no_jail", &open)] {
        g.bench_function(row, |bench| {
            bench.iter_custom(|iters| kept_iters(row, iters, || exec_once(vmm_cmd(config), req.timeout)))
        });
    }
    g.bench_function(b.name(), |bench| {
        bench.iter_custom(|iters| kept_iters(b.name(), iters, || launch_once(b.as_ref(), &req)))
    });
    g.finish();
    print_ratios("floor/kvm", "kvm_floor");
}

/// Per-launch memory overheads (KiB, at READY) of the `linux_vm/boot` rows, by row.
static OVERHEAD_KIB: Mutex<Vec<(String, f64)>> = Mutex::new(Vec::new());

/// Our Linux micro-VM beside QEMU's `-M microvm` booting the same kernel, initramfs, devices and
/// command line (the `microvm` and `qemu` backends): launch→READY on the harness's clock, and
/// each VMM's memory overhead at READY (its RSS minus the guest RAM the guest touched, from
/// smaps), with both ratios to QEMU's. Runs where both backends can run a Linux guest's user
/// space: on this project's hosts, only in the test host (`scripts/testhost`), whose timings are
/// emulated: the ratios are what it can show, never hardware figures.
fn linux_vm(c: &mut Criterion, backends: &[Box<dyn Backend>]) {
    let ours = backends.iter().find(|b| b.id() == BackendId::Microvm);
    let qemu = backends.iter().find(|b| b.id() == BackendId::Qemu);
    let (Some(ours), Some(qemu)) = (ours, qemu) else {
        eprintln!("SKIPPED: linux_vm/boot: needs both the microvm and qemu backends (a Linux guest's user space)");
        return;
    };
    let mut req = request("noop", &[], "criterion-linux-vm");
    req.sample_footprint = true;
    if !works(ours.as_ref(), &req) || !works(qemu.as_ref(), &req) {
        return;
    }
    let mut g = c.benchmark_group("linux_vm/boot");
    // One boot per sample: a Linux guest in the emulated test host takes seconds.
    g.sample_size(10);
    g.sampling_mode(criterion::SamplingMode::Flat);
    g.warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_millis(1));
    for b in [ours, qemu] {
        g.bench_function(b.name(), |bench| {
            bench.iter_custom(|iters| {
                kept_iters(b.name(), iters, || {
                    let rec = runner::run(b.as_ref(), &req);
                    keep(&rec);
                    if let (Some(kib), Ok(mut v)) = (rec.extra.get("vmm_overhead_kib"), OVERHEAD_KIB.lock()) {
                        v.push((b.name().to_string(), *kib));
                    }
                    rec.host.launch_to_ready_ns.map(Duration::from_nanos).unwrap_or(req.timeout)
                })
            })
        });
    }
    g.finish();
    eprintln!("cvbench bench: linux_vm/boot: launch→READY; {}", cvbench::hostkind::host_cpu().describe());
    print_ratios("linux_vm/boot", qemu.name());
    let overheads = OVERHEAD_KIB.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
    let med = |row: &str| median(overheads.iter().filter(|(r, _)| r == row).map(|(_, k)| *k).collect());
    eprintln!("cvbench bench: linux_vm/boot: VMM memory overhead at READY (RSS − guest RAM touched), medians");
    for b in [ours, qemu] {
        let n = overheads.iter().filter(|(r, _)| r == b.name()).count();
        match med(b.name()) {
            Some(k) => eprintln!("  {:<28} {:>9.2} MiB  (n={n})", b.name(), k / 1024.0),
            None => eprintln!("  {:<28} not measured (no smaps at READY)", b.name()),
        }
    }
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
    floor_kvm(&mut c, &backends);
    linux_vm(&mut c, &backends);
    c.final_summary();
    drop(backends);
    if let Some(dir) = SINK_DIR.get() {
        eprintln!("cvbench bench: every record in {} (report: cvbench report --in {0})", dir.display());
    }
}
