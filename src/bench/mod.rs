//! The `cvbench bench` matrix: every scenario on every backend in sweeps (sweep r runs round r
//! of every scenario, the scenarios in an order shuffled per sweep from the plan's seed, a
//! cool-down after a round that churned many instances), a round being one unit of every
//! backend (unit i of every backend before unit i+1 of any), the backends' order within a round
//! shuffled from the same seed, warm-up units discarded, a quiet-host gate (pressure, steal)
//! and the same pause before every unit,
//! optional CPU pinning, a time budget per cell, and every failure kept as a
//! record with its error.

pub mod batch;
pub mod cold_start;
pub mod design;
pub mod estimate;
pub mod image_ctx;
pub mod image_depth;
pub mod parent_cgroup;
pub mod plan;
pub mod quiet;
pub mod restore;
pub mod restore_container;
pub mod seccomp_bpf;
pub mod surface;
pub mod swarm;
pub mod timeouts;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::backend::{self, Backend};
use crate::record::{RunRecord, SCHEMA_VERSION};
use crate::runner::{self, RunRequest};
pub use plan::{Plan, Profile, Scenario, Shape};

/// A backend as the matrix sees it: usable, or not here and why.
pub enum Slot {
    Ready(Box<dyn Backend>),
    Unavailable { name: String, reason: String },
}

impl Slot {
    /// Look `name` up, ask the doctor's verdict for this host, then run the backend's own check.
    /// A backend the doctor rules out is not run, also one that would start but never reach
    /// its workload (a Linux guest under kvm_pvm: every unit would only end at its timeout).
    pub fn resolve(name: &str, host: &crate::doctor::backends::Host) -> Slot {
        let unavailable = |reason: String| Slot::Unavailable { name: name.to_string(), reason };
        let id = match name.parse::<backend::BackendId>() {
            Ok(id) => id,
            Err(e) => return unavailable(format!("{e} (fix: cvbench run --help)")),
        };
        if let Err(blocker) = crate::doctor::backends::verdict(id, host) {
            return unavailable(blocker.to_string());
        }
        let b = id.backend();
        match b.check() {
            Ok(()) => Slot::Ready(b),
            Err(reason) => unavailable(reason),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Slot::Ready(b) => b.name(),
            Slot::Unavailable { name, .. } => name,
        }
    }
}

/// What the matrix reports as it goes.
pub trait Observer {
    /// A unit is about to start.
    fn unit(&mut self, backend: &str, scenario: &str, iteration: u32);
    /// Records are ready to be stored.
    fn records(&mut self, recs: &[RunRecord]);
    /// A unit that will not run (budget, skip, unavailable) was accounted for.
    fn skipped(&mut self, units: u64);
    /// A warm-up unit ran (its records are discarded unless it failed).
    fn warmed_up(&mut self, _backend: &str, _scenario: &str) {}
    /// A cell is finished: measured units that succeeded, failed, and were
    /// not run.
    fn cell_done(&mut self, _backend: &str, _scenario: &str, _ok: u32, _failed: u32, _not_run: u32) {}
}

/// Progress of one backend × scenario cell.
#[derive(Default)]
struct Cell {
    spent: Duration,
    done: u32,
    /// Failed units, warm-up included (for giving up on a cell).
    failed_units: u32,
    /// Failed measured units.
    measured_failed: u32,
    closed: bool,
}

/// Per-backend state across cells.
#[derive(Default)]
struct BackendState {
    successes: u64,
    failed_units: u32,
    first_error: Option<String>,
}

impl BackendState {
    /// Its first units here all failed: the rest of the matrix skips it.
    fn given_up(&self) -> bool {
        self.successes == 0 && self.failed_units >= SKIP_AFTER_FAILED_UNITS
    }
}

/// A record for a cell that produced no run (backend unavailable, skipped).
pub fn placeholder(backend: &str, sc: &Scenario, env_id: &str, error: String) -> RunRecord {
    RunRecord {
        schema_version: SCHEMA_VERSION,
        backend: backend.to_string(),
        workload: sc.workload.to_string(),
        args: sc.args.clone(),
        env_id: env_id.to_string(),
        scenario: sc.name.clone(),
        error: Some(error),
        ..Default::default()
    }
}

