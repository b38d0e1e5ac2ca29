//! `cvbench bench`: run the whole matrix (every scenario × backend,
//! interleaved in seeded random order), store the result set under
//! `results/<timestamp>/`, and write the report only when `--out` asks.

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use cvbench::backend;
use cvbench::bench::{self, design, Observer, Plan, Profile, Slot};
use cvbench::env::Manifest;
use cvbench::record::RunRecord;
use cvbench::results::RecordSink;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The small matrix (under 3 minutes here) instead of the full one.
    #[arg(long)]
    pub quick: bool,
    /// Comma-separated backends (default: every known backend; those that
    /// cannot run here are listed in the report with the reason).
    #[arg(long, value_delimiter = ',')]
    pub backends: Option<Vec<String>>,
    /// Comma-separated scenario families (surface, startup-serial,
    /// startup-parallel, footprint, density, cpu, mem-bw, mem-touch,
    /// syscall, net-stream, net-rr, disk, cold-start, image-depth, restore-start,
    /// swarm; the last four run in --quick only when named here).
    #[arg(long, value_delimiter = ',')]
    pub workloads: Option<Vec<String>>,
    /// Also write the report here, with the raw result set copied to
    /// <OUT>/run so `cvbench report --in <OUT>/run --out <OUT>` regenerates
    /// it (default: no report; the committed reports/ changes only on purpose).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Result directory (default: results/<UTC timestamp>).
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Seed of the shuffle of the backends' order in each round (default:
    /// from the clock; always recorded in the manifest).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Pin the harness to one CPU and each instance to another (auto: on
    /// where there are at least two CPUs).
    #[arg(long, value_enum, default_value = "auto")]
    pub pin: PinArg,
    /// Cold-start and image-depth: drop the page cache before each unit (else it is warm).
    #[arg(long)]
    pub drop_caches: bool,
    /// The swarm scenario on an existing swarm instead of one the run makes: the docker API
    /// address of one of its managers (unix:///path/docker.sock or tcp://host:port). Its nodes
    /// are recorded in the manifest; node loss and leader loss are not measured there (the run
    /// stops nothing on your hosts). Needs --swarm-image.
    #[arg(long, value_name = "ENDPOINT", value_parser = clap::value_parser!(cvbench::swarm::remote::Endpoint))]
    pub swarm_manager: Option<cvbench::swarm::remote::Endpoint>,
    /// With --swarm-manager: an image every node of that swarm can pull, holding the workload
    /// binary as /cvbench-workload (the run starts `/cvbench-workload idle` from it).
    #[arg(long, value_name = "REF", requires = "swarm_manager")]
    pub swarm_image: Option<String>,
    /// Print how long this matrix would take, estimated from a previous run's result set
    /// (a `results/<ts>` directory or a report's `run/`), and run nothing.
    #[arg(long, value_name = "DIR")]
    pub estimate_from: Option<PathBuf>,
    /// Measured rounds per cell instead of the profile's (a run to time or try the matrix:
    /// below 10 the report judges no cell).
    #[arg(long, value_name = "N")]
    pub rounds: Option<u32>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum PinArg {
    Auto,
    On,
    Off,
}

