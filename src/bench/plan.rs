//! What the `cvbench bench` matrix measures: the scenarios, their workload
//! arguments and iteration counts for the quick and full profiles, and the
//! per-cell time budget. Sizes are the same for every backend so the cells of
//! one row compare like with like; they are chosen so the slowest backend
//! here (microvm-bare, where every system call is a VM exit emulated in
//! software) still fits the budget.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How many instances a unit of a scenario starts and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Shape {
    /// One instance per unit.
    Single,
    /// N instances launched at once (startup-parallel).
    Parallel { n: u32 },
    /// N idle instances up at once; host memory growth is measured (density).
    Density { n: u32 },
    /// One `idle` instance inspected from the host (security surface).
    Surface,
    /// Pull from the private registry into an empty store, then start (bench/cold_start.rs).
    ColdStart,
    /// Overlay cost of an image this many layers deep (bench/image_depth.rs).
    ImageDepth { layers: u32 },
}

/// Families the quick matrix runs only when `--workloads` names them: they need the private
/// registry and move 64 MiB images, which would double the quick matrix's time.
pub const QUICK_OPT_IN: &[&str] = &["cold-start", "image-depth"];

/// Why `backend` has no cell in a scenario of this shape (written once, not run).
pub fn not_applicable(shape: Shape, backend: &str) -> Option<String> {
    match shape {
        Shape::ColdStart => super::cold_start::not_applicable(backend),
        Shape::ImageDepth { .. } => super::image_depth::not_applicable(backend),
        _ => None,
    }
}

/// One row family of the matrix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Recorded in every `RunRecord.scenario` (e.g. `startup-parallel-10`).
    pub name: String,
    /// The family `--workloads` selects by (e.g. `startup-parallel`).
    pub family: String,
    pub workload: String,
    pub args: Vec<String>,
    pub shape: Shape,
    /// Units per backend (a unit is one run, or one batch of N).
    pub iterations: u32,
    /// For `idle`: how long each instance stays up after READY.
    pub hold: Duration,
    pub sample_footprint: bool,
}

/// The sizes of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Quick,
    Full,
}

/// Every scenario family, in the order the matrix runs them.
pub const FAMILIES: &[&str] = &[
    "surface",
    "startup-serial",
    "startup-parallel",
    "footprint",
    "density",
    "cpu",
    "mem-bw",
    "mem-touch",
    "syscall",
    "net-stream",
    "net-rr",
    "disk",
    "cold-start",
    "image-depth",
];

/// The whole matrix: which scenarios on which backends, with what limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub profile: Profile,
    pub backends: Vec<String>,
    pub scenarios: Vec<Scenario>,
    /// A cell (backend × scenario) stops starting units after this much time.
    pub cell_budget: Duration,
    /// Kill an instance that runs longer than this.
    pub run_timeout: Duration,
    /// Pause between consecutive units, identical for every backend.
    pub spacing: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("unknown scenario family {0:?} (known: {1})")]
    UnknownFamily(String, String),
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn single(family: &str, workload: &str, a: &[&str], iterations: u32) -> Scenario {
    Scenario {
        name: family.to_string(),
        family: family.to_string(),
        workload: workload.to_string(),
        args: args(a),
        shape: Shape::Single,
        iterations,
        hold: Duration::ZERO,
        sample_footprint: false,
    }
}