fn request(plan: &Plan, sc: &Scenario, env_id: &str, iteration: u32) -> RunRequest {
    let mut r = RunRequest::new(sc.workload, sc.args.clone());
    r.pin_instance_cpu = plan.pin.map(|p| p.instance_cpu);
    let (timeout, _) = plan.stretch.timeout(plan.run_timeout, sc.shape.instances());
    let hold = match sc.shape {
        Shape::Density { .. } => plan.stretch.hold(sc.hold),
        _ => sc.hold,
    };
    r.timeout = timeout + hold;
    r.hold = hold;
    r.sample_footprint = sc.sample_footprint;
    r.env_id = env_id.to_string();
    r.scenario = sc.name.clone();
    r.iteration = iteration;
    r.drop_caches = plan.drop_caches;
    r
}

/// Run one unit of `sc` on `b`.
pub fn run_unit(b: &dyn Backend, req: &RunRequest, shape: Shape, window: Duration) -> Vec<RunRecord> {
    match shape {
        Shape::Single => vec![runner::run(b, req)],
        Shape::Parallel { n } => batch::parallel(b, req, n),
        Shape::Density { n } => batch::density(b, req, n, window),
        Shape::Surface => vec![surface::probe(b, req)],
        Shape::ColdStart => vec![cold_start::unit(b, req)],
        Shape::ImageDepth { layers } => vec![image_depth::unit(b, req, layers)],
        Shape::RestoreStart { start } => vec![restore::unit(b, req, start)],
        Shape::RestoreDensity { n, start } => restore::density(b, req, n, start),
        Shape::Swarm { sizes } => swarm::unit(b, req, sizes, 0, None),
    }
}

/// A backend whose first units all failed, this many of them, is skipped for
/// the rest of the matrix (its first error is kept): a backend that cannot
/// start the workload here must not spend every cell's budget on timeouts.
const SKIP_AFTER_FAILED_UNITS: u32 = 2;
/// A cell stops after this many failed units.
const MAX_FAILED_UNITS: u32 = 2;

/// Run the matrix. `stop` ends it early (Ctrl-C) after the current unit.
pub fn run(plan: &Plan, slots: &[Slot], env_id: &str, obs: &mut dyn Observer, stop: &AtomicBool) {
    if let Some(p) = plan.pin {
        // Threads and children started from here on inherit the harness CPU;
        // the runner moves only the launching thread to the instance CPU.
        let _ = design::pin_current_thread(p.harness_cpu);
    }
    let mut probe = quiet::ProcProbe::host();
    let mut known = design::own_children(std::path::Path::new("/proc/self"));
    let _registry = image_ctx::ShutdownGuard;
    image_ctx::prepare_for(plan);
    let mut states: BTreeMap<String, BackendState> = BTreeMap::new();
    // One row of cells per scenario, kept across the sweeps.
    let mut grid: Vec<Vec<Cell>> =
        plan.scenarios.iter().map(|_| slots.iter().map(|_| Cell::default()).collect()).collect();
    let mut after_churn = false;
    for sweep in 0..plan.sweeps() {
        for index in plan.sweep_order(sweep) {
            let sc = &plan.scenarios[index];
            let cells = &mut grid[index];
            if sweep == 0 {
                open_cells(plan, sc, slots, cells, &states, env_id, obs);
            }
            close_given_up(sc, slots, cells, &states, obs);
            if cells.iter().all(|c| c.closed) {
                continue;
            }
            if after_churn && !plan.cooldown.is_zero() {
                cool_down(plan.cooldown, stop);
            }
            after_churn = sc.churns();
            let round = Round { plan, sc, round: sweep, env_id };
            if !run_round(&round, slots, cells, &mut states, (&mut probe, &mut known), obs, stop) {
                return;
            }
        }
    }
}

/// Cells that cannot run at all (backend unavailable, given up on, not applicable): one
/// placeholder record each, written at the scenario's first round.
fn open_cells(
    plan: &Plan,
    sc: &Scenario,
    slots: &[Slot],
    cells: &mut [Cell],
    states: &BTreeMap<String, BackendState>,
    env_id: &str,
    obs: &mut dyn Observer,
) {
    for (slot, cell) in slots.iter().zip(cells.iter_mut()) {
        let why = match slot {
            Slot::Unavailable { reason, .. } => Some(format!("backend unavailable here: {reason}")),
            Slot::Ready(b) => match states.get(slot.name()) {
                Some(st) if st.given_up() => Some(format!(
                    "skipped: the backend's first {} units here all failed (first error: {})",
                    st.failed_units,
                    st.first_error.as_deref().unwrap_or("?")
                )),
                _ => plan::not_applicable(sc, b.id()),
            },
        };
        if let Some(e) = why {
            obs.records(&[placeholder(slot.name(), sc, env_id, e)]);
            obs.skipped(u64::from(plan.rounds_of(sc)));
            obs.cell_done(slot.name(), &sc.name, 0, 0, sc.iterations);
            cell.closed = true;
        }
    }
}

