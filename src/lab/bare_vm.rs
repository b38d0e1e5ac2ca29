//! Lab 4 (a VM from scratch): the `syscall`, `noop` and `cpu` workloads
//! natively, in a container and in the bare micro-VM, interleaved; the bare
//! VM's exit and system-call counters; the price of one forwarded call.

use crate::workload::Workload;
use std::collections::BTreeMap;
use std::time::Duration;

use super::{backend_ready, ms, progress, run_once, yes, LabOptions, LabReport, Table};
use crate::backend::microvm_bare::BareCounter;
use crate::backend::{Backend, BackendId, BackendOptions};
use crate::figures::fixed;
use crate::record::RunRecord;
use crate::stats;

const BACKENDS: [BackendId; 3] = [BackendId::Native, BackendId::Container, BackendId::MicrovmBare];

type Recs = BTreeMap<(BackendId, Workload), Vec<RunRecord>>;

fn lookup(recs: &Recs, backend: BackendId, workload: Workload) -> &[RunRecord] {
    recs.get(&(backend, workload)).map(Vec::as_slice).unwrap_or(&[])
}

fn best_of(recs: &[RunRecord], metric: &str) -> Option<f64> {
    recs.iter().filter_map(|r| r.metrics.get(metric).copied()).filter(|v| v.is_finite()).reduce(f64::max)
}

fn median_of(recs: &[RunRecord], f: impl Fn(&RunRecord) -> Option<f64>) -> Option<f64> {
    stats::median(&recs.iter().filter_map(f).collect::<Vec<_>>())
}

