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
use crate::stats::decision::{Rules, Unjudged, Verdict};
use crate::stats::paired::{self, EXACT_SIGN_FLIP_MAX, SIGN_FLIP_DRAWS};
use crate::stats::{self, Better, Interval};

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

/// The ratio part of a cell: bold only when judged different.
pub fn ratio_text(c: &Cell, rules: &Rules) -> Option<String> {
    let rc = c.paired?;
    let (r, ci) = (rc.paired.centre, interval_text(&rc.paired.ci, |x| x));
    Some(match rc.verdict {
        Verdict::Different(_) => format!("**×{}** (×{ci}, {})", num(r), q_text(rc.q.unwrap_or(1.0))),
        Verdict::Same { significant_but_small: true } => format!(
            "≈ native (within ×{ci}; ×{} is significant but under the {:.0}% minimum)",
            num(r),
            rules.min_effect * 100.0
        ),
        Verdict::Same { significant_but_small: false } => format!("≈ native (within ×{ci})"),
        Verdict::NotJudged(Unjudged::TooFewRounds) => {
            format!("×{} (×{ci}; {} rounds: not judged)", num(r), rc.paired.rounds)
        }
        Verdict::NotJudged(Unjudged::NotAHeadline) => format!("×{} (×{ci})", num(r)),
    })
}

/// A p- or q-value in two significant digits (`<0.0001` below that).
pub fn p_text(p: f64) -> String {
    if p < 1e-4 {
        "<0.0001".into()
    } else {
        sig2(p)
    }
}

/// `q=0.0020`, or `q<0.0001`.
fn q_text(q: f64) -> String {
    match p_text(q) {
        t if t.starts_with('<') => format!("q{t}"),
        t => format!("q={t}"),
    }
}

/// Two significant digits of a value in (0, 1].
fn sig2(p: f64) -> String {
    let digits = (2 - p.log10().floor() as i32 - 1).max(0) as usize;
    format!("{p:.digits$}")
}

fn cell_text(a: &Aggregate, sc: &str, b: &str, hl: &Headline) -> String {
    let c = a.cell(sc, b, hl.metric);
    let mark = a.platform.suffix(b);
    let text = match c.summary {
        Some(s) => {
            let ci =
                c.median_ci.map(|ci| format!(" [{}]", interval_text(&ci, |x| hl.unit.scale(x)))).unwrap_or_default();
            let v = format!("{} {}{ci} n={}", num(hl.unit.scale(s.median)), hl.unit.text(), s.n);
            let noisy = if Aggregate::noisy(&c) { format!(" ⚠ CV {:.0}%", s.cv * 100.0) } else { String::new() };
            let failed = if c.failed > 0 { format!(" ({} failed)", c.failed) } else { String::new() };
            match ratio_text(&c, &a.rules) {
                Some(r) if b != BackendId::Native.name() => format!("{r} · {v}{noisy}{failed}"),
                _ => format!("{v}{noisy}{failed}"),
            }
        }
        None if c.failed > 0 => "✗ failed".into(),
        None => return "—".into(),
    };
    format!("{text}{mark}")
}

/// The measured cost of one forwarded system call under the bare VM (median ns per
/// getppid, less native's), as µs text; `None` when the run has no such cells.
pub fn forwarded_call_cost(a: &Aggregate) -> Option<String> {
    let m = "workload.ns_per_call";
    let bare = stats::median(&a.values("syscall", BackendId::MicrovmBare.name(), m))?;
    let native = stats::median(&a.values("syscall", BackendId::Native.name(), m)).unwrap_or(0.0);
    Some(format!("{} µs", num((bare - native) / 1e3)))
}

