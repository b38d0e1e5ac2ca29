//! `REPORT.md`: an executive summary computed from the cells, the
//! environment and how the run was designed, what each backend exec'd and
//! which network path it took, the ratio-to-native table of every headline
//! metric × backend with bootstrap CIs (only significant ratios in bold), the
//! startup breakdown, density, the security surface, full distributions,
//! and plain statements of what could not be measured.

use crate::backend::BackendId;
use std::collections::BTreeMap;
use std::fmt::Write;

use super::aggregate::{family_of, Aggregate, Cell, Headline};
use super::{backends, summary};
use crate::figures::num;
use crate::results::ResultSet;
use crate::stats::{self, Better, Interval, Significance};

/// Chart files (relative to the report) and chart failures.
#[derive(Debug, Default)]
pub struct Figures {
    pub startup: Option<String>,
    pub density_mem: Option<String>,
    pub density_launch: Option<String>,
    pub ratios: Option<String>,
    pub phases: Option<String>,
    pub errors: Vec<String>,
}

/// A note with per-run scratch paths (`/var/tmp/cvbench-disk-Ab12Cd`)
/// replaced by a pattern, so the same remark from every run reads once.
pub fn generic_note(n: &str) -> String {
    n.split(' ')
        .map(|w| if w.starts_with("/var/tmp/") { "/var/tmp/…".to_string() } else { w.to_string() })
        .collect::<Vec<_>>()
        .join(" ")
}

fn short(e: &str) -> String {
    let one = e.replace(['\n', '|'], " ");
    if one.chars().count() > 320 {
        format!("{}…", one.chars().take(320).collect::<String>())
    } else {
        one
    }
}

/// `lo–hi` of an interval in a headline's unit.
pub fn interval_text(ci: &Interval, scale: impl Fn(f64) -> f64) -> String {
    format!("{}–{}", num(scale(ci.lo)), num(scale(ci.hi)))
}

/// The ratio part of a cell: bold only when its CI excludes 1.
pub fn ratio_text(c: &Cell) -> Option<String> {
    let r = c.ratio?;
    Some(match (c.significance, c.ratio_ci) {
        (Some(Significance::SameAsNative), Some(ci)) => format!("≈ native (×{})", interval_text(&ci, |x| x)),
        (Some(_), Some(ci)) => format!("**×{}** (×{})", num(r), interval_text(&ci, |x| x)),
        (None, Some(ci)) => {
            format!("×{} (×{}, n<{}: not judged)", num(r), interval_text(&ci, |x| x), stats::MIN_N_SIGNIFICANCE)
        }
        _ => format!("×{} (no CI)", num(r)),
    })
}

fn cell_text(a: &Aggregate, sc: &str, b: &str, hl: &Headline) -> String {
    let c = a.cell(sc, b, hl.metric);
    match c.summary {
        Some(s) => {
            let ci =
                c.median_ci.map(|ci| format!(" [{}]", interval_text(&ci, |x| hl.unit.scale(x)))).unwrap_or_default();
            let v = format!("{} {}{ci} n={}", num(hl.unit.scale(s.median)), hl.unit.text(), s.n);
            let noisy = if Aggregate::noisy(&c) { format!(" ⚠ CV {:.0}%", s.cv * 100.0) } else { String::new() };
            let failed = if c.failed > 0 { format!(" ({} failed)", c.failed) } else { String::new() };
            match ratio_text(&c) {
                Some(r) if b != BackendId::Native.name() => format!("{r} · {v}{noisy}{failed}"),
                _ => format!("{v}{noisy}{failed}"),
            }
        }
        None if c.failed > 0 => "✗ failed".into(),
        None => "—".into(),
    }
}

