//! Lab 6 (the overhead study): a small `cvbench bench --quick` matrix run
//! through the bench and report modules, its ratios to native set beside the
//! published ones (Felter et al. 2015, Firecracker NSDI'20), and the
//! security surface of each backend read from the host.

use super::{progress, yes, LabOptions, LabReport, Table};
use crate::backend::BackendId;
use crate::bench::{self, Observer, Plan, Profile, Slot};
use crate::figures::fixed;
use crate::record::RunRecord;
use crate::report::aggregate::{cost_factor, Aggregate, HEADLINES};

/// What the literature says for a scenario family.
fn published(family: &str) -> &'static str {
    match family {
        "startup-serial" => "Firecracker: ≈125 ms to guest init (p50 161 ms end to end)",
        "footprint" => "Firecracker: ≈3 MiB VMM overhead (QEMU ≈131 MiB)",
        "cpu" => "Felter'15: Docker ≈ native, KVM ≈ native",
        "mem-bw" => "Felter'15 (STREAM): Docker ≈ native, KVM ≈ native",
        "mem-touch" => "Felter'15 (RandomAccess): both close to native",
        "syscall" => "Felter'15: KVM pays on exits (+80 % TCP RR latency)",
        "net-rr" => "Felter'15: KVM +80 % TCP RR latency",
        "disk" => "Felter'15: KVM ≈ ½ native random IOPS",
        _ => "",
    }
}

#[derive(Default)]
struct Collect {
    records: Vec<RunRecord>,
}

impl Observer for Collect {
    fn unit(&mut self, backend: &str, scenario: &str, iteration: u32) {
        if iteration == 0 {
            progress(&format!("{scenario} on {backend}"));
        }
    }
    fn records(&mut self, recs: &[RunRecord]) {
        self.records.extend_from_slice(recs);
    }
    fn skipped(&mut self, _units: u64) {}
}