pub fn run(opts: &LabOptions, r: &mut LabReport) {
    let mut ready: Vec<(BackendId, Box<dyn Backend>)> = Vec::new();
    for name in BACKENDS {
        match backend_ready(name) {
            Ok(b) => ready.push((name, b)),
            Err(reason) => r.unavailable(reason),
        }
    }
    if !ready.iter().any(|(n, _)| *n == BackendId::MicrovmBare) {
        return;
    }
    if let Some(k) = kvm_line() {
        r.note(k);
    }
    let reps = opts.reps();
    let iters = if opts.quick { "20000" } else { "200000" };
    let cpu_args: &[&str] =
        if opts.quick { &["--sha-mib", "32", "--sieve-n", "1000000", "--matmul-n", "80"] } else { &[] };
    progress(&format!(
        "syscall (--iters {iters}), noop and cpu on {} backend(s), {reps} runs each, interleaved",
        ready.len()
    ));
    let mut recs: Recs = BTreeMap::new();
    let mut failures = Vec::new();
    let t = Duration::from_secs(120);
    for _ in 0..reps {
        for (name, b) in &ready {
            for (w, args) in
                [(Workload::Syscall, &["--iters", iters][..]), (Workload::Noop, &[][..]), (Workload::Cpu, cpu_args)]
            {
                let rec = run_once(b.as_ref(), w, args, &BackendOptions::default(), t);
                if let Some(e) = &rec.error {
                    failures.push(format!("{w} on {name}: {e}"));
                } else {
                    recs.entry((*name, w)).or_default().push(rec);
                }
            }
        }
    }
    let get = |n: BackendId, w: Workload| lookup(&recs, n, w);
    let native_ns = median_of(get(BackendId::Native, Workload::Syscall), |r| r.metrics.get("ns_per_call").copied());
    let mut st = Table::new(
        &format!("One getppid() round trip (syscall workload, --iters {iters}; medians of {reps})"),
        &["backend", "ns per call", "× native", "VM exits", "syscalls serviced", "VMM service ns/call"],
    );
    for (name, _) in &ready {
        let v = get(*name, Workload::Syscall);
        let ns = median_of(v, |r| r.metrics.get("ns_per_call").copied());
        let exits = median_of(v, |r| BareCounter::VmExits.of(r));
        let calls = median_of(v, |r| BareCounter::Syscalls.of(r));
        let service = median_of(v, |r| {
            let s = BareCounter::SyscallServiceNs.of(r)?;
            let c = BareCounter::Syscalls.of(r)?;
            (c > 0.0).then(|| s / c)
        });
        st.row([
            name.to_string(),
            fixed(ns, 1),
            fixed(ns.zip(native_ns).map(|(a, b)| a / b), 1),
            fixed(exits, 0),
            fixed(calls, 0),
            fixed(service, 0),
        ]);
    }
    r.tables.push(st);

    let mut nt = Table::new(
        &format!("noop launch→exit and phases (medians of {reps}, ms)"),
        &["backend", "launch→exit", "phases"],
    );
    for (name, _) in &ready {
        let v = get(*name, Workload::Noop);
        let exit = median_of(v, |r| r.host.launch_to_exit_ns.map(|n| n as f64));
        let mut order: Vec<String> = Vec::new();
        let mut by: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for rec in v {
            for (p, ns) in &rec.host.phases {
                if !order.contains(p) {
                    order.push(p.clone());
                }
                by.entry(p.clone()).or_default().push(*ns as f64);
            }
        }
        let ph: Vec<String> =
            order.iter().filter_map(|p| Some(format!("{p} {:.3}", stats::median(by.get(p)?)? / 1e6))).collect();
        nt.row([name.to_string(), ms(exit.map(|e| e as u64)), ph.join(", ")]);
    }
    r.tables.push(nt);

    let native_cpu = median_of(get(BackendId::Native, Workload::Cpu), |r| r.metrics.get("sha256_mib_per_s").copied());
    let mut ct = Table::new(
        &format!("cpu workload: no system calls in the hot loop (medians of {reps})"),
        &["backend", "SHA-256 MiB/s", "× native", "best of runs", "best × native", "sieve Mnum/s", "matmul GFLOP/s"],
    );
    let native_best = best_of(get(BackendId::Native, Workload::Cpu), "sha256_mib_per_s");
    for (name, _) in &ready {
        let v = get(*name, Workload::Cpu);
        let sha = median_of(v, |r| r.metrics.get("sha256_mib_per_s").copied());
        let best = best_of(v, "sha256_mib_per_s");
        ct.row([
            name.to_string(),
            fixed(sha, 1),
            fixed(sha.zip(native_cpu).map(|(a, b)| a / b), 2),
            fixed(best, 1),
            fixed(best.zip(native_best).map(|(a, b)| a / b), 2),
            fixed(median_of(v, |r| r.metrics.get("sieve_mnum_per_s").copied()), 1),
            fixed(median_of(v, |r| r.metrics.get("matmul_gflops").copied()), 2),
        ]);
    }
    r.tables.push(ct);

    r.check(
        "every run succeeded",
        failures.is_empty(),
        if failures.is_empty() { "yes".to_string() } else { failures.join(" | ") },
    );
    let bare = get(BackendId::MicrovmBare, Workload::Syscall);
    let want: f64 = iters.parse().unwrap_or(0.0);
    let calls = median_of(bare, |r| BareCounter::Syscalls.of(r));
    let exits = median_of(bare, |r| BareCounter::VmExits.of(r));
    let one_each = calls.is_some_and(|c| c >= want) && exits.zip(calls).is_some_and(|(e, c)| e >= c);
    r.check(
        "in the bare VM every system call is a VM exit",
        one_each,
        format!(
            "{} ({} exits for {} serviced calls; the workload made {iters} getppid calls plus set-up)",
            yes(one_each),
            fixed(exits, 0),
            fixed(calls, 0)
        ),
    );
    let bare_ns = median_of(bare, |r| r.metrics.get("ns_per_call").copied());
    let slower = bare_ns.zip(native_ns).is_some_and(|(b, n)| b > 3.0 * n);
    r.check(
        "a forwarded system call costs far more than a native one (> 3×)",
        slower,
        format!("{} ({} vs {} ns)", yes(slower), fixed(bare_ns, 0), fixed(native_ns, 0)),
    );
    // Best of the runs: the one least disturbed by other work on the host.
    let bare_best = best_of(get(BackendId::MicrovmBare, Workload::Cpu), "sha256_mib_per_s");
    let close = bare_best.zip(native_best).is_some_and(|(b, n)| (b / n - 1.0).abs() < 0.25);
    r.check(
        "CPU-bound code in the bare VM runs near native speed (best runs within 25 %)",
        close,
        format!("{} ({} vs {} MiB/s)", yes(close), fixed(bare_best, 1), fixed(native_best, 1)),
    );
    r.note("on a shared machine single runs vary by tens of per cent: compare medians, and for throughput the best run (least disturbed)");
}

fn kvm_line() -> Option<String> {
    let k = crate::env::kvm_kind();
    Some(format!("/dev/kvm here: {}", k.describe()))
}