fn environment(out: &mut String, set: &ResultSet) {
    let m = &set.manifest;
    let _ = writeln!(out, "## Environment\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    let rows = [
        ("host", m.hostname.clone()),
        ("CPU", format!("{} ({} cores)", m.cpu_model, m.cores)),
        ("memory", format!("{} MiB", m.mem_total_kib / 1024)),
        ("kernel", m.kernel.clone()),
        ("KVM", m.kvm.describe().to_string()),
        ("cgroups", format!("{:?}", m.cgroup)),
        (
            "cvbench",
            format!(
                "{} (git {}{})",
                m.cvbench_version,
                m.git_rev.as_deref().unwrap_or("unknown"),
                match m.git_dirty {
                    Some(true) => ", tree had uncommitted changes",
                    Some(false) => ", clean tree",
                    None => "",
                }
            ),
        ),
        ("environment id", m.id()),
        ("load average at start (1/5/15 min)", m.loadavg_at_start.clone().unwrap_or_else(|| "not recorded".into())),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {} |", short(&v));
    }
    for (k, v) in &m.peers {
        let _ = writeln!(out, "| peer {k} | {} |", v.as_deref().unwrap_or("not installed"));
    }
    if let Some(n) = &m.host_net {
        let _ = writeln!(
            out,
            "| host firewall | {} iptables/nftables rules; dockerd {} |",
            n.firewall_rules.map_or("unknown".to_string(), |r| r.to_string()),
            if n.dockerd_running { "running" } else { "not running" }
        );
    }
    out.push('\n');
    let _ = writeln!(out, "### How the run was designed\n");
    match &m.design {
        Some(d) => {
            let _ = writeln!(out, "{}\n", d.describe());
        }
        None => {
            let _ = writeln!(
                out,
                "This result set does not record its design (it predates seeded ordering): its backends ran in \
                 a fixed order, without warm-up, quiet-host gate or pinning.\n"
            );
        }
    }
}

fn backend_profiles(out: &mut String, a: &Aggregate) {
    let _ = writeln!(out, "## What each backend ran\n");
    let _ = writeln!(
        out,
        "| backend | what was exec'd | what a row includes | network path (net-stream, net-rr) |\n|---|---|---|---|"
    );
    for b in &a.backends {
        let (execs, includes) = backends::profile(b).map_or(("unknown backend", "unknown"), |p| (p.execs, p.includes));
        let _ = writeln!(out, "| {b} | {execs} | {includes} | {} |", short(&backends::net_path(a, b)));
    }
    out.push('\n');
}

fn backend_status(out: &mut String, a: &Aggregate) {
    let _ = writeln!(out, "## Backends\n");
    let _ = writeln!(out, "| backend | runs ok | runs failed | status |\n|---|---:|---:|---|");
    for b in &a.backends {
        let recs: Vec<_> = a.groups.iter().filter(|((_, gb), _)| gb == b).flat_map(|(_, v)| v).collect();
        let ok = recs.iter().filter(|r| r.error.is_none()).count();
        let failed = recs.len() - ok;
        let status = if failed == 0 {
            "ran every scenario".to_string()
        } else if ok == 0 {
            let first = recs.iter().find_map(|r| r.error.as_deref()).unwrap_or("");
            // The backend's own explanation (e.g. what KVM kind stopped it) beats the last symptom.
            let why = recs.iter().flat_map(|r| r.notes.iter()).find(|n| n.contains("not run:"));
            match why {
                Some(n) => format!("**could not run here**: {} (symptom: {})", short(n), short(first)),
                None => format!("**could not run here**: {}", short(first)),
            }
        } else {
            "ran; some cells failed (see *Not measured*)".to_string()
        };
        let _ = writeln!(out, "| {b} | {ok} | {failed} | {status} |");
    }
    out.push('\n');
}

fn headline_table(out: &mut String, a: &Aggregate) {
    let _ = writeln!(out, "## Cost of isolation: every metric × backend\n");
    let _ = writeln!(
        out,
        "Each cell: the ratio to native (median ÷ native's median) with its bootstrap 95% CI, then the \
         backend's median with the bootstrap 95% CI of the median and n. A ratio is **bold** only when its \
         CI excludes 1; a CI that contains 1 reads \"≈ native\". ⚠ marks a noisy cell (coefficient of \
         variation above {:.0}%). For throughput (↑) a ratio below 1 is a loss; for times and sizes (↓) a \
         ratio above 1 is. With fewer than {} runs on either side a ratio is not judged. ✗ = every run of the cell failed (reasons under *Not measured*); — = not run.\n",
        stats::NOISY_CV * 100.0,
        stats::MIN_N_SIGNIFICANCE
    );
    let _ = write!(out, "| scenario | metric |");
    for b in &a.backends {
        let _ = write!(out, " {b} |");
    }
    let _ = write!(out, "\n|---|---|");
    for _ in &a.backends {
        out.push_str("---|");
    }
    out.push('\n');
    for (sc, hl) in a.headline_rows() {
        let arrow = match stats::better(hl.metric) {
            Better::Higher => "↑",
            Better::Lower => "↓",
            Better::Neither => "",
        };
        let _ = write!(out, "| {sc} | {} ({}) {arrow} |", hl.label, hl.unit.text());
        for b in &a.backends {
            let _ = write!(out, " {} |", cell_text(a, &sc, b, &hl));
        }
        out.push('\n');
    }
    out.push('\n');
}