/// All scenarios of a profile.
pub fn scenarios(profile: Profile) -> Vec<Scenario> {
    let q = profile == Profile::Quick;
    let pick = |quick: u32, full: u32| if q { quick } else { full };
    let mut v = vec![
        Scenario { shape: Shape::Surface, ..single("surface", "idle", &[], 1) },
        single("startup-serial", "noop", &[], pick(8, 40)),
    ];
    let parallel_ns: &[u32] = if q { &[1, 10] } else { &[1, 10, 50] };
    for &n in parallel_ns {
        v.push(Scenario {
            name: format!("startup-parallel-{n}"),
            family: "startup-parallel".into(),
            shape: Shape::Parallel { n },
            iterations: if n > 1 { pick(1, 4) } else { pick(2, 4) },
            ..single("startup-parallel", "noop", &[], 0)
        });
    }
    v.push(Scenario {
        hold: Duration::from_millis(300),
        sample_footprint: true,
        ..single("footprint", "idle", &[], pick(3, 5))
    });
    let density_ns: &[u32] = if q { &[10] } else { &[1, 10, 50] };
    for &n in density_ns {
        v.push(Scenario {
            name: format!("density-{n}"),
            family: "density".into(),
            shape: Shape::Density { n },
            iterations: pick(1, 2),
            // Long enough for the last of N launches to be READY while the
            // first is still up: a fixed floor plus a per-instance allowance
            // (docker's 50 launches spread over ~15 s here).
            hold: Duration::from_millis(if q { 800 + 300 * u64::from(n) } else { 1500 + 400 * u64::from(n) }),
            sample_footprint: true,
            ..single("density", "idle", &[], 0)
        });
    }
    let it = pick(3, 5);
    if q {
        v.push(single("cpu", "cpu", &["--sha-mib", "4", "--sieve-n", "1000000", "--matmul-n", "80"], it));
        v.push(single("mem-bw", "mem-bw", &["--array-mib", "8", "--iters", "3"], it));
        v.push(single(
            "mem-touch",
            "mem-touch",
            &["--touch-mib", "16", "--chase-mib", "8", "--accesses", "500000"],
            it,
        ));
        v.push(single("syscall", "syscall", &["--iters", "2000"], it));
        v.push(single("net-stream", "net-stream", &["--mib", "16"], it));
        v.push(single("net-rr", "net-rr", &["--requests", "1000"], it));
        v.push(single("disk", "disk", &["--size-mib", "8", "--rand-ops", "64"], it));
    } else {
        v.push(single("cpu", "cpu", &["--sha-mib", "16", "--sieve-n", "4000000", "--matmul-n", "160"], it));
        v.push(single("mem-bw", "mem-bw", &["--array-mib", "32", "--iters", "5"], it));
        v.push(single(
            "mem-touch",
            "mem-touch",
            &["--touch-mib", "64", "--chase-mib", "32", "--accesses", "2000000"],
            it,
        ));
        v.push(single("syscall", "syscall", &["--iters", "20000"], it));
        v.push(single("net-stream", "net-stream", &["--mib", "128"], it));
        v.push(single("net-rr", "net-rr", &["--requests", "5000"], it));
        v.push(single("disk", "disk", &["--size-mib", "32", "--rand-ops", "256"], it));
    }
    v.push(Scenario { shape: Shape::ColdStart, ..single("cold-start", "noop", &[], pick(2, 5)) });
    for &n in super::image_ctx::DEPTHS {
        v.push(Scenario {
            name: format!("image-depth-{n}"),
            shape: Shape::ImageDepth { layers: n },
            ..single("image-depth", "noop", &[], pick(2, 5))
        });
    }
    v
}

impl Plan {
    /// The plan for `profile` on `backends`, restricted to `families` when
    /// given.
    pub fn new(profile: Profile, backends: Vec<String>, families: Option<&[String]>) -> Result<Plan, PlanError> {
        let mut sc = scenarios(profile);
        if let Some(f) = families {
            for name in f {
                if !FAMILIES.contains(&name.as_str()) {
                    return Err(PlanError::UnknownFamily(name.clone(), FAMILIES.join(", ")));
                }
            }
            sc.retain(|s| f.contains(&s.family));
        }
        let q = profile == Profile::Quick;
        if q && families.is_none() {
            sc.retain(|s| !QUICK_OPT_IN.contains(&s.family.as_str()));
        }
        Ok(Plan {
            profile,
            backends,
            scenarios: sc,
            cell_budget: Duration::from_secs(if q { 25 } else { 180 }),
            run_timeout: Duration::from_secs(if q { 8 } else { 60 }),
            spacing: Duration::from_millis(if q { 25 } else { 50 }),
        })
    }

    /// Units the matrix will start at most (for the progress bar).
    pub fn total_units(&self) -> u64 {
        self.scenarios.iter().map(|s| u64::from(s.iterations)).sum::<u64>() * self.backends.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_a_scenario_in_both_profiles() {
        for p in [Profile::Quick, Profile::Full] {
            let sc = scenarios(p);
            for f in FAMILIES {
                assert!(sc.iter().any(|s| s.family == *f), "{f} missing in {p:?}");
            }
        }
    }

    #[test]
    fn full_profile_has_parallel_50() {
        assert!(scenarios(Profile::Full).iter().any(|s| s.shape == Shape::Parallel { n: 50 }));
    }

    #[test]
    fn registry_families_are_opt_in_for_quick_and_in_full() {
        let has = |p: &Plan, f: &str| p.scenarios.iter().any(|s| s.family == f);
        let quick = Plan::new(Profile::Quick, vec!["container".into()], None).unwrap();
        let asked = Plan::new(Profile::Quick, vec!["container".into()], Some(&["cold-start".to_string()])).unwrap();
        let full = Plan::new(Profile::Full, vec!["container".into()], None).unwrap();
        assert!(!has(&quick, "cold-start") && !has(&quick, "image-depth"));
        assert!(has(&asked, "cold-start"));
        assert!(has(&full, "cold-start") && has(&full, "image-depth"));
    }

    #[test]
    fn plan_filters_by_family_and_rejects_unknown_ones() {
        let p = Plan::new(Profile::Quick, vec!["native".into()], Some(&["cpu".to_string()])).unwrap();
        assert_eq!(p.scenarios.len(), 1);
        assert_eq!(p.total_units(), 3);
        assert!(Plan::new(Profile::Quick, vec![], Some(&["gpu".to_string()])).is_err());
    }

    #[test]
    fn syscall_sizes_are_backend_independent_and_small() {
        let s = scenarios(Profile::Full).into_iter().find(|s| s.family == "syscall").unwrap();
        assert_eq!(s.args, vec!["--iters", "20000"]);
    }
}
