//! How long a plan will take, estimated from a previous run's result set. Each unit of the
//! prior run costs the time from its start to the next unit's start in the same block, less
//! the quiet-host gate's wait before that next unit (the last unit of a block: its own end);
//! a scenario × backend cell costs its mean unit times the plan's rounds. A backend the prior
//! did not run in a scenario is assumed to cost that scenario's mean over the backends it ran
//! (the estimate counts them); a backend this host rules out costs nothing (one placeholder
//! record). The gate (a calm host: one steal window per unit; a busy one: every unit waits
//! the bound) and the cool-downs are added. A density unit of a prior that held every instance
//! a fixed time (before the group hold) is rescaled: its time from the last READY to its end
//! becomes the plan's window (its teardown is not counted then). Sizes that changed since the prior run are not
//! rescaled: the estimate names the scenarios whose arguments differ and those it has no
//! prior for.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::plan::{Plan, Scenario};
use crate::backend::BackendId;
use crate::record::RunRecord;

/// One scenario's share of the estimate.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub scenario: String,
    /// Mean seconds per unit over the backends counted (`None`: the prior had no such scenario).
    pub unit_secs: Option<f64>,
    /// Measured rounds plus warm-up units per cell.
    pub rounds: u32,
    /// Backends that will run units here.
    pub backends: usize,
    /// Of those, backends the prior did not run here (costed at the prior's mean).
    pub assumed: usize,
    /// The prior ran this scenario with other arguments (not rescaled).
    pub sizes_changed: bool,
    pub secs: f64,
}

/// The whole estimate.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    pub lines: Vec<Line>,
    /// Units run, the pauses after rounds that churn, and the gate when the host is calm (one steal
    /// window per unit) and when it is never calm (every unit waits the bound).
    pub units: u64,
    /// Backend × scenario cells that will run units.
    pub cells: u64,
    pub cooldown_secs: f64,
    pub gate_calm_secs: f64,
    pub gate_busy_secs: f64,
}

impl Estimate {
    /// Units and cool-downs plus a calm host's gate.
    pub fn expected(&self) -> Duration {
        Duration::from_secs_f64(self.base() + self.gate_calm_secs)
    }

    /// As [`Estimate::expected`], with every unit waiting the gate's full bound.
    pub fn worst(&self) -> Duration {
        Duration::from_secs_f64(self.base() + self.gate_busy_secs)
    }

    fn base(&self) -> f64 {
        self.lines.iter().map(|l| l.secs).sum::<f64>() + self.cooldown_secs
    }

    /// Scenarios the prior did not have.
    pub fn without_prior(&self) -> Vec<&str> {
        self.lines.iter().filter(|l| l.unit_secs.is_none() && l.backends > 0).map(|l| l.scenario.as_str()).collect()
    }

    /// Scenarios the prior ran with other arguments.
    pub fn resized(&self) -> Vec<&str> {
        self.lines.iter().filter(|l| l.sizes_changed).map(|l| l.scenario.as_str()).collect()
    }
}

/// One unit of the prior run: when it started and ended, and the gate's wait before it.
struct Unit {
    backend: String,
    start_ms: f64,
    end_ms: f64,
    gate_ms: f64,
    /// The last READY of a batch.
    last_ready_ms: Option<f64>,
    /// A density unit that recorded its window (run with the group hold).
    windowed: bool,
}

/// The prior's units of each scenario (a batch's instances are one unit), in start order.
fn prior_units(prior: &[RunRecord]) -> BTreeMap<&str, Vec<Unit>> {
    let mut by: BTreeMap<(&str, &str, u32), Unit> = BTreeMap::new();
    for r in prior.iter().filter(|r| r.started_unix_ms > 0) {
        let start = r.started_unix_ms as f64;
        let end = start + r.host.launch_to_exit_ns.unwrap_or(0) as f64 / 1e6;
        let u = by.entry((r.scenario.as_str(), r.backend.as_str(), r.iteration)).or_insert(Unit {
            backend: r.backend.clone(),
            start_ms: start,
            end_ms: end,
            gate_ms: 0.0,
            last_ready_ms: None,
            windowed: false,
        });
        u.start_ms = u.start_ms.min(start);
        u.end_ms = u.end_ms.max(end);
        if let Some(ns) = r.host.launch_to_ready_ns {
            let ready = start + ns as f64 / 1e6;
            u.last_ready_ms = Some(u.last_ready_ms.map_or(ready, |t: f64| t.max(ready)));
        }
        u.windowed |= r.extra.contains_key("density_window_ms");
        u.gate_ms = u.gate_ms.max(r.extra.get("quiet_wait_ms").copied().unwrap_or(0.0));
    }
    let mut out: BTreeMap<&str, Vec<Unit>> = BTreeMap::new();
    for ((sc, _, _), u) in by {
        out.entry(sc).or_default().push(u);
    }
    for v in out.values_mut() {
        v.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
    }
    out
}