/// A cell of a backend given up on in another scenario since this one's last round: closed,
/// its remaining units counted as not run (its failed records already say why).
fn close_given_up(
    sc: &Scenario,
    slots: &[Slot],
    cells: &mut [Cell],
    states: &BTreeMap<String, BackendState>,
    obs: &mut dyn Observer,
) {
    for (slot, cell) in slots.iter().zip(cells.iter_mut()) {
        if cell.closed || !states.get(slot.name()).is_some_and(BackendState::given_up) {
            continue;
        }
        let left = sc.iterations - cell.done;
        obs.skipped(u64::from(left));
        obs.cell_done(slot.name(), &sc.name, cell.done - cell.measured_failed, cell.measured_failed, left);
        cell.closed = true;
    }
}

/// What one round of one scenario needs to know.
struct Round<'a> {
    plan: &'a Plan,
    sc: &'a Scenario,
    /// Warm-up rounds first.
    round: u32,
    env_id: &'a str,
}

/// Run round `r.round` of `r.sc`: one unit of every open cell, the backends in the round's
/// shuffled order. False when Ctrl-C stopped it.
fn run_round(
    r: &Round,
    slots: &[Slot],
    cells: &mut [Cell],
    states: &mut BTreeMap<String, BackendState>,
    (probe, known): (&mut quiet::ProcProbe, &mut Vec<i32>),
    obs: &mut dyn Observer,
    stop: &AtomicBool,
) -> bool {
    let (plan, sc, round, env_id) = (r.plan, r.sc, r.round, r.env_id);
    let gate = plan.quiet;
    let warm = plan.warmup_for(sc);
    let budget = match sc.shape {
        Shape::Swarm { sizes } => sizes.budget(),
        _ => plan.cell_budget,
    };
    let order = design::round_order(plan.seed, &sc.name, round, slots.len());
    for (position, &k) in order.iter().enumerate() {
        let (slot, cell) = (&slots[k], &mut cells[k]);
        let Slot::Ready(b) = slot else { continue };
        if cell.closed {
            continue;
        }
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let warm_up = round < warm;
        let i = round.saturating_sub(warm);
        let quiet = gate.wait(probe, known);
        // What is alive now is not this unit's: the next wait ignores it.
        *known = design::own_children(std::path::Path::new("/proc/self"));
        obs.unit(b.name(), &sc.name, i);
        let req = request(plan, sc, env_id, i);
        let t = Instant::now();
        let mut recs = match sc.shape {
            Shape::Swarm { sizes } => swarm::unit(b.as_ref(), &req, sizes, plan.seed, plan.swarm.as_ref()),
            shape => run_unit(b.as_ref(), &req, shape, plan.density_window),
        };
        let failed = recs.iter().find_map(|r| r.error.clone());
        let st = states.entry(b.name().to_string()).or_default();
        if warm_up {
            obs.warmed_up(b.name(), &sc.name);
            match failed {
                // A failed warm-up is kept for its error and counts
                // towards giving up on the backend.
                Some(e) => {
                    cell.failed_units += 1;
                    st.failed_units += 1;
                    st.first_error.get_or_insert(e);
                    note_last(&mut recs, "warm-up unit (failed; kept for its error)".into());
                    obs.records(&recs);
                }
                None => obs.records(&[]),
            }
            std::thread::sleep(plan.spacing);
            continue;
        }
        if let (_, Some(why)) = plan.stretch.timeout(plan.run_timeout, sc.shape.instances()) {
            // Said on every record of the unit: a timeout failure there names the host.
            for r in &mut recs {
                r.notes.push(why.clone());
            }
        }
        if req.hold != sc.hold {
            note_last(
                &mut recs,
                format!(
                    "hold: {:.1} s instead of {:.1} s (x{:.1} for this emulated CPU's spread of launches)",
                    req.hold.as_secs_f64(),
                    sc.hold.as_secs_f64(),
                    plan.stretch.emulator_slowdown
                ),
            );
        }
        let throughput = !matches!(sc.workload, crate::workload::Workload::Noop | crate::workload::Workload::Idle);
        if plan.profile == Profile::Full && sc.shape == Shape::Single && throughput {
            flag_short_regions(&mut recs);
        }
        for r in &mut recs {
            r.extra.extend(quiet.extra().into_iter().map(|(k, v)| (k.to_string(), v)));
            r.extra.insert("round_position".into(), position as f64);
        }
        if quiet.timed_out {
            let s = quiet.seen;
            let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
            note_last(
                &mut recs,
                format!(
                    "quiet-host gate gave up after {:?} (pressure some avg10 cpu {} io {} memory {} %, \
                             steal {} %, {} children of the previous unit alive)",
                    quiet.waited,
                    f(s.psi_cpu.or(s.loadavg1)),
                    f(s.psi_io),
                    f(s.psi_memory),
                    f(s.steal_pct),
                    quiet.children_left
                ),
            );
        }
        cell.spent += t.elapsed();
        cell.done += 1;
        match failed {
            Some(e) => {
                cell.failed_units += 1;
                cell.measured_failed += 1;
                st.failed_units += 1;
                st.first_error.get_or_insert(e);
            }
            None => st.successes += 1,
        }
        let left = sc.iterations - cell.done;
        let hopeless = st.given_up();
        if left > 0 && (hopeless || cell.failed_units >= MAX_FAILED_UNITS) {
            cell.closed = true;
            note_last(&mut recs, format!("cell stopped after {} failed units; {left} not run", cell.failed_units));
        } else if left > 0 && cell.spent >= budget {
            cell.closed = true;
            note_last(
                &mut recs,
                format!(
                    "cell time budget of {:?} used after {} of {} units; {left} not run",
                    budget, cell.done, sc.iterations
                ),
            );
        }
        obs.records(&recs);
        if cell.closed || left == 0 {
            if cell.closed {
                obs.skipped(u64::from(left));
            }
            obs.cell_done(b.name(), &sc.name, cell.done - cell.measured_failed, cell.measured_failed, left);
            cell.closed = true;
        }
        std::thread::sleep(plan.spacing);
    }
    true
}