/// The design paragraph with a per-call figure taken from this run's records where older
/// manifests stated one from an earlier run.
fn design_text(d: &crate::record::Design, a: &Aggregate) -> String {
    let text = d.describe();
    let stale = "at about 0.3 ms here";
    match forwarded_call_cost(a) {
        Some(cost) => text.replace(stale, &format!("at {cost} more per call than native in this run (syscall row)")),
        None => text.replace(stale, "(its per-call cost: see the syscall row)"),
    }
}

fn environment(out: &mut String, set: &ResultSet, a: &Aggregate) {
    let m = &set.manifest;
    let _ = writeln!(out, "## Environment\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    let rows = [
        ("host", m.hostname.clone()),
        ("CPU", format!("{} ({} cores)", m.cpu_model, m.cores)),
        ("memory", format!("{} MiB", m.mem_total_kib / 1024)),
        ("kernel", m.kernel.clone()),
        ("KVM", m.kvm.describe().to_string()),
        ("native is itself a VM", a.platform.native_is_vm()),
        (
            "steal time",
            match super::platform::steal(&set.records) {
                Some((med, max, n)) => {
                    format!("median {med:.1}%, max {max:.1}% of a unit's time ({n} units recorded it)")
                }
                None => "not recorded by this run's units".into(),
            },
        ),
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
            let _ = writeln!(out, "{}\n", design_text(d, a));
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
    let _ = writeln!(
        out,
        "Units that ran and succeeded or failed; cells that never started here (the backend cannot run on \
         this host, or the scenario does not apply to it) are counted apart, with their reasons under *Not \
         measured*.\n"
    );
    let _ = writeln!(out, "| backend | runs ok | runs failed | cells not run | status |\n|---|---:|---:|---:|---|");
    for b in &a.backends {
        let recs: Vec<_> = a.groups.iter().filter(|((_, gb), _)| gb == b).flat_map(|(_, v)| v).collect();
        let ok = recs.iter().filter(|r| r.error.is_none()).count();
        let not_run = recs.iter().filter(|r| r.never_ran()).count();
        let failed = recs.len() - ok - not_run;
        let status = if ok == 0 {
            let first = recs.iter().find_map(|r| r.error.as_deref()).unwrap_or("");
            // The backend's own explanation (e.g. what KVM kind stopped it) beats the last symptom.
            let why = recs.iter().flat_map(|r| r.notes.iter()).find(|n| n.contains("not run:"));
            match why {
                Some(n) => format!("**could not run here**: {} (symptom: {})", short(n), short(first)),
                None => format!("**could not run here**: {}", short(first)),
            }
        } else if failed > 0 {
            "ran; some units failed (see *Not measured*)".to_string()
        } else if not_run > 0 {
            "ran every cell that applies here".to_string()
        } else {
            "ran every scenario".to_string()
        };
        let _ = writeln!(out, "| {b} | {ok} | {failed} | {not_run} | {status} |");
    }
    out.push('\n');
}

fn headline_table(out: &mut String, a: &Aggregate) {
    let _ = writeln!(out, "## Cost of isolation: every metric × backend\n");
    let _ = writeln!(
        out,
        "Each cell: the ratio to native, paired within rounds (see *How differences are decided*), with \
         its 95% CI over rounds, then the backend's median with the bootstrap 95% CI of the median and n (every \
         value; a batch counts each instance here, but one observation per round in the ratio). A ratio is \
         **bold** only when judged different (q ≤ {} after Benjamini–Hochberg and at least {:.0}% from native); \
         otherwise it reads \"≈ native (within ×a–b)\" with its CI. ⚠ marks a noisy cell (coefficient of \
         variation above {:.0}%). For throughput (↑) a ratio below 1 is a loss; for times and sizes (↓) a ratio \
         above 1 is. With fewer than {} paired rounds a ratio is not judged. ✗ = every unit of the cell that ran \
         failed; — = not run here (the backend cannot run on this host, or the cell does not apply to it); the \
         reasons for both are under *Not measured*.\n",
        a.rules.fdr_q,
        a.rules.min_effect * 100.0,
        stats::NOISY_CV * 100.0,
        a.rules.min_rounds
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
    let key = a.platform.key(a.backends.iter().map(String::as_str));
    if !key.is_empty() {
        let _ = writeln!(out, "{key}\n");
    }
}

/// What the run's plan left out or shortened to fit its time bound (from the manifest's design).
fn cuts(out: &mut String, set: &ResultSet) {
    let Some(d) = set.manifest.design.as_ref().filter(|d| !d.cuts.is_empty()) else {
        return;
    };
    let _ = writeln!(out, "**What this run leaves out or shortens to fit its time bound, and why:**\n");
    for c in &d.cuts {
        let _ = writeln!(out, "- {c}");
    }
    out.push('\n');
}

/// How the ratio cells were judged, and how they came out.
fn decisions(out: &mut String, a: &Aggregate, previous: Option<&Aggregate>) {
    let r = &a.rules;
    let _ = writeln!(out, "## How differences are decided\n");
    let rounds: Vec<usize> = a.ratio_cells().map(|(_, c)| c.paired.rounds).collect();
    let (fewest, most) = (rounds.iter().min().copied().unwrap_or(0), rounds.iter().max().copied().unwrap_or(0));
    let _ = writeln!(
        out,
        "- **The round is the unit.** A round runs one unit of every backend of a scenario back to back in a \
         shuffled order; a record's `iteration` is its round. Per round, the backend's value ÷ native's value of \
         the same round (a parallel or density batch is first reduced to its median: one observation per round). \
         Headline ratio cells here have {fewest} to {most} paired rounds.\n\
         - **Centre:** the geometric mean of the per-round ratios. **CI:** 95% percentile bootstrap resampling \
         whole rounds, {} resamples, seeded per cell (reproducible).\n\
         - **p-value:** two-sided sign-flip test of the mean log ratio (under no difference each round's log ratio \
         is as likely negative as positive): exact up to {EXACT_SIGN_FLIP_MAX} rounds, where with n rounds the \
         smallest attainable p is 2/2ⁿ (n = 10: {}); above that {SIGN_FLIP_DRAWS} seeded random sign vectors \
         (smallest p {}).\n\
         - **Decision:** Benjamini–Hochberg over every judged cell of this report (q = {}), and a minimum effect \
         of **{:.0}%** (a centre of at least ×{} or at most ×{}; `cvbench report --min-effect`). A cell is called \
         different only when both hold; otherwise it reads \"≈ native (within ×a–b)\". Cells with fewer than {} \
         paired rounds are not judged.\n\
         - **Summary:** names a difference only when it also holds in each half of the rounds (first and second \
         half in time: the half's CI on the same side of 1 and its centre past the minimum effect){}.\n",
        stats::BOOTSTRAP_RESAMPLES,
        sig2(paired::smallest_p(10)),
        sig2(paired::smallest_p(EXACT_SIGN_FLIP_MAX + 1)),
        r.fdr_q,
        r.min_effect * 100.0,
        num(1.0 + r.min_effect),
        num(1.0 / (1.0 + r.min_effect)),
        r.min_rounds,
        if previous.is_some() { ", and in the previous run given to `--previous` by the same rule" } else { "" }
    );
    let cells: Vec<_> = a.ratio_cells().map(|(k, c)| (k, *c)).collect();
    let judged = a.judged_cells();
    if cells.is_empty() {
        let _ = writeln!(out, "{}\n", super::summary::NO_NATIVE);
        return;
    }
    if judged == 0 {
        let _ = writeln!(
            out,
            "**This run is too small to judge**: none of its {} ratio cells has {} paired rounds (a quick run), so \
             nothing is called different from native.\n",
            cells.len(),
            r.min_rounds
        );
        return;
    }
    let count = |f: &dyn Fn(&super::aggregate::RatioCell) -> bool| cells.iter().filter(|(_, c)| f(c)).count();
    let different = count(&|c| matches!(c.verdict, Verdict::Different(_)));
    let small = count(&|c| c.verdict == Verdict::Same { significant_but_small: true });
    let bh = count(&|c| c.q.is_some_and(|q| q <= r.fdr_q));
    let replicated = cells
        .iter()
        .filter(|((sc, m, b), _)| a.replicates(sc, b, m, previous) == super::aggregate::Replication::Holds)
        .count();
    let _ = writeln!(
        out,
        "Of {} ratio cells, **{judged} are judged** ({} have fewer than {} rounds): {bh} are significant after \
         Benjamini–Hochberg, of which **{different} differ from native** by at least {:.0}% and {small} are \
         significant but smaller; **{replicated} of the {different} hold {}** and may be named in the summary; \
         the other {} judged cells are ≈ native.\n",
        cells.len(),
        cells.len() - judged,
        r.min_rounds,
        r.min_effect * 100.0,
        if previous.is_some() { "in both halves and in the previous run" } else { "in both halves" },
        judged - different
    );
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
        let _ =
            writeln!(out, "| {b}{} | {} | {} | {} | {phases} |", a.platform.suffix(b), recs.len(), ms(ready), ms(exit));
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
            let _ = write!(out, "| {sc} | {b}{} |", a.platform.suffix(b));
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
            // A probe that never started here (the backend cannot run, or the cell does not apply)
            // is not a failed probe.
            let (mark, what) = if r.never_ran() { ("—", "not run here") } else { ("✗", "probe failed") };
            let _ = writeln!(out, "| {b} | {mark} | | | | | | | {what}: {} |", short(e));
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
        "Median CI: percentile bootstrap of every value, {} resamples, seeded per cell (reproducible). Paired \
         ratio, p and q: see *How differences are decided*. CV = sample standard deviation ÷ mean.\n",
        stats::BOOTSTRAP_RESAMPLES
    );
    let _ = writeln!(out, "| scenario | metric | backend | n | median | median 95% CI | rounds paired | paired ratio (95% CI) | p | q | CV | p90 | min | max | MAD |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (sc, hl) in a.headline_rows() {
        for b in &a.backends {
            let c = a.cell(&sc, b, hl.metric);
            let Some(s) = c.summary else { continue };
            let f = |v: f64| num(hl.unit.scale(v));
            let ci = c.median_ci.map(|ci| interval_text(&ci, |x| hl.unit.scale(x))).unwrap_or_else(|| "—".into());
            let (rounds, rci, p, q) = match c.paired {
                Some(rc) => (
                    rc.paired.rounds.to_string(),
                    format!("×{} (×{})", num(rc.paired.centre), interval_text(&rc.paired.ci, |x| x)),
                    p_text(rc.paired.p),
                    rc.q.map(p_text).unwrap_or_else(|| "—".into()),
                ),
                None => ("—".into(), "—".into(), "—".into(), "—".into()),
            };
            let noisy = if Aggregate::noisy(&c) { " ⚠" } else { "" };
            let _ = writeln!(
                out,
                "| {sc} | {} ({}) | {b}{} | {} | {} | {ci} | {rounds} | {rci} | {p} | {q} | {:.1}%{noisy} | {} | {} | {} | {} |",
                hl.label,
                hl.unit.text(),
                a.platform.suffix(b),
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
pub fn render(set: &ResultSet, a: &Aggregate, previous: Option<&Aggregate>, figs: &Figures) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# cvbench: what does isolation cost?\n");
    let _ = writeln!(out, "## Summary\n");
    let _ = writeln!(out, "{}\n", summary::executive(a, previous));
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
    environment(&mut out, set, a);
    backend_status(&mut out, a);
    backend_profiles(&mut out, a);
    headline_table(&mut out, a);
    decisions(&mut out, a, previous);
    cuts(&mut out, set);
    if let Some(p) = &figs.ratios {
        let _ = writeln!(out, "![overhead ratios]({p})\n");
    }
    out.push_str(&super::claims::section(a));
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
    fn a_surface_probe_that_never_started_is_not_a_failed_probe() {
        let rec = |backend: &str, started_unix_ms| crate::record::RunRecord {
            backend: backend.into(),
            scenario: "surface".into(),
            workload: "idle".into(),
            started_unix_ms,
            error: Some(format!("{backend}: why")),
            ..Default::default()
        };
        let a = Aggregate::new(&[rec("container-hostnet", 0), rec("crun", 1_700_000_000_000)]);
        let mut out = String::new();
        surface(&mut out, &a);
        assert!(out.contains("| container-hostnet | — | | | | | | | not run here: container-hostnet: why |"), "{out}");
        assert!(out.contains("| crun | ✗ | | | | | | | probe failed: crun: why |"), "{out}");
    }

    #[test]
    fn the_method_lists_the_plans_cuts_and_nothing_without_them() {
        let dir = crate::paths::repo_root().join("tests/fixtures/results-small");
        let mut set = ResultSet::read_dir(&dir).unwrap();
        let cut = "density above 10 instances on a representative subset: left out x (by y: why)";
        set.manifest.design = Some(crate::record::Design { cuts: vec![cut.into()], ..Default::default() });
        let mut out = String::new();
        cuts(&mut out, &set);
        assert!(out.contains(&format!("- {cut}\n")), "{out}");
        set.manifest.design = Some(crate::record::Design::default());
        out.clear();
        cuts(&mut out, &set);
        assert!(out.is_empty(), "{out}");
    }

    #[test]
    fn generic_note_hides_scratch_names() {
        assert_eq!(
            generic_note("disk: bind volume from /var/tmp/cvbench-disk-Ab12Cd at /data"),
            "disk: bind volume from /var/tmp/… at /data"
        );
    }

    fn cell_with(verdict: Verdict, q: Option<f64>, rounds: usize) -> Cell {
        use super::super::aggregate::RatioCell;
        let paired = stats::paired::Paired { rounds, centre: 1.5, ci: Interval { lo: 1.2, hi: 1.8 }, p: 0.001 };
        Cell {
            summary: None,
            median_ci: None,
            ratio: Some(1.5),
            ratio_ci: Some(paired.ci),
            significance: None,
            paired: Some(RatioCell { paired, q, verdict, halves: [None, None] }),
            failed: 0,
            errors: Vec::new(),
        }
    }

    #[test]
    fn ratio_text_follows_the_verdict() {
        use crate::stats::decision::Direction;
        let r = Rules::default();
        let t = |v, q, n| ratio_text(&cell_with(v, q, n), &r).unwrap();
        assert_eq!(t(Verdict::Different(Direction::Above), Some(0.002), 12), "**×1.50** (×1.20–1.80, q=0.0020)");
        assert_eq!(t(Verdict::Same { significant_but_small: false }, Some(0.3), 12), "≈ native (within ×1.20–1.80)");
        assert!(t(Verdict::Same { significant_but_small: true }, Some(0.01), 12).contains("under the 5% minimum"));
        assert_eq!(t(Verdict::NotJudged(Unjudged::TooFewRounds), None, 5), "×1.50 (×1.20–1.80; 5 rounds: not judged)");
    }

    #[test]
    fn p_values_print_two_significant_digits() {
        assert_eq!(p_text(0.001953125), "0.0020");
        assert_eq!(p_text(0.05), "0.050");
        assert_eq!(p_text(0.5), "0.50");
        assert_eq!(p_text(1.0), "1.0");
        assert_eq!(p_text(0.00001), "<0.0001");
        assert_eq!(q_text(0.00001), "q<0.0001");
    }

    #[test]
    fn short_flattens_table_breaking_characters() {
        assert_eq!(short("a|b\nc"), "a b c");
    }
}