/// Mean seconds per unit of each backend in one scenario of the prior. `window`: a density
/// scenario's window in the plan; a prior density unit that held each instance a fixed time
/// instead (before the group hold) has its time from the last READY to its end replaced by it.
fn unit_costs(units: &[Unit], window: Option<Duration>) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<String, (f64, u32)> = BTreeMap::new();
    for (k, u) in units.iter().enumerate() {
        let mut ms = match units.get(k + 1) {
            Some(next) => next.start_ms - u.start_ms - next.gate_ms,
            None => u.end_ms - u.start_ms,
        };
        if let (Some(w), Some(up), false) = (window, u.last_ready_ms, u.windowed) {
            ms -= (u.end_ms - up).max(0.0) - w.as_secs_f64() * 1e3;
        }
        let e = sums.entry(u.backend.clone()).or_insert((0.0, 0));
        e.0 += ms.max(0.0) / 1e3;
        e.1 += 1;
    }
    sums.into_iter().map(|(b, (s, n))| (b, s / f64::from(n))).collect()
}

/// Whether the prior ran `sc` with other workload arguments (a record's arguments are the
/// scenario's followed by what the backend added, such as the peer's address).
fn resized(sc: &Scenario, prior: &[RunRecord]) -> bool {
    prior.iter().any(|r| r.scenario == sc.name && r.started_unix_ms > 0 && !r.args.starts_with(&sc.args))
}

