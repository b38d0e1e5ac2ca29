//! Lab 5 (booting Linux): boot the Linux micro-VM with `noop`, read the
//! boot-timer milestones and phases from its record, compare with QEMU
//! `-M microvm` on the same kernel (full run only), and say honestly how far
//! the guest gets on this host's kind of KVM.

use crate::backend::BackendId;
use crate::workload::Workload;
use std::time::Duration;

use super::{backend_ready, progress, run_once, yes, LabOptions, LabReport, Table};
use crate::backend::BackendOptions;
use crate::env::KvmKind;
use crate::figures::fixed;
use crate::record::RunRecord;

/// How long one boot may take: a software-KVM boot of the guest kernel
/// takes minutes on a loaded 2-core host.
const TIMEOUT: Duration = Duration::from_secs(600);

/// How one row of the boot table reads a record.
type Reading = Box<dyn Fn(&RunRecord) -> String>;

pub fn run(opts: &LabOptions, r: &mut LabReport) {
    let kvm = crate::env::kvm_kind();
    let mut ht = Table::new("This host", &["", "value"]);
    ht.row(["/dev/kvm", kvm.describe()]);
    let cpu = crate::hostkind::host_cpu();
    ht.row(["CPU".to_string(), cpu.describe()]);
    if cpu.emulated {
        r.note(
            "this is an emulated CPU (the cvbench test host): the boot below is the real boot path of a hardware-KVM \
             host, but every time in it is far slower than on hardware and only the milestones' order and ratios carry meaning",
        );
    }
    let probed = crate::backend::guestkit::guest_kernel();
    let kernel = probed.path().map(std::path::Path::to_path_buf);
    ht.row([
        "guest kernel".to_string(),
        match (&kernel, probed.missing()) {
            (Some(p), _) => p.display().to_string(),
            (None, missing) => {
                let (reason, fix) = missing.unwrap_or_default();
                format!("{reason} (fix: {fix})")
            }
        },
    ]);
    r.tables.push(ht);
    if kvm == KvmKind::Absent {
        r.unavailable("no usable /dev/kvm: no VM can boot here");
        return;
    }
    let mut peers = vec![BackendId::Microvm];
    if !opts.quick {
        peers.push(BackendId::Qemu);
    } else {
        r.note("--quick boots only cvbench's VMM; run without --quick to boot QEMU -M microvm on the same kernel too");
    }
    let mut runs: Vec<(BackendId, RunRecord)> = Vec::new();
    for name in peers {
        let b = match backend_ready(name) {
            Ok(b) => b,
            Err(reason) => {
                r.unavailable(reason);
                continue;
            }
        };
        progress(&format!("booting the guest kernel with {name} (noop; on a software KVM this takes tens of seconds)"));
        let rec = run_once(b.as_ref(), Workload::Noop, &[], &BackendOptions::default(), TIMEOUT);
        runs.push((name, rec));
    }
    if runs.is_empty() {
        return;
    }
    let mut t = Table::new(
        "Boot of the same guest kernel (ms from the VMM's start unless noted)",
        &["", "microvm (cvbench-vmm)", "qemu -M microvm"],
    );
    let cell = |name: BackendId, f: &dyn Fn(&RunRecord) -> String| {
        runs.iter().find(|(n, _)| *n == name).map(|(_, rec)| f(rec)).unwrap_or_else(|| "not run".into())
    };
    let extra = |key: &'static str| move |rec: &RunRecord| fixed(rec.extra.get(key).copied(), 1);
    let phase = |needle: &'static str| {
        move |rec: &RunRecord| {
            fixed(rec.host.phases.iter().find(|(n, _)| n.contains(needle)).map(|(_, ns)| *ns as f64 / 1e6), 1)
        }
    };
    let rows: Vec<(&str, Reading)> = vec![
        ("VMM start → first KVM_RUN", Box::new(extra("vmm_first_kvm_run_ms"))),
        ("→ kernel starts /init (boot timer, offset 0)", Box::new(phase("kernel starts /init"))),
        ("→ /init runs in user space (boot timer, offset 1)", Box::new(phase("/init in user space"))),
        ("launch → first console line", Box::new(phase("first console line"))),
        (
            "launch → exit (host clock)",
            Box::new(|rec: &RunRecord| fixed(rec.host.launch_to_exit_ns.map(|n| n as f64 / 1e6), 1)),
        ),
        ("workload ran", Box::new(|rec: &RunRecord| yes(rec.error.is_none()).to_string())),
    ];
    for (label, f) in &rows {
        t.row([label.to_string(), cell(BackendId::Microvm, f.as_ref()), cell(BackendId::Qemu, f.as_ref())]);
    }
    r.tables.push(t);
    for (name, rec) in &runs {
        for n in &rec.notes {
            if n.starts_with(&format!("{name}:")) {
                r.note(n.clone());
            } else {
                r.note(format!("{name}: {n}"));
            }
        }
        if let Some(e) = &rec.error {
            let short: String = e.chars().take(400).collect();
            let more = if short.len() < e.len() { " …" } else { "" };
            r.note(format!("{name}: the record's error: {short}{more}"));
        }
    }
    if let Some((_, q)) = runs.iter().find(|(n, _)| *n == BackendId::Qemu) {
        if let Some(e) = &q.error {
            let first: String = e.lines().next().unwrap_or("").chars().take(200).collect();
            r.unavailable(format!("qemu -M microvm did not finish the boot here: {first}"));
        }
    }
    let Some((_, ours)) = runs.iter().find(|(n, _)| *n == BackendId::Microvm) else {
        return;
    };
    let kernel_init = ours.host.phases.iter().any(|(n, _)| n.contains("kernel starts /init"));
    let timed_out = ours.error.as_deref().is_some_and(|e| e.contains("timed out"));
    r.check(
        "the guest kernel boots to /init (boot-timer milestone recorded)",
        kernel_init,
        if kernel_init || !timed_out {
            yes(kernel_init).to_string()
        } else {
            format!(
                "no: the VMM was stopped after {} s without reaching it; on a software KVM a boot takes \
                 25–130 s on an idle 2-core host, far longer on a loaded one",
                TIMEOUT.as_secs()
            )
        },
    );
    let first_run = ours.extra.contains_key("vmm_first_kvm_run_ms");
    r.check("the VMM recorded its own start-up (start → first KVM_RUN)", first_run, yes(first_run).to_string());
    match kvm {
        KvmKind::Hardware => {
            r.check(
                "on hardware KVM the workload runs in the guest",
                ours.error.is_none(),
                ours.error.clone().unwrap_or_else(|| "yes".into()),
            );
        }
        KvmKind::SoftwarePvm => r.unavailable(
            "software KVM (kvm_pvm): the guest kernel boots, but guest user space cannot make system calls here, \
             so /init and the workload do not run; on a hardware-KVM host this lab shows the whole boot",
        ),
        KvmKind::Unknown | KvmKind::Absent => {
            if ours.error.is_some() {
                r.unavailable(format!("KVM of an unrecognised kind: {}", ours.error.clone().unwrap_or_default()));
            }
        }
    }
}