fn startup_breakdown(out: &mut String, a: &Aggregate) {
    let _ = writeln!(out, "## Startup breakdown (noop, serial runs, medians)\n");
    let _ = writeln!(
        out,
        "| backend | n | launch→READY | launch→exit | phases recorded by the backend |\n|---|---:|---:|---:|---|"
    );
    for b in &a.backends {
        let recs: Vec<_> = a.records("startup-serial", b).iter().filter(|r| r.error.is_none()).collect();
        if recs.is_empty() {
            continue;
        }
        let med = |f: &dyn Fn(&crate::record::RunRecord) -> Option<f64>| {
            stats::median(&recs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
        };
        let ms = |v: Option<f64>| v.map(|x| format!("{} ms", num(x / 1e6))).unwrap_or("—".into());
        let ready = med(&|r| r.host.launch_to_ready_ns.map(|v| v as f64));
        let exit = med(&|r| r.host.launch_to_exit_ns.map(|v| v as f64));
        let mut order: Vec<String> = Vec::new();
        let mut vals: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in &recs {
            for (p, ns) in &r.host.phases {
                if !order.contains(p) {
                    order.push(p.clone());
                }
                vals.entry(p.clone()).or_default().push(*ns as f64);
            }
        }
        let phases: Vec<String> = order.iter().map(|p| format!("{p} {}", ms(stats::median(&vals[p])))).collect();
        let phases = if phases.is_empty() { "none recorded".to_string() } else { phases.join(" → ") };
        let _ = writeln!(out, "| {b} | {} | {} | {} | {phases} |", recs.len(), ms(ready), ms(exit));
    }
    out.push('\n');
}

fn scaled_table(out: &mut String, a: &Aggregate, family: &str, title: &str, cols: &[(&str, &str, f64, &str)]) {
    let scs: Vec<&String> = a.scenarios.iter().filter(|s| family_of(s) == family).collect();
    if scs.is_empty() {
        return;
    }
    // A column no record of the family has is left out, not shown as dashes.
    let has = |metric: &str| scs.iter().any(|sc| a.backends.iter().any(|b| !a.values(sc, b, metric).is_empty()));
    let cols: Vec<&(&str, &str, f64, &str)> = cols.iter().filter(|c| has(c.0)).collect();
    let cols = cols.as_slice();
    let _ = writeln!(out, "## {title}\n");
    let _ = write!(out, "| scenario | backend |");
    for (_, label, _, _) in cols {
        let _ = write!(out, " {label} |");
    }
    let _ = write!(out, "\n|---|---|");
    for _ in cols {
        out.push_str("---:|");
    }
    out.push('\n');
    for sc in scs {
        for b in &a.backends {
            if a.records(sc, b).is_empty() {
                continue;
            }
            let _ = write!(out, "| {sc} | {b} |");
            for (metric, _, scale, unit) in cols {
                let c = a.cell(sc, b, metric);
                let t = match c.summary {
                    Some(s) => format!("{} {unit} (n={})", num(s.median * scale), s.n),
                    None if c.failed > 0 => "✗".into(),
                    None => "—".into(),
                };
                let _ = write!(out, " {t} |");
            }
            out.push('\n');
        }
    }
    out.push('\n');
}

fn surface(out: &mut String, a: &Aggregate) {
    let _ = writeln!(out, "## Security surface\n");
    let _ = writeln!(
        out,
        "Read from the host while an `idle` instance runs (`/proc/<pid>/status` and `/proc/<pid>/ns/*` of the \
         instance's most isolated process), plus what the backend states about itself. The system calls a seccomp \
         filter allows are counted by reading the filters back from the running process \
         (`PTRACE_SECCOMP_GET_FILTER`) and running them on every x86-64 syscall number with zero arguments; \
         for gVisor the sentry's own host filter is read the same way. The kernel between the workload and the \
         host is measured from `/proc/<pid>/exe`: whether any process of the instance execs the workload.\n"
    );
    let _ = writeln!(out, "| backend | process | namespaces not shared with the host | capabilities kept (bounding set) | seccomp | syscalls allowed | kernel between workload and host | no_new_privs | what the backend states |\n|---|---|---|---|---|---|---|---|---|");
    for b in &a.backends {
        let recs = a.records("surface", b);
        let Some(r) = recs.first() else { continue };
        if let Some(e) = &r.error {
            let _ = writeln!(out, "| {b} | ✗ | | | | | | | probe failed: {} |", short(e));
            continue;
        }
        let note =
            |k: &str| r.notes.iter().find_map(|n| n.strip_prefix(&format!("surface.{k}: "))).unwrap_or("—").to_string();
        let stated: Vec<&str> = r.notes.iter().filter(|n| !n.starts_with("surface.")).map(String::as_str).collect();
        let _ = writeln!(
            out,
            "| {b} | {} | {} | {} ({}) | {} | {}{} | {} | {} | {} |",
            note("process"),
            note("namespaces"),
            note("capabilities"),
            note("bounding"),
            note("seccomp"),
            note("seccomp_allowed"),
            r.notes
                .iter()
                .find_map(|n| n.strip_prefix("surface.sentry_filter: "))
                .map(|s| format!("; sentry's host filter: {s}"))
                .unwrap_or_default(),
            note("kernel_between"),
            note("no_new_privs"),
            short(&stated.join("; ")),
        );
    }
    out.push('\n');
}

fn distributions(out: &mut String, a: &Aggregate) {
    let _ = writeln!(out, "## Distributions\n");
    let _ = writeln!(
        out,
        "Median CI and ratio CI: percentile bootstrap, {} resamples, seeded per cell (reproducible). CV = sample \
         standard deviation ÷ mean.\n",
        stats::BOOTSTRAP_RESAMPLES
    );
    let _ = writeln!(out, "| scenario | metric | backend | n | median | median 95% CI | ratio to native 95% CI | CV | p90 | min | max | MAD |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (sc, hl) in a.headline_rows() {
        for b in &a.backends {
            let c = a.cell(&sc, b, hl.metric);
            let Some(s) = c.summary else { continue };
            let f = |v: f64| num(hl.unit.scale(v));
            let ci = c.median_ci.map(|ci| interval_text(&ci, |x| hl.unit.scale(x))).unwrap_or_else(|| "—".into());
            let rci = c.ratio_ci.map(|ci| format!("×{}", interval_text(&ci, |x| x))).unwrap_or_else(|| "—".into());
            let noisy = if Aggregate::noisy(&c) { " ⚠" } else { "" };
            let _ = writeln!(
                out,
                "| {sc} | {} ({}) | {b} | {} | {} | {ci} | {rci} | {:.1}%{noisy} | {} | {} | {} | {} |",
                hl.label,
                hl.unit.text(),
                s.n,
                f(s.median),
                s.cv * 100.0,
                f(s.p90),
                f(s.min),
                f(s.max),
                f(s.mad)
            );
        }
    }
    out.push('\n');
}

fn not_measured(out: &mut String, a: &Aggregate, figs: &Figures) {
    let _ = writeln!(out, "## Not measured on this machine, and why\n");
    let mut any = false;
    for b in &a.backends {
        // Group the backend's failed cells by error text.
        let mut by_err: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for ((sc, gb), recs) in &a.groups {
            if gb != b {
                continue;
            }
            let ok = recs.iter().any(|r| r.error.is_none());
            if let Some(e) = recs.iter().find_map(|r| r.error.clone()) {
                let label = if ok { format!("{sc} (some runs)") } else { sc.clone() };
                by_err.entry(short(&e)).or_default().push(label);
            }
        }
        for (e, scs) in by_err {
            any = true;
            let _ = writeln!(out, "- **{b}** — {}: {e}", scs.join(", "));
        }
    }
    for e in &figs.errors {
        any = true;
        let _ = writeln!(out, "- chart not drawn: {e}");
    }
    if !any {
        let _ = writeln!(out, "Every cell that was planned produced results.");
    }
    out.push('\n');
    let mut notes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((_, b), recs) in &a.groups {
        for n in recs.iter().flat_map(|r| &r.notes).filter(|n| !n.starts_with("surface.")) {
            let n = generic_note(n);
            let v = notes.entry(b.clone()).or_default();
            if !v.contains(&n) && v.len() < 8 {
                v.push(n);
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "### Notes the backends recorded\n");
        for (b, ns) in notes {
            for n in ns {
                let _ = writeln!(out, "- {b}: {}", short(&n));
            }
        }
        out.push('\n');
    }
}

/// The whole report.
pub fn render(set: &ResultSet, a: &Aggregate, figs: &Figures) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# cvbench: what does isolation cost?\n");
    let _ = writeln!(out, "## Summary\n");
    let _ = writeln!(out, "{}\n", summary::executive(a));
    let _ = writeln!(
        out,
        "The same static workload binary, natively and under each backend, measured in one interleaved run \
         (round *i* of every backend before round *i+1* of any{}, equal pauses between units). {} records; \
         generated by `cvbench report` from the result set with environment id `{}`.\n",
        if set.manifest.design.is_some() {
            ", the backends' order within a round shuffled from a recorded seed"
        } else {
            ""
        },
        set.records.len(),
        set.manifest.id()
    );
    environment(&mut out, set);
    backend_status(&mut out, a);
    backend_profiles(&mut out, a);
    headline_table(&mut out, a);
    if let Some(p) = &figs.ratios {
        let _ = writeln!(out, "![overhead ratios]({p})\n");
    }
    startup_breakdown(&mut out, a);
    if let Some(p) = &figs.phases {
        let _ = writeln!(out, "![startup phases]({p})\n");
    }
    if let Some(p) = &figs.startup {
        let _ = writeln!(out, "![startup distributions]({p})\n");
    }
    scaled_table(
        &mut out,
        a,
        "startup-parallel",
        "Parallel startup (N noop launches released together)",
        &[
            ("host.launch_to_ready_ns", "launch→READY per instance (median)", 1e-6, "ms"),
            ("extra.batch_last_ready_ns", "until all N READY", 1e-6, "ms"),
        ],
    );
    scaled_table(
        &mut out,
        a,
        "density",
        "Density (N idle instances up at once)",
        &[
            ("extra.density_cgroup_per_instance_kib", "parent cgroup memory per instance", 1.0 / 1024.0, "MiB"),
            ("extra.density_pss_per_instance_kib", "summed PSS per instance", 1.0 / 1024.0, "MiB"),
            ("extra.density_launch_all_ns", "time to launch N into the parent cgroup", 1e-6, "ms"),
        ],
    );
    if a.scenarios.iter().any(|s| family_of(s) == "density") {
        let cgroup = a.groups.values().flatten().any(|r| r.extra.contains_key("density_cgroup_per_instance_kib"));
        let _ = writeln!(
            out,
            "{} The host-wide MemAvailable drop is kept in `results.csv` as a check only: other activity on the \
             host moves it by more than an instance costs, so it is not shown.\n",
            if cgroup {
                "Per-instance memory is the growth of a parent cgroup's `memory.current` (v2) or \
                 `memory.usage_in_bytes` (v1) holding every instance (it counts kernel memory: page tables, slab, \
                 network namespaces, KVM), beside the summed PSS of the instances' host processes. The harness \
                 puts native processes, the VMMs and QEMU in that cgroup before they exec, and our runtime \
                 nests its containers' cgroups below it; runc, crun and Docker place their containers' cgroups \
                 themselves, so for them only the summed PSS is shown. The launch times here include that \
                 placement (for native, the VMMs and QEMU one `tasks` write on v1, `cgroup.procs` on v2, per \
                 instance before exec: 10 native instances took 15-25 ms instead of 5.5 ms in a debug build \
                 here); startup-parallel-N has the plain launch times."
            } else {
                "Per-instance memory is the summed PSS of the instances' host processes; this result set has no \
                 parent-cgroup figure, so kernel memory (page tables, slab, network namespaces, KVM) is not counted."
            }
        );
    }
    for p in [&figs.density_mem, &figs.density_launch].into_iter().flatten() {
        let _ = writeln!(out, "![density]({p})\n");
    }
    surface(&mut out, a);
    not_measured(&mut out, a, figs);
    distributions(&mut out, a);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_note_hides_scratch_names() {
        assert_eq!(
            generic_note("disk: bind volume from /var/tmp/cvbench-disk-Ab12Cd at /data"),
            "disk: bind volume from /var/tmp/… at /data"
        );
    }

    #[test]
    fn short_flattens_table_breaking_characters() {
        assert_eq!(short("a|b\nc"), "a b c");
    }
}