/// Estimate `plan` from a prior run's records; `ruled_out` are the plan's backends that will
/// not run here (each costs one placeholder record, no time).
pub fn estimate(plan: &Plan, prior: &[RunRecord], ruled_out: &BTreeSet<String>) -> Estimate {
    let units_by = prior_units(prior);
    let mut lines = Vec::new();
    let (mut units, mut cells) = (0u64, 0u64);
    for sc in &plan.scenarios {
        let window = matches!(sc.shape, super::plan::Shape::Density { .. }).then_some(plan.density_window);
        let costs = units_by.get(sc.name.as_str()).map(|u| unit_costs(u, window)).unwrap_or_default();
        let mean = (!costs.is_empty()).then(|| costs.values().sum::<f64>() / costs.len() as f64);
        let running: Vec<&String> = plan
            .backends
            .iter()
            .filter(|b| !ruled_out.contains(*b))
            .filter(|b| b.parse::<BackendId>().is_ok_and(|id| super::plan::not_applicable(sc, id).is_none()))
            .collect();
        let r = plan.warmup_for(sc) + sc.iterations;
        let secs_per_round: f64 = running.iter().map(|b| costs.get(*b).copied().or(mean).unwrap_or(0.0)).sum();
        let assumed = running.iter().filter(|b| !costs.contains_key(**b)).count();
        units += u64::from(r) * running.len() as u64;
        cells += running.len() as u64;
        lines.push(Line {
            scenario: sc.name.clone(),
            unit_secs: mean.map(|_| if running.is_empty() { 0.0 } else { secs_per_round / running.len() as f64 }),
            rounds: r,
            backends: running.len(),
            assumed: if mean.is_some() { assumed } else { 0 },
            sizes_changed: resized(sc, prior),
            secs: secs_per_round * f64::from(r),
        });
    }
    let gate = plan.quiet;
    // A cool-down follows every round of a scenario that churns (bar the run's very last round).
    let churn_rounds: u32 =
        plan.scenarios.iter().zip(&lines).filter(|(sc, l)| sc.churns() && l.backends > 0).map(|(_, l)| l.rounds).sum();
    Estimate {
        lines,
        units,
        cells,
        cooldown_secs: plan.cooldown.as_secs_f64() * f64::from(churn_rounds),
        gate_calm_secs: units as f64 * gate.window.as_secs_f64(),
        gate_busy_secs: units as f64 * (gate.max_wait + gate.window).as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::Profile;

    fn rec(backend: &str, scenario: &str, iteration: u32, start_ms: u64, run_ms: u64) -> RunRecord {
        let mut r = RunRecord { backend: backend.into(), scenario: scenario.into(), iteration, ..Default::default() };
        r.started_unix_ms = start_ms;
        r.host.launch_to_exit_ns = Some(run_ms * 1_000_000);
        r
    }

    fn cpu_args() -> Vec<String> {
        crate::bench::plan::scenarios(Profile::Full).into_iter().find(|s| s.name == "cpu").unwrap().args
    }

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    #[test]
    fn each_backend_costs_its_own_units_times_the_plans_rounds() {
        // native's units take 1 s, container's 3 s (the gap to the next unit's start).
        let mut prior = vec![
            rec("native", "cpu", 0, 1_000, 900),
            rec("container", "cpu", 0, 2_000, 2_900),
            rec("native", "cpu", 1, 5_000, 900),
        ];
        prior.push(rec("container", "cpu", 1, 6_000, 3_000));
        for r in &mut prior {
            r.args = cpu_args();
        }
        let mut plan =
            Plan::new(Profile::Full, vec!["native".into(), "container".into()], Some(&["cpu".to_string()])).unwrap();
        plan.cooldown = Duration::from_secs(5);
        let e = estimate(&plan, &prior, &none());
        let cpu = &e.lines[0];
        // Full: 10 measured rounds and 1 warm-up, 2 backends: (1 + 3) s a round.
        assert_eq!((cpu.rounds, cpu.backends, cpu.assumed), (11, 2, 0));
        assert_eq!(cpu.secs, 4.0 * 11.0);
        assert_eq!(cpu.unit_secs, Some(2.0));
        assert!(!cpu.sizes_changed);
        assert_eq!((e.units, e.cells), (22, 2));
        assert_eq!(e.cooldown_secs, 0.0, "cpu runs one instance at a time: no pause after its rounds");
        assert!(e.worst() > e.expected());
    }

    #[test]
    fn the_gates_wait_before_a_unit_is_not_the_previous_units_cost() {
        let mut prior = vec![rec("native", "cpu", 0, 1_000, 900), rec("native", "cpu", 1, 7_000, 1_000)];
        prior[1].extra.insert("quiet_wait_ms".into(), 5_000.0);
        let plan = Plan::new(Profile::Full, vec!["native".into()], Some(&["cpu".to_string()])).unwrap();
        let e = estimate(&plan, &prior, &none());
        assert_eq!(e.lines[0].unit_secs, Some(1.0));
    }

    #[test]
    fn a_new_backend_is_assumed_at_the_mean_and_a_ruled_out_one_costs_nothing() {
        let prior = vec![rec("native", "cpu", 0, 1_000, 1_000), rec("container", "cpu", 0, 2_000, 3_000)];
        let backends = vec!["native".into(), "container".into(), "runc".into(), "qemu".into()];
        let plan = Plan::new(Profile::Full, backends, Some(&["cpu".to_string()])).unwrap();
        let e = estimate(&plan, &prior, &BTreeSet::from(["qemu".to_string()]));
        let cpu = &e.lines[0];
        assert_eq!((cpu.backends, cpu.assumed), (3, 1));
        // native 1 s + container 3 s + runc at their mean, 2 s.
        assert_eq!(cpu.secs, 6.0 * 11.0);
        assert!(cpu.sizes_changed, "the prior's records carry no arguments, the plan's cpu has some");
        assert_eq!(e.resized(), ["cpu"]);
    }

    #[test]
    fn a_variant_adds_units_only_where_it_applies() {
        let prior = vec![rec("native", "net-rr", 0, 1_000, 1_000), rec("native", "cpu", 0, 5_000, 2_000)];
        let backends = vec!["native".into(), "container-hostnet".into()];
        let plan = Plan::new(Profile::Full, backends, Some(&["net-rr".to_string(), "cpu".to_string()])).unwrap();
        let e = estimate(&plan, &prior, &none());
        let by: BTreeMap<&str, usize> = e.lines.iter().map(|l| (l.scenario.as_str(), l.backends)).collect();
        assert_eq!((by["net-rr"], by["cpu"]), (2, 1));
        assert_eq!(e.cells, 3);
    }

    #[test]
    fn a_fixed_hold_density_unit_is_rescaled_to_the_window_and_a_windowed_one_is_not() {
        // Two 10-instance units: all READY 1 s after their start, the first held 5 s past that
        // (fixed hold), the second recorded its window.
        let mut prior = Vec::new();
        for (it, start, windowed) in [(0, 1_000, false), (1, 10_000, true)] {
            let mut r = rec("native", "density-10", it, start, 6_000);
            r.host.launch_to_ready_ns = Some(1_000_000_000);
            if windowed {
                r.extra.insert("density_window_ms".into(), 5_000.0);
            }
            prior.push(r);
        }
        let plan = Plan::new(Profile::Full, vec!["native".into()], Some(&["density".to_string()])).unwrap();
        let e = estimate(&plan, &prior, &none());
        let d10 = e.lines.iter().find(|l| l.scenario == "density-10").unwrap();
        // Unit 0: 9 s to the next start, 5 s of it after the last READY: 4 s + the 2 s window.
        // Unit 1 (the block's last): its own 6 s.
        assert_eq!(plan.density_window, Duration::from_secs(2));
        assert_eq!(d10.unit_secs, Some((6.0 + 6.0) / 2.0));
    }

    #[test]
    fn a_scenario_the_prior_lacks_is_named() {
        let plan = Plan::new(Profile::Full, vec!["native".into()], Some(&["disk".to_string()])).unwrap();
        let e = estimate(&plan, &[], &none());
        assert_eq!(e.without_prior(), ["disk"]);
        assert_eq!(e.lines[0].secs, 0.0);
    }
}
