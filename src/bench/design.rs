//! The design of experiments of a bench run: the seeded shuffle of the
//! backends' order within each round, the quiet-host gate before each unit
//! (bounded wait for the load average and for the previous unit's children),
//! and CPU pinning (harness on one CPU, the instance on another). Ordering
//! is a pure function of the seed; the gate and the pinning read and set
//! only this process's own state.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::record::Pinning;
use crate::stats::{seed_of, SplitMix64};

/// The order in which `n` backends run in round `round` of `scenario`: a
/// Fisher–Yates shuffle drawn from `seed`, the scenario and the round, so the
/// same seed always gives the same orders and every round its own.
pub fn round_order(seed: u64, scenario: &str, round: u32, n: usize) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed ^ seed_of(&format!("{scenario}#{round}")));
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
}

/// A seed for a run that did not ask for one: the clock's nanoseconds.
pub fn fresh_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
}

/// The 1-minute load average from a `/proc/loadavg` text.
pub fn parse_loadavg1(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

fn loadavg1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok().as_deref().and_then(parse_loadavg1)
}

/// Live children of this process (any thread's), from
/// `/proc/self/task/*/children`.
pub fn own_children(proc_self: &Path) -> Vec<i32> {
    let mut v = Vec::new();
    let Ok(tasks) = std::fs::read_dir(proc_self.join("task")) else { return v };
    for t in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
            v.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// The quiet-host gate's limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuietGate {
    /// Wait while the 1-minute load average is above this.
    pub max_load: f64,
    /// Wait at most this long for the load average; the previous unit's
    /// children get [`CHILDREN_WAIT_FACTOR`] times as long.
    pub max_wait: Duration,
}

/// How much longer than for the load the gate waits for children: a
/// leftover child is the previous unit still running, the load average is
/// only a slow average of the whole host.
pub const CHILDREN_WAIT_FACTOR: u32 = 10;

/// What the gate waited for before one unit.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Waited {
    pub waited: Duration,
    pub loadavg1: Option<f64>,
    /// Children still alive when the wait ended (0 when they were gone).
    pub children_left: usize,
    /// The wait hit its bound.
    pub timed_out: bool,
}

impl QuietGate {
    /// Wait until the previous unit's children are gone and the load average
    /// is at most `max_load`, within the bounds. `known`: the children alive
    /// before the previous unit started (the harness's own daemons: dockerd,
    /// the registry), which are not the unit's leftovers.
    pub fn wait(&self, known: &[i32]) -> Waited {
        let t0 = Instant::now();
        loop {
            let children = own_children(Path::new("/proc/self")).iter().filter(|p| !known.contains(p)).count();
            let load = loadavg1();
            let calm = load.is_none_or(|l| l <= self.max_load);
            let waited = t0.elapsed();
            let done =
                (children == 0 && (calm || waited >= self.max_wait)) || waited >= self.max_wait * CHILDREN_WAIT_FACTOR;
            if done {
                let timed_out = !(children == 0 && calm);
                return Waited { waited, loadavg1: load, children_left: children, timed_out };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The pinning to use on a host with `cpus` CPUs: the harness on the first,
/// instances on the last; none on a single CPU.
pub fn default_pinning(cpus: &[usize]) -> Option<Pinning> {
    match (cpus.first(), cpus.last()) {
        (Some(&h), Some(&i)) if h != i => Some(Pinning { harness_cpu: h, instance_cpu: i }),
        _ => None,
    }
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    let Ok(set) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) else { return Vec::new() };
    (0..nix::sched::CpuSet::count()).filter(|c| set.is_set(*c).unwrap_or(false)).collect()
}

/// Pin the calling thread to `cpu` (threads and processes it starts later
/// inherit it).
pub fn pin_current_thread(cpu: usize) -> Result<(), nix::Error> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_order_is_a_permutation_reproducible_from_the_seed() {
        let a = round_order(7, "cpu", 0, 8);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..8).collect::<Vec<_>>());
        assert_eq!(round_order(7, "cpu", 0, 8), a);
    }

    #[test]
    fn rounds_and_seeds_get_different_orders() {
        let orders: Vec<Vec<usize>> = (0..10).map(|r| round_order(7, "cpu", r, 8)).collect();
        assert!(orders.iter().any(|o| *o != orders[0]), "every round had the same order");
        assert_ne!(round_order(1, "cpu", 0, 8), round_order(2, "cpu", 0, 8));
    }

    #[test]
    fn every_backend_leads_some_round() {
        // Native must not always run first (or last): over many rounds each
        // position is taken by each backend.
        let mut first = [0u32; 4];
        for r in 0..400 {
            first[round_order(99, "net-rr", r, 4)[0]] += 1;
        }
        assert!(first.iter().all(|&c| c > 60), "{first:?}");
    }

    #[test]
    fn loadavg_parses_the_first_field() {
        assert_eq!(parse_loadavg1("0.52 0.40 0.30 1/200 999\n"), Some(0.52));
        assert_eq!(parse_loadavg1(""), None);
    }

    #[test]
    fn own_children_sees_a_child_until_it_is_reaped() {
        let mut c = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let pid = c.id() as i32;
        assert!(own_children(Path::new("/proc/self")).contains(&pid));
        c.kill().unwrap();
        c.wait().unwrap();
        assert!(!own_children(Path::new("/proc/self")).contains(&pid));
    }

    #[test]
    fn quiet_gate_waits_at_most_its_bound() {
        let mut c = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let gate = QuietGate { max_load: f64::INFINITY, max_wait: Duration::from_millis(20) };
        let w = gate.wait(&[]);
        // A child known before the unit (a daemon of the harness) is not waited for.
        let daemon = gate.wait(&own_children(Path::new("/proc/self")));
        c.kill().unwrap();
        c.wait().unwrap();
        assert!(w.timed_out && w.children_left >= 1, "{w:?}");
        assert!(daemon.children_left == 0 && daemon.waited < Duration::from_millis(150), "{daemon:?}");
        // Children get ten times the load's bound (200 ms), not forever.
        assert!(w.waited >= Duration::from_millis(200) && w.waited < Duration::from_secs(3), "{w:?}");
    }

    #[test]
    fn a_busy_host_costs_at_most_the_load_bound() {
        let w = QuietGate { max_load: -1.0, max_wait: Duration::from_millis(50) }.wait(&[]);
        assert!(w.timed_out);
        // It gives up (a 50 ms bound, polled): seconds, not forever, even on a loaded host,
        // where this thread's sleeps overrun (seen at 450 ms with the test host running).
        assert!(w.waited < Duration::from_secs(5), "{w:?}");
    }

    #[test]
    fn pinning_needs_two_cpus() {
        assert_eq!(default_pinning(&[0]), None);
        assert_eq!(default_pinning(&[0, 1, 2]), Some(Pinning { harness_cpu: 0, instance_cpu: 2 }));
    }
}