pub fn run(opts: &LabOptions, r: &mut LabReport) {
    let mut backends = vec![BackendId::Native.name(), BackendId::Container.name(), BackendId::MicrovmBare.name()];
    let mut families = vec!["surface", "startup-serial", "footprint", "cpu", "mem-bw", "mem-touch", "syscall"];
    if !opts.quick {
        backends.extend([BackendId::Crun.name(), BackendId::Runc.name(), BackendId::Docker.name()]);
        families.extend(["net-rr", "disk"]);
        if crate::env::kvm_kind() == crate::env::KvmKind::Hardware {
            backends.push(BackendId::Microvm.name());
        } else {
            r.unavailable(
                "microvm (Linux guest) left out of the study: on this host's KVM the guest's user space cannot run \
                 the workload (see lab 5)",
            );
        }
    }
    let names: Vec<String> = backends.iter().map(|s| s.to_string()).collect();
    let fams: Vec<String> = families.iter().map(|s| s.to_string()).collect();
    let plan = match Plan::new(Profile::Quick, names.clone(), Some(&fams)) {
        Ok(p) => p,
        Err(e) => {
            r.check("the bench plan is valid", false, e.to_string());
            return;
        }
    };
    let host = crate::doctor::backends::Host::probe();
    let slots: Vec<Slot> = names.iter().map(|n| Slot::resolve(n, &host)).collect();
    for s in &slots {
        if let Slot::Unavailable { name, reason } = s {
            r.unavailable(format!("{name}: {reason}"));
        }
    }
    progress(&format!(
        "the quick matrix: {} on {} ({} units; a few minutes)",
        families.join(", "),
        backends.join(", "),
        plan.total_units()
    ));
    let mut obs = Collect::default();
    bench::run(&plan, &slots, "lab6", &mut obs, super::stop_flag());
    drop(slots);
    let agg = Aggregate::new(&obs.records);

    let shown: Vec<&str> = agg.backends.iter().map(String::as_str).collect();
    let mut headers = vec!["metric".to_string(), BackendId::Native.name().to_string()];
    for b in shown.iter().filter(|b| **b != BackendId::Native.name()) {
        headers.push(format!("{b} (× native)"));
    }
    headers.push("published".to_string());
    let mut t = Table {
        title: "Medians and ratios to native (quick matrix; ratio > 1 means more of the figure)".into(),
        headers,
        rows: Vec::new(),
    };
    for hl in HEADLINES.iter().filter(|h| families.contains(&h.family)) {
        let sc = hl.family;
        if !agg.scenarios.iter().any(|s| s == sc) {
            continue;
        }
        let native = agg.cell(sc, BackendId::Native.name(), hl.metric);
        let mut row = vec![
            format!("{} ({})", hl.label, hl.unit.text()),
            fixed(native.summary.map(|s| hl.unit.scale(s.median)), 2),
        ];
        for b in shown.iter().filter(|b| **b != BackendId::Native.name()) {
            let c = agg.cell(sc, b, hl.metric);
            row.push(match (c.summary, c.ratio) {
                (Some(s), Some(ra)) => format!("{:.2} ({ra:.2}×)", hl.unit.scale(s.median)),
                (Some(s), None) => format!("{:.2}", hl.unit.scale(s.median)),
                (None, _) if c.errors.iter().any(|e| e.contains("does not support")) => "not supported".into(),
                (None, _) if c.failed > 0 => format!(
                    "failed: {}",
                    c.errors.first().map(|e| e.chars().take(40).collect::<String>()).unwrap_or_default()
                ),
                (None, _) => "-".into(),
            });
        }
        row.push(published(sc).to_string());
        t.rows.push(row);
    }
    r.tables.push(t);

    let mut st = Table::new(
        "Security surface, read from the host while an idle instance runs",
        &[
            "backend",
            "process",
            "own namespaces",
            "capabilities",
            "seccomp",
            "syscalls allowed",
            "kernel between",
            "no_new_privs",
        ],
    );
    for b in &shown {
        let Some(rec) = agg.records("surface", b).first() else { continue };
        let note = |key: &str| {
            rec.notes.iter().find_map(|n| n.strip_prefix(&format!("surface.{key}: "))).unwrap_or("-").to_string()
        };
        st.row([
            b.to_string(),
            note("process"),
            note("namespaces"),
            note("capabilities"),
            note("seccomp"),
            note("seccomp_allowed"),
            note("kernel_between"),
            note("no_new_privs"),
        ]);
    }
    r.tables.push(st);
    let (blocked, total) = cvbench_runtime::seccomp::blocked_count();
    r.note(format!(
        "the container's default seccomp profile refuses {blocked} of the {total} x86-64 system calls it knows and allows the other {}; the bare VM's workload reaches the host only through the system-call exit its VMM services (the workload's footprint, README), anything else gets -ENOSYS",
        total - blocked
    ));

    let ratio = |b: &str, fam: &str, metric: &str| agg.cell(fam, b, metric).ratio;
    // Throughput checks compare the best run of each backend: the run least
    // disturbed by other work on a shared host (medians are in the table).
    let best = |b: &str, fam: &str, metric: &str| {
        agg.values(fam, b, metric).into_iter().filter(|v| v.is_finite()).reduce(f64::max)
    };
    let best_ratio = |b: &str, fam: &str, metric: &str| {
        best(b, fam, metric).zip(best(BackendId::Native.name(), fam, metric)).map(|(x, n)| x / n)
    };
    let near = |x: Option<f64>| x.is_some_and(|v| (0.75..=1.33).contains(&v));
    for (b, fam, metric, what) in [
        (BackendId::Container.name(), "cpu", "workload.sha256_mib_per_s", "container CPU ≈ native (Felter'15)"),
        (
            BackendId::Container.name(),
            "mem-bw",
            "workload.triad_gb_s",
            "container memory bandwidth ≈ native (Felter'15)",
        ),
        (
            BackendId::MicrovmBare.name(),
            "cpu",
            "workload.sha256_mib_per_s",
            "bare-VM CPU ≈ native (Felter'15: KVM ≈ native)",
        ),
    ] {
        let x = best_ratio(b, fam, metric);
        r.claim(
            format!("{what}: best runs within 25 %"),
            near(x),
            format!(
                "{} ({}× best vs best; median ratio {}×)",
                yes(near(x)),
                fixed(x, 2),
                fixed(ratio(b, fam, metric), 2)
            ),
        );
    }
    let vm_sys = ratio(BackendId::MicrovmBare.name(), "syscall", "workload.ns_per_call")
        .map(|x| cost_factor("workload.ns_per_call", x));
    let exits_cost = vm_sys.is_some_and(|v| v > 3.0);
    r.check(
        "the VM pays where it exits: bare-VM system calls cost > 3× native",
        exits_cost,
        format!("{} ({}×)", yes(exits_cost), fixed(vm_sys, 1)),
    );
    let failed = obs.records.iter().filter(|x| x.error.is_some()).count();
    r.note(format!(
        "{} records, {failed} failed (kept with their error); for a full report of a quick matrix: \
         cvbench bench --quick --results DIR/results --out DIR/report",
        obs.records.len()
    ));
}
