//! How long a plan will take, estimated from a previous run's result set: each
//! scenario block's wall time there, divided by its rounds and by the
//! backends that ran in it, is the time of one unit slot; the plan's rounds
//! and backends scale it, and the gate's and the cool-downs' time is added.
//! Sizes that changed since that run are not rescaled (the estimate says which
//! scenarios it had no prior for).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::plan::Plan;
use crate::backend::BackendId;
use crate::record::{Design, RunRecord};

/// One scenario's share of the estimate.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub scenario: String,
    /// Seconds per unit slot in the prior run (`None`: the prior had no such scenario).
    pub slot_secs: Option<f64>,
    pub rounds: u32,
    pub backends: usize,
    pub secs: f64,
}

/// The whole estimate.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    pub lines: Vec<Line>,
    /// Units run, the pauses between blocks, and the gate when the host is calm (one steal
    /// window per unit) and when it is never calm (every unit waits the bound).
    pub units: u64,
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
}

/// Rounds per scenario in a prior run's design (`scenario#round: ...`).
fn prior_rounds(design: &Design) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for o in &design.orders {
        if let Some((sc, _)) = o.split_once('#') {
            *m.entry(sc.to_string()).or_insert(0) += 1;
        }
    }
    m
}

/// Per scenario of the prior run: its block's wall time (s) and the backends that ran in it.
fn prior_blocks(records: &[RunRecord]) -> BTreeMap<String, (f64, BTreeSet<String>)> {
    let mut span: BTreeMap<String, (u64, f64, BTreeSet<String>)> = BTreeMap::new();
    for r in records.iter().filter(|r| r.started_unix_ms > 0) {
        let end = r.started_unix_ms as f64 + r.host.launch_to_exit_ns.unwrap_or(0) as f64 / 1e6;
        let e = span.entry(r.scenario.clone()).or_insert((u64::MAX, 0.0, BTreeSet::new()));
        e.0 = e.0.min(r.started_unix_ms);
        e.1 = e.1.max(end);
        e.2.insert(r.backend.clone());
    }
    span.into_iter().map(|(k, (t0, t1, b))| (k, ((t1 - t0 as f64) / 1e3, b))).collect()
}

/// Estimate `plan` from a prior run's design and records.
pub fn estimate(plan: &Plan, prior_design: &Design, prior: &[RunRecord]) -> Estimate {
    let rounds = prior_rounds(prior_design);
    let blocks = prior_blocks(prior);
    let mut lines = Vec::new();
    let mut units = 0u64;
    for sc in &plan.scenarios {
        let (slot_secs, ran) = match (blocks.get(&sc.name), rounds.get(&sc.name)) {
            (Some((secs, ran)), Some(&r)) if r > 0 && !ran.is_empty() => {
                (Some(secs / (f64::from(r) * ran.len() as f64)), ran.clone())
            }
            _ => (None, BTreeSet::new()),
        };
        // The prior run's backends that ran here, plus the plan's new ones that apply.
        let new = plan.backends.iter().filter(|b| !ran.contains(*b)).filter(|b| {
            b.parse::<BackendId>().is_ok_and(|id| super::plan::not_applicable(sc, id).is_none())
                && prior.iter().all(|r| r.backend != **b)
        });
        let backends = ran.len() + new.count();
        let r = plan.warmup_for(sc) + sc.iterations;
        units += u64::from(r) * backends as u64;
        lines.push(Line {
            scenario: sc.name.clone(),
            slot_secs,
            rounds: r,
            backends,
            secs: slot_secs.unwrap_or(0.0) * f64::from(r) * backends as f64,
        });
    }
    let gate = plan.quiet;
    Estimate {
        lines,
        units,
        cooldown_secs: plan.cooldown.as_secs_f64() * plan.scenarios.len().saturating_sub(1) as f64,
        gate_calm_secs: units as f64 * gate.window.as_secs_f64(),
        gate_busy_secs: units as f64 * (gate.max_wait + gate.window).as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::Profile;

    fn rec(backend: &str, scenario: &str, start_ms: u64, run_ms: u64) -> RunRecord {
        let mut r = RunRecord { backend: backend.into(), scenario: scenario.into(), ..Default::default() };
        r.started_unix_ms = start_ms;
        r.host.launch_to_exit_ns = Some(run_ms * 1_000_000);
        r
    }

    #[test]
    fn a_block_scales_by_rounds_and_backends() {
        // Prior: cpu, 2 rounds x 2 backends in 8 s, so 2 s a slot.
        let design = Design { orders: vec!["cpu#0: a,b".into(), "cpu#1: b,a".into()], ..Default::default() };
        let prior = [rec("native", "cpu", 1_000, 1_000), rec("container", "cpu", 8_000, 1_000)];
        let mut plan =
            Plan::new(Profile::Full, vec!["native".into(), "container".into()], Some(&["cpu".to_string()])).unwrap();
        plan.cooldown = Duration::from_secs(5);
        let e = estimate(&plan, &design, &prior);
        let cpu = &e.lines[0];
        assert_eq!(cpu.slot_secs, Some(2.0));
        // Full: 10 measured rounds and 1 warm-up, 2 backends.
        assert_eq!((cpu.rounds, cpu.backends), (11, 2));
        assert_eq!(cpu.secs, 2.0 * 11.0 * 2.0);
        assert_eq!(e.units, 22);
        assert_eq!(e.cooldown_secs, 0.0, "one block, no pause");
        assert!(e.worst() > e.expected());
    }

    #[test]
    fn a_new_variant_adds_slots_only_where_it_applies() {
        let design = Design { orders: vec!["net-rr#0: a".into(), "cpu#0: a".into()], ..Default::default() };
        let prior = [rec("native", "net-rr", 1_000, 1_000), rec("native", "cpu", 5_000, 2_000)];
        let backends = vec!["native".into(), "container-hostnet".into()];
        let plan = Plan::new(Profile::Full, backends, Some(&["net-rr".to_string(), "cpu".to_string()])).unwrap();
        let e = estimate(&plan, &design, &prior);
        let by: BTreeMap<&str, usize> = e.lines.iter().map(|l| (l.scenario.as_str(), l.backends)).collect();
        assert_eq!(by["net-rr"], 2);
        assert_eq!(by["cpu"], 1);
    }
}