/// Put each record's shortest timed region on it (`extra.timed_region_min_ms`: the workload's
/// `timed_region_min_ns`, else its `elapsed_ns`) and flag one below [`plan::MIN_TIMED_REGION`]
/// (`extra.timed_region_short` = 1), so a region sized for native that ran shorter here says so.
fn flag_short_regions(recs: &mut [RunRecord]) {
    for r in recs.iter_mut().filter(|r| r.error.is_none()) {
        let Some(ns) = r.metrics.get("timed_region_min_ns").or_else(|| r.metrics.get("elapsed_ns")).copied() else {
            continue;
        };
        let ms = ns / 1e6;
        r.extra.insert("timed_region_min_ms".into(), ms);
        let short = ms < plan::MIN_TIMED_REGION.as_secs_f64() * 1e3;
        r.extra.insert("timed_region_short".into(), f64::from(u8::from(short)));
        if short {
            r.notes.push(format!(
                "timed region of {ms:.1} ms, below the {} ms minimum",
                plan::MIN_TIMED_REGION.as_millis()
            ));
        }
    }
}

/// Sleep `d` between two scenario blocks, waking early on Ctrl-C.
fn cool_down(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50).min(end.saturating_duration_since(Instant::now())));
    }
}

fn note_last(recs: &mut [RunRecord], note: String) {
    if let Some(r) = recs.last_mut() {
        r.notes.push(note);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendError, Instance, LaunchSpec};

    #[test]
    fn the_matrix_leaves_out_what_the_doctor_rules_out() {
        use crate::doctor::backends::Host;
        let pvm = Host::complete(cvbench_microvm::KvmKind::SoftwarePvm);
        // A Linux guest under kvm_pvm would start and never reach its workload.
        for name in ["microvm", "qemu"] {
            match Slot::resolve(name, &pvm) {
                Slot::Unavailable { reason, .. } => assert!(reason.contains("kvm_pvm"), "{name}: {reason}"),
                Slot::Ready(_) => panic!("{name} is ready under kvm_pvm"),
            }
        }
        let not_root = Host { root: false, ..pvm };
        assert!(matches!(Slot::resolve("container", &not_root), Slot::Unavailable { .. }));
    }

    /// A backend that fails every launch (no host access needed).
    struct Broken;
    impl Backend for Broken {
        fn id(&self) -> crate::backend::BackendId {
            crate::backend::BackendId::Native
        }
        fn name(&self) -> &'static str {
            "broken"
        }
        fn check(&self) -> Result<(), String> {
            Ok(())
        }
        fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn Instance>, BackendError> {
            Err(BackendError::Unsupported {
                backend: "broken".into(),
                workload: spec.workload.to_string(),
                reason: "test".into(),
            })
        }
    }

    #[derive(Default)]
    struct Collect {
        order: Vec<(String, String, u32)>,
        recs: Vec<RunRecord>,
        skipped: u64,
    }
    impl Observer for Collect {
        fn unit(&mut self, b: &str, s: &str, i: u32) {
            self.order.push((b.into(), s.into(), i));
        }
        fn records(&mut self, r: &[RunRecord]) {
            self.recs.extend_from_slice(r);
        }
        fn skipped(&mut self, n: u64) {
            self.skipped += n;
        }
    }

    fn plan(families: &[&str]) -> Plan {
        let f: Vec<String> = families.iter().map(|s| s.to_string()).collect();
        let mut p = Plan::new(Profile::Quick, vec![], Some(&f)).unwrap();
        p.spacing = Duration::ZERO;
        p.warmup_units = 0;
        p.quiet.max_wait = Duration::ZERO;
        p.quiet.window = Duration::ZERO;
        p.cooldown = Duration::ZERO;
        p
    }

    #[test]
    fn drop_caches_is_carried_from_the_plan_into_every_units_request() {
        let mut p = plan(&["cold-start"]);
        let sc = p.scenarios[0].clone();
        assert!(!request(&p, &sc, "env", 0).drop_caches);
        p.drop_caches = true;
        assert!(request(&p, &sc, "env", 0).drop_caches);
    }

    #[test]
    fn unavailable_backend_gets_one_error_record_per_scenario() {
        let slots = vec![Slot::Unavailable { name: "qemu".into(), reason: "guest kernel not built".into() }];
        let mut c = Collect::default();
        run(&plan(&["cpu", "disk"]).with_rounds(3), &slots, "e", &mut c, &AtomicBool::new(false));
        assert_eq!(c.recs.len(), 2);
        assert!(c.recs[0].error.as_deref().unwrap().contains("guest kernel not built"));
        assert_eq!(c.skipped, 6);
    }

    #[test]
    fn failing_cells_stop_early_and_the_backend_is_then_skipped() {
        let slots = vec![Slot::Ready(Box::new(Broken))];
        let mut c = Collect::default();
        run(&plan(&["cpu", "mem-bw", "disk"]).with_rounds(3), &slots, "e", &mut c, &AtomicBool::new(false));
        // The first sweep: two scenarios' first units fail, the backend is given up, the third
        // scenario gets a skipped placeholder; the next sweep closes the first two's cells.
        assert_eq!(c.order.len(), 2);
        assert_eq!(c.recs.len(), 3);
        assert!(c.recs[2].error.as_deref().unwrap().starts_with("skipped"));
        assert_eq!(c.skipped, 2 + 2 + 3);
        assert!(c.recs.iter().all(|r| r.error.is_some()));
    }

    struct Named(&'static str);
    impl Backend for Named {
        fn id(&self) -> crate::backend::BackendId {
            crate::backend::BackendId::Native
        }
        fn name(&self) -> &'static str {
            self.0
        }
        fn check(&self) -> Result<(), String> {
            Ok(())
        }
        fn launch(&self, s: LaunchSpec) -> Result<Box<dyn Instance>, BackendError> {
            Broken.launch(s)
        }
    }

    fn named(names: &[&'static str]) -> Vec<Slot> {
        names.iter().map(|n| Slot::Ready(Box::new(Named(n)) as Box<dyn Backend>)).collect()
    }

    #[test]
    fn units_are_interleaved_in_rounds_in_the_seeded_order() {
        let slots = named(&["a", "b", "c"]);
        let mut p = plan(&["cpu"]);
        p.seed = 11;
        let mut c = Collect::default();
        run(&p, &slots, "e", &mut c, &AtomicBool::new(false));
        let order: Vec<(String, u32)> = c.order.into_iter().map(|(b, _, i)| (b, i)).collect();
        // Broken backends stop after 2 failed units: two full rounds.
        assert_eq!(order.len(), 6);
        let names = ["a", "b", "c"];
        for round in 0..2u32 {
            let want: Vec<(String, u32)> =
                design::round_order(11, "cpu", round, 3).iter().map(|k| (names[*k].to_string(), round)).collect();
            assert_eq!(order[round as usize * 3..round as usize * 3 + 3], want[..]);
        }
    }

    #[test]
    fn the_seed_changes_the_order_and_is_reproducible() {
        let order_for = |seed: u64| {
            let mut p = plan(&["cpu"]);
            p.seed = seed;
            let mut c = Collect::default();
            run(&p, &named(&["a", "b", "c", "d"]), "e", &mut c, &AtomicBool::new(false));
            c.order.into_iter().map(|(b, _, _)| b).collect::<Vec<_>>()
        };
        assert_eq!(order_for(3), order_for(3));
        assert!((4..12).any(|s| order_for(s) != order_for(3)));
    }

    #[test]
    fn a_short_timed_region_is_flagged_on_its_record() {
        let mut rec = RunRecord::default();
        rec.metrics.insert("timed_region_min_ns".into(), 70e6);
        rec.metrics.insert("elapsed_ns".into(), 400e6);
        let mut long = RunRecord::default();
        long.metrics.insert("elapsed_ns".into(), 150e6);
        let mut recs = [rec, long];
        flag_short_regions(&mut recs);
        assert_eq!(recs[0].extra.get("timed_region_short"), Some(&1.0));
        assert_eq!(recs[0].extra.get("timed_region_min_ms"), Some(&70.0));
        assert!(recs[0].notes[0].contains("below the 100 ms minimum"));
        assert_eq!(recs[1].extra.get("timed_region_short"), Some(&0.0));
    }

    #[test]
    fn the_first_sweep_runs_the_scenarios_in_its_seeded_order() {
        let mut p = plan(&["cpu", "mem-bw", "disk", "syscall", "net-rr"]);
        p.seed = 21;
        let mut c = Collect::default();
        run(&p, &named(&["a"]), "e", &mut c, &AtomicBool::new(false));
        // "a" fails its first two units and is given up: a placeholder for each later scenario.
        let seen: Vec<String> = c.recs.iter().map(|r| r.scenario.clone()).collect();
        let want: Vec<String> = p.sweep_order(0).iter().map(|&i| p.scenarios[i].name.clone()).collect();
        assert_eq!(seen, want);
        assert_ne!(want, ["cpu", "mem-bw", "syscall", "net-rr", "disk"], "seed 21 happens to keep the plan's order");
    }

    #[test]
    fn sweeps_run_every_round_of_every_scenario_once_spread_over_the_run() {
        let mut p =
            Plan::new(Profile::Full, vec![], Some(&["startup-serial".into(), "cpu".into(), "density".into()])).unwrap();
        p.seed = 5;
        let mut seen: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for sweep in 0..p.sweeps() {
            let order = p.sweep_order(sweep);
            for &i in &order {
                seen.entry(p.scenarios[i].name.clone()).or_default().push(sweep);
            }
            if sweep > 0 && order.len() > 2 {
                assert_ne!(order, p.sweep_order(sweep - 1), "sweep {sweep} repeats the order before it");
            }
        }
        for sc in &p.scenarios {
            let want: Vec<u32> = (0..p.rounds_of(sc)).collect();
            assert_eq!(seen[&sc.name], want, "{}: round r in sweep r, each once", sc.name);
        }
        assert_eq!(p.sweeps(), p.scenarios.iter().map(|sc| p.rounds_of(sc)).max().unwrap());
        let d = p.design(&["native".into()]);
        assert_eq!(d.schedule, crate::record::Schedule::Sweeps);
        assert_eq!(d.sweep_orders.len(), p.sweeps() as usize);
        assert!(d.block_order.is_empty());
        assert!(p.scenarios.iter().any(|sc| sc.churns()) && p.scenarios.iter().any(|sc| !sc.churns()));
    }

    #[test]
    fn a_failed_warm_up_is_kept_and_counts_towards_giving_up() {
        let mut p = plan(&["cpu"]);
        p.warmup_units = 1;
        let mut c = Collect::default();
        run(&p, &[Slot::Ready(Box::new(Broken))], "e", &mut c, &AtomicBool::new(false));
        assert!(c.recs[0].notes.iter().any(|n| n.starts_with("warm-up unit")), "{:?}", c.recs[0].notes);
        // warm-up + one measured failure reach the limit of two.
        assert_eq!(c.order.len(), 2);
    }
}