/// `2026-12-01T09-22-04Z` for a Unix time (UTC; the civil-from-days
/// algorithm, so no date crate is needed).
fn timestamp(unix: u64) -> String {
    let (days, secs) = ((unix / 86_400) as i64, unix % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}-{:02}-{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Ctrl-C and SIGTERM stop the bench between units (graceful mode of the process's one
/// signal owner): the containers it started are killed at once, the units in flight fail,
/// and the result set written so far is kept. A second signal ends the process.
fn install_stop_handler() {
    cvbench_signals::install();
    cvbench_signals::set_mode(cvbench_signals::Mode::Graceful);
    cvbench_signals::set_message(
        b"\ncvbench bench: stopping and keeping the results so far (again to abort at once)\n",
    );
}

struct Progress {
    bar: ProgressBar,
    sink: RecordSink,
    failed: u64,
    in_unit: bool,
    write_error: Option<String>,
    /// Finished cells: (scenario, backend, ok, failed, not run).
    cells: Vec<(String, String, u32, u32, u32)>,
    /// The first error of each cell under way (backend, scenario), printed under its line when
    /// it is done (the backends of a scenario run interleaved).
    cell_errors: HashMap<(String, String), String>,
    /// The scenario of the unit under way.
    scenario: String,
}

impl Observer for Progress {
    fn unit(&mut self, backend: &str, scenario: &str, iteration: u32) {
        self.bar.set_message(format!("{scenario} · {backend} #{iteration}"));
        self.in_unit = true;
        self.scenario = scenario.to_string();
    }
    fn records(&mut self, recs: &[RunRecord]) {
        for r in recs {
            if let Some(e) = &r.error {
                self.failed += 1;
                // Keyed by the cell (a swarm round's records are named swarm-N, its cell swarm).
                let cell = if self.in_unit { self.scenario.clone() } else { r.scenario.clone() };
                self.cell_errors
                    .entry((r.backend.clone(), cell))
                    .or_insert_with(|| e.lines().next().unwrap_or_default().to_string());
            }
            if let Err(e) = self.sink.append(r) {
                self.write_error.get_or_insert(format!("{e:#}"));
            }
        }
        // Placeholders for cells that never run are counted by `skipped`.
        if std::mem::take(&mut self.in_unit) {
            self.bar.inc(1);
        }
    }
    fn skipped(&mut self, units: u64) {
        self.bar.inc(units);
    }
    fn cell_done(&mut self, backend: &str, scenario: &str, ok: u32, failed: u32, not_run: u32) {
        let status = match (ok, failed, not_run) {
            (_, 0, 0) => "ok".to_string(),
            (0, 0, _) => "not run".to_string(),
            _ => format!("{failed} failed, {not_run} not run"),
        };
        let mut line = format!("  {scenario:<20} {backend:<13} {ok}/{} {status}", ok + failed + not_run);
        let first_error = self.cell_errors.remove(&(backend.to_string(), scenario.to_string()));
        if let Some(e) = first_error.filter(|_| failed > 0) {
            line.push_str(&format!("\n      first error: {e}"));
        }
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
        self.cells.push((scenario.to_string(), backend.to_string(), ok, failed, not_run));
    }
}

/// The plan's backends this host rules out, from the doctor's verdicts (host facts, instant):
/// each gets one placeholder record and costs no time.
fn ruled_out(names: &[String], host: &cvbench::doctor::backends::Host) -> BTreeSet<String> {
    names
        .iter()
        .filter(|n| match n.parse::<backend::BackendId>() {
            Ok(id) => cvbench::doctor::backends::verdict(id, host).is_err(),
            Err(_) => true,
        })
        .cloned()
        .collect()
}

/// The size of the plan: cells, rounds, units.
fn print_plan_size(plan: &Plan, e: &bench::estimate::Estimate, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    // The security-surface probe runs once per backend; it is not measured in rounds.
    let measured: Vec<u32> =
        plan.scenarios.iter().filter(|s| s.shape != bench::Shape::Surface).map(|s| s.iterations).collect();
    let (lo, hi) = (measured.iter().min().copied().unwrap_or(0), measured.iter().max().copied().unwrap_or(0));
    let rounds = if lo == hi { format!("{lo}") } else { format!("{lo}-{hi}") };
    let warm = if plan.scenarios.iter().any(|s| plan.warmup_for(s) > 0) {
        format!(" (+{} warm-up in single-instance scenarios)", plan.warmup_units)
    } else {
        String::new()
    };
    writeln!(
        out,
        "plan: {:?} profile, {} scenarios, {} cells that run here, {rounds} measured rounds per cell{warm}, {} units",
        plan.profile,
        plan.scenarios.len(),
        e.cells,
        e.units
    )
}

/// Print the estimate of `plan` from the result set in `dir`.
fn print_estimate(
    plan: &Plan,
    dir: &std::path::Path,
    ruled: &BTreeSet<String>,
    table: bool,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let prior = cvbench::results::ResultSet::read_dir(dir).with_context(|| dir.display().to_string())?;
    let e = bench::estimate::estimate(plan, &prior.records, ruled);
    if table {
        writeln!(out, "{:<24} {:>8} {:>7} {:>9} {:>8}", "scenario", "s/unit", "rounds", "backends", "minutes")?;
        for l in &e.lines {
            let unit = l.unit_secs.map_or("no prior".to_string(), |s| format!("{s:.2}"));
            let mut note = String::new();
            if l.assumed > 0 {
                note.push_str(&format!("  ({} at the prior's mean)", l.assumed));
            }
            if l.sizes_changed {
                note.push_str("  (other sizes in the prior)");
            }
            writeln!(
                out,
                "{:<24} {unit:>8} {:>7} {:>9} {:>8.1}{note}",
                l.scenario,
                l.rounds,
                l.backends,
                l.secs / 60.0
            )?;
        }
        writeln!(
            out,
            "cool-downs {:.1} min; quiet gate {:.1} min on a calm host, {:.1} min if every unit waits its bound",
            e.cooldown_secs / 60.0,
            e.gate_calm_secs / 60.0,
            e.gate_busy_secs / 60.0
        )?;
    }
    print_plan_size(plan, &e, out)?;
    if !ruled.is_empty() {
        writeln!(out, "ruled out here (no units): {}", ruled.iter().cloned().collect::<Vec<_>>().join(", "))?;
    }
    let (none, resized) = (e.without_prior(), e.resized());
    let from =
        format!("the run of {} in {}", prior.manifest.git_rev.as_deref().unwrap_or("an unknown commit"), dir.display());
    if !none.is_empty() && e.lines.iter().all(|l| l.backends == 0 || l.unit_secs.is_none()) {
        // Nothing of this plan has a price: a "0 min" would read as a fact.
        writeln!(out, "estimate: none: {from} has no units of {}", none.join(", "))?;
        return Ok(());
    }
    writeln!(
        out,
        "estimate: {:.0} min (calm host), {:.0} min at most (every gate at its bound), from {from}",
        e.expected().as_secs_f64() / 60.0,
        e.worst().as_secs_f64() / 60.0,
    )?;
    if !none.is_empty() {
        writeln!(out, "  not counted (no prior units): {}", none.join(", "))?;
    }
    if !resized.is_empty() {
        writeln!(out, "  not rescaled (that run had other sizes): {}", resized.join(", "))?;
    }
    Ok(())
}

/// The committed result set a run's estimate comes from: the last full run, `reports/run`.
fn default_prior() -> Option<PathBuf> {
    let dir = cvbench::paths::repo_root().join("reports").join("run");
    dir.join("manifest.json").is_file().then_some(dir)
}

/// Check the swarm `--swarm-manager` names: a manager of an active swarm, an image given, the
/// swarm scenario selected. Returns the target and what the manifest records (its nodes).
fn named_swarm(
    endpoint: cvbench::swarm::remote::Endpoint,
    image: Option<String>,
    plan: &Plan,
) -> anyhow::Result<(cvbench::swarm::remote::Target, cvbench::record::NamedSwarm)> {
    use cvbench::swarm::remote::{check_image, Remote, Target};
    if !plan.scenarios.iter().any(|s| s.family == "swarm") {
        anyhow::bail!("--swarm-manager {endpoint}: the swarm scenario is not selected (add --workloads swarm)");
    }
    let image = image.with_context(|| {
        format!("--swarm-manager {endpoint} needs --swarm-image REF: an image of the workload every node can pull")
    })?;
    check_image(&image)?;
    let target = Target { endpoint, image };
    let remote = Remote::connect(&target).with_context(|| format!("--swarm-manager {}", target.endpoint))?;
    let named = remote.describe().with_context(|| format!("listing the nodes of {}", target.endpoint))?;
    eprintln!(
        "cvbench bench: swarm scenario on {} ({} nodes), not on a swarm of its own",
        target.endpoint,
        named.nodes.len()
    );
    for n in &named.nodes {
        eprintln!(
            "  {} {:<20} {:<8} {:<7} engine {} {}{}",
            &n.id[..n.id.len().min(12)],
            n.hostname,
            n.role.name(),
            format!("{:?}", n.availability).to_lowercase(),
            n.engine_version,
            n.state,
            if n.leader { " leader" } else { "" }
        );
    }
    Ok((target, named))
}

pub fn execute(a: BenchArgs) -> anyhow::Result<i32> {
    let names: Vec<String> = a.backends.clone().unwrap_or_else(|| backend::ALL.iter().map(|s| s.to_string()).collect());
    let profile = if a.quick { Profile::Quick } else { Profile::Full };
    let mut plan = Plan::new(profile, names.clone(), a.workloads.as_deref())?;
    if let Some(r) = a.rounds {
        plan = plan.with_rounds(r);
    }
    plan.seed = a.seed.unwrap_or_else(design::fresh_seed);
    plan.pin = match a.pin {
        PinArg::Off => None,
        PinArg::Auto => design::default_pinning(&design::allowed_cpus()),
        PinArg::On => {
            Some(design::default_pinning(&design::allowed_cpus()).context("--pin on needs at least two usable CPUs")?)
        }
    };
    plan.drop_caches = a.drop_caches;
    plan.stretch = bench::timeouts::Stretch::for_host(&cvbench::hostkind::host_cpu());
    if plan.stretch.emulator_slowdown > 1.0 {
        eprintln!(
            "cvbench bench: emulated CPU, measured {:.1}x slower than the reference machine: every timeout is {:.1}x longer",
            plan.stretch.emulator_slowdown, plan.stretch.emulator_slowdown
        );
    }
    let host = cvbench::doctor::backends::Host::probe();
    let ruled = ruled_out(&names, &host);
    if let Some(dir) = &a.estimate_from {
        print_estimate(&plan, dir, &ruled, true, &mut std::io::stdout())?;
        return Ok(0);
    }
    // Before anything runs: how big the matrix is and how long it should take.
    match default_prior() {
        Some(dir) => {
            if let Err(e) = print_estimate(&plan, &dir, &ruled, false, &mut std::io::stderr()) {
                eprintln!("estimate: none ({e:#})");
            }
        }
        None => {
            let e = bench::estimate::estimate(&plan, &[], &ruled);
            print_plan_size(&plan, &e, &mut std::io::stderr())?;
            eprintln!("estimate: none (no committed run in reports/ to estimate from)");
        }
    }
    let mut manifest = Manifest::collect_for_bench();
    manifest.design = Some(plan.design(&names));
    if let Some(endpoint) = a.swarm_manager.clone() {
        let named = named_swarm(endpoint, a.swarm_image.clone(), &plan)?;
        manifest.swarm = Some(named.1);
        plan.swarm = Some(named.0);
    }
    let env_id = manifest.id();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let dir = a.results.clone().unwrap_or_else(|| PathBuf::from("results").join(timestamp(now)));
    let sink = RecordSink::create(&dir, &manifest).with_context(|| dir.display().to_string())?;
    eprintln!("cvbench bench: {profile:?} matrix, seed {}, results in {}", plan.seed, dir.display());
    // Before any backend's check starts a daemon (dockerd): helpers go to the harness's CPU.
    cvbench::backend::process::set_helper_cpu(plan.pin.map(|p| p.harness_cpu));
    let slots: Vec<Slot> = names.iter().map(|n| Slot::resolve(n, &host)).collect();
    for s in &slots {
        match s {
            Slot::Ready(_) => eprintln!("  {:<13} ready", s.name()),
            Slot::Unavailable { name, reason } => eprintln!("  {name:<13} UNAVAILABLE: {reason}"),
        }
    }
    install_stop_handler();
    let bar = ProgressBar::new(plan.total_units());
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} ETA {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut obs = Progress {
        bar,
        sink,
        failed: 0,
        in_unit: false,
        write_error: None,
        cells: Vec::new(),
        cell_errors: HashMap::new(),
        scenario: String::new(),
    };
    bench::run(&plan, &slots, &env_id, &mut obs, cvbench_signals::flag());
    obs.bar.finish_with_message("done");
    drop(slots); // backends with daemons stop them here
    if let Some(e) = obs.write_error {
        anyhow::bail!("storing records in {}: {e}", dir.display());
    }
    eprintln!("{} failed records kept with their error", obs.failed);
    let interrupted = cvbench_signals::interrupted();
    // Whatever registered for cleanup on interruption (tracked containers, daemons).
    cvbench_signals::run_cleanup();
    if interrupted {
        let planned: usize = plan.scenarios.len() * names.len();
        let partial = obs.cells.iter().filter(|c| c.3 + c.4 > 0).count();
        eprintln!(
            "interrupted: {} of {planned} cells finished ({partial} of them incomplete), {} not started; \
             the result set in {} holds every record up to the interruption",
            obs.cells.len(),
            planned.saturating_sub(obs.cells.len()),
            dir.display()
        );
    }
    match &a.out {
        // An interrupted matrix is partial: it must not replace a report of a whole one.
        Some(out) if interrupted => eprintln!(
            "report: not written to {} (the run was interrupted); a report of the partial set: \
             cvbench report --in {} --out DIR",
            out.display(),
            dir.display()
        ),
        Some(out) => {
            // The raw set beside the report, so the report regenerates from what
            // is committed.
            let set = cvbench::results::ResultSet::read_dir(&dir).with_context(|| dir.display().to_string())?;
            let run = out.join("run");
            set.write_dir(&run).with_context(|| run.display().to_string())?;
            super::report::write_report(&run, out)?;
        }
        None => eprintln!("report: cvbench report --in {} --out reports", dir.display()),
    }
    Ok(if interrupted { 130 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::timestamp;

    #[test]
    fn timestamp_is_utc_civil_time() {
        assert_eq!(timestamp(0), "1970-01-01T00-00-00Z");
        assert_eq!(timestamp(1_764_581_524), "2025-12-01T09-32-04Z");
        assert_eq!(timestamp(951_782_400), "2000-02-29T00-00-00Z");
    }
}
