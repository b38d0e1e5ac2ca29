//! The design of experiments of a bench run: the seeded shuffle of the
//! scenarios within each sweep and of the backends' order within each round, and CPU
//! pinning (harness on one CPU, the instance on another). Ordering is a pure
//! function of the seed; the pinning sets only this process's own state and
//! that of the daemons it started. The quiet-host gate is `quiet.rs`.

use std::path::Path;

use crate::record::Pinning;
use crate::stats::{seed_of, SplitMix64};

/// The order in which `n` backends run in round `round` of `scenario`: a
/// Fisher–Yates shuffle drawn from `seed`, the scenario and the round, so the
/// same seed always gives the same orders and every round its own.
pub fn round_order(seed: u64, scenario: &str, round: u32, n: usize) -> Vec<usize> {
    shuffled(SplitMix64::new(seed ^ seed_of(&format!("{scenario}#{round}"))), n)
}

fn shuffled(mut rng: SplitMix64, n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
}

/// The order in which `n` scenarios run their round in sweep `sweep`: a Fisher–Yates shuffle of
/// `0..n` drawn from `seed` and the sweep, so no family always follows the same one (the cpu
/// round right after density-50's churn, say) and every sweep has its own order.
pub fn sweep_order(seed: u64, sweep: u32, n: usize) -> Vec<usize> {
    shuffled(SplitMix64::new(seed ^ seed_of(&format!("sweep#{sweep}"))), n)
}

/// A seed for a run that did not ask for one: the clock's nanoseconds.
pub fn fresh_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
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
    fn own_children_sees_a_child_until_it_is_reaped() {
        let mut c = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let pid = c.id() as i32;
        assert!(own_children(Path::new("/proc/self")).contains(&pid));
        c.kill().unwrap();
        c.wait().unwrap();
        assert!(!own_children(Path::new("/proc/self")).contains(&pid));
    }

    #[test]
    fn sweep_order_is_a_seeded_permutation_of_its_own_per_sweep() {
        let a = sweep_order(3, 0, 12);
        assert_ne!(sweep_order(3, 1, 12), a, "the next sweep has its own order");
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..12).collect::<Vec<_>>());
        assert_eq!(sweep_order(3, 0, 12), a);
        assert_ne!(sweep_order(4, 0, 12), a);
    }

    #[test]
    fn pinning_needs_two_cpus() {
        assert_eq!(default_pinning(&[0]), None);
        assert_eq!(default_pinning(&[0, 1, 2]), Some(Pinning { harness_cpu: 0, instance_cpu: 2 }));
    }
}
