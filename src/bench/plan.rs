//! What the `cvbench bench` matrix measures: the scenarios, their workload
//! arguments and iteration counts for the quick and full profiles, and the
//! per-cell time budget. Sizes are the same for every backend so the cells of
//! one row compare like with like; they are chosen so the slowest backend
//! here (microvm-bare, where every system call is a VM exit emulated in
//! software) still fits the budget.

use crate::backend::BackendId;
use crate::workload::Workload;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::quiet::QuietGate;
use super::restore::StartKind;
use super::timeouts::Stretch;
use crate::record::{Design, Pinning, Schedule};

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
    /// The waiting workload started cold or restored from a snapshot (bench/restore.rs).
    RestoreStart { start: StartKind },
    /// N waiting instances at once, cold or restored from one snapshot (bench/restore.rs).
    RestoreDensity { n: u32, start: StartKind },
    /// One swarm made by the run per round, every service size of the round on it
    /// (bench/swarm.rs; one record per size).
    Swarm { sizes: super::swarm::Sizes },
}

impl Shape {
    /// How many instances one unit runs at once.
    pub fn instances(self) -> u32 {
        match self {
            Shape::Parallel { n } | Shape::Density { n } | Shape::RestoreDensity { n, .. } => n,
            _ => 1,
        }
    }
}

/// Families the quick matrix runs only when `--workloads` names them: they need the private
/// registry and move 64 MiB images, which would double the quick matrix's time.
pub const QUICK_OPT_IN: &[&str] = &["cold-start", "image-depth", "restore-start", "swarm"];

/// Families even the full matrix runs only when `--workloads` names them: a swarm round builds
/// five engines and takes minutes (bench/swarm.rs), so the swarm runs as its own bench
/// (`cvbench bench --workloads swarm`, committed in `reports/swarm/`), and its cells are
/// descriptive: docker only, no native to pair with.
pub const FULL_OPT_IN: &[&str] = &["swarm"];

/// Why `backend` has no cell in this scenario (written once, not run).
pub fn not_applicable(sc: &Scenario, backend: BackendId) -> Option<String> {
    if let Some(families) = backend.only_families().filter(|f| !f.contains(&sc.family.as_str())) {
        return Some(format!("{backend} is a variant of container measured only in {}", families.join(", ")));
    }
    match sc.shape {
        Shape::ColdStart => super::cold_start::not_applicable(backend),
        Shape::ImageDepth { .. } => super::image_depth::not_applicable(backend),
        Shape::RestoreStart { start } | Shape::RestoreDensity { start, .. } => {
            super::restore::not_applicable(backend, start)
        }
        Shape::Swarm { .. } => super::swarm::not_applicable(backend),
        Shape::Density { n } if n > DENSITY_ALL_UP_TO => density_stand_in(backend).map(|(by, why)| {
            format!("{backend} runs density up to {DENSITY_ALL_UP_TO} instances: above that {by}'s row stands for it ({why})")
        }),
        _ => None,
    }
}

/// Density with more instances than this runs on a representative subset of the backends.
pub const DENSITY_ALL_UP_TO: u32 = 10;

/// The backend whose density row above [`DENSITY_ALL_UP_TO`] stands for `b`, and why: a
/// variant whose N-instance memory and launch spread are another backend's, left out of the
/// run's most expensive cells (a density-50 unit of docker's engine takes 15-45 s here).
pub fn density_stand_in(b: BackendId) -> Option<(BackendId, &'static str)> {
    match b {
        BackendId::DockerCvbench => {
            Some((BackendId::Docker, "the same engine, dockerd and containerd, with our runtime in place of runc"))
        }
        BackendId::GvisorPtrace | BackendId::GvisorKvm => {
            Some((BackendId::Gvisor, "the same sentry and gofer per sandbox on another system-call platform"))
        }
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
    pub workload: Workload,
    pub args: Vec<String>,
    pub shape: Shape,
    /// Units per backend (a unit is one run, or one batch of N).
    pub iterations: u32,
    /// For `idle`: how long each instance stays up after READY.
    pub hold: Duration,
    pub sample_footprint: bool,
}

impl Scenario {
    /// Whether a round of it starts and tears down many instances or engines at once (parallel,
    /// density, restore density, the swarm): the next scenario's round waits the plan's
    /// cool-down after it.
    pub fn churns(&self) -> bool {
        self.shape.instances() > 1 || matches!(self.shape, Shape::Swarm { .. })
    }
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
    "restore-start",
    "swarm",
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
    /// Seed of the per-round shuffle of the backends' order.
    pub seed: u64,
    /// Units run and discarded before each cell's measured ones (single-
    /// instance scenarios with more than one unit).
    pub warmup_units: u32,
    /// Quiet-host gate before each unit.
    pub quiet: QuietGate,
    /// Pause after a round of a multi-instance scenario ([`Scenario::churns`]), so its churn
    /// (density-50's teardown) has settled before the next scenario's round starts.
    pub cooldown: Duration,
    /// Density: how long the N instances stay up together after the last READY (their memory
    /// is the median over this window).
    pub density_window: Duration,
    /// Harness and instance CPUs, when pinned.
    pub pin: Option<Pinning>,
    /// What stretches `run_timeout` here (instances per CPU, an emulated CPU's slowdown).
    #[serde(default)]
    pub stretch: Stretch,
    /// Drop the page cache before each cold-start pull and image-depth mount (`--drop-caches`).
    #[serde(default)]
    pub drop_caches: bool,
    /// The swarm scenario runs on this swarm the user named instead of one the run makes
    /// (`--swarm-manager`; the manifest records it).
    #[serde(skip)]
    pub swarm: Option<crate::swarm::remote::Target>,
}

/// The quiet-host gate's limit on cpu, io and memory `some avg10` (%).
pub const QUIET_MAX_PSI_PCT: f64 = 10.0;
/// The quiet-host gate's limit on steal time over its window (%).
pub const QUIET_MAX_STEAL_PCT: f64 = 5.0;

/// Measured units per cell in the full profile: rounds are the unit of
/// replication, and ten is the least the report judges a cell on.
pub const FULL_ROUNDS: u32 = 10;

/// Full-profile throughput scenarios are sized so one sample's timed region
/// lasts at least this long natively.
pub const MIN_TIMED_REGION: Duration = Duration::from_millis(100);

/// The one scenario below [`MIN_TIMED_REGION`], and why (recorded in the
/// design): the same count must fit every backend's run timeout.
pub const SYSCALL_EXCEPTION: &str = "syscall: 50000 getppid calls (about 7-14 ms natively): microvm-bare \
     forwards each call to its VMM as one VM exit (the report's syscall row has the run's per-call cost), so the 100 ms count (~750000) would take minutes per unit there; every backend runs the same \
     count";

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("unknown scenario family {0:?} (known: {1})")]
    UnknownFamily(String, String),
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn single(family: &str, workload: Workload, a: &[&str], iterations: u32) -> Scenario {
    Scenario {
        name: family.to_string(),
        family: family.to_string(),
        workload,
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
        Scenario { shape: Shape::Surface, ..single("surface", Workload::Idle, &[], 1) },
        single("startup-serial", Workload::Noop, &[], pick(3, 40)),
    ];
    let parallel_ns: &[u32] = if q { &[1, 10] } else { &[1, 10, 50] };
    for &n in parallel_ns {
        v.push(Scenario {
            name: format!("startup-parallel-{n}"),
            family: "startup-parallel".into(),
            shape: Shape::Parallel { n },
            iterations: pick(1, FULL_ROUNDS),
            ..single("startup-parallel", Workload::Noop, &[], 0)
        });
    }
    v.push(Scenario {
        hold: Duration::from_millis(300),
        sample_footprint: true,
        ..single("footprint", Workload::Idle, &[], pick(2, FULL_ROUNDS))
    });
    // No density-1 in the full profile: one idle instance's memory is the footprint scenario's,
    // and at 10 rounds its 3.5 minutes here would take the full run past its 75-minute bound.
    let density_ns: &[u32] = if q { &[10] } else { &[10, 50] };
    for &n in density_ns {
        v.push(Scenario {
            name: format!("density-{n}"),
            family: "density".into(),
            shape: Shape::Density { n },
            iterations: pick(1, FULL_ROUNDS),
            // The most an instance stays up after its READY while the group waits for the rest
            // (the group hold ends the plan's density window after the last READY): room for a
            // launch spread far past docker's (50 launches spread over 15 s on a calm host here,
            // 45 s under load).
            hold: Duration::from_millis(if q { 3000 + 1000 * u64::from(n) } else { 5000 + 1500 * u64::from(n) }),
            sample_footprint: true,
            ..single("density", Workload::Idle, &[], 0)
        });
    }
    // Quick: two measured units are enough to see a matrix work (a quick run is too small to
    // judge anyway) and keep it under three minutes on a calm host.
    let it = pick(2, FULL_ROUNDS);
    if q {
        v.push(single("cpu", Workload::Cpu, &["--sha-mib", "4", "--sieve-n", "1000000", "--matmul-n", "80"], it));
        v.push(single("mem-bw", Workload::MemBw, &["--array-mib", "8", "--iters", "3"], it));
        v.push(single(
            "mem-touch",
            Workload::MemTouch,
            &["--touch-mib", "16", "--chase-mib", "8", "--accesses", "500000"],
            it,
        ));
        v.push(single("syscall", Workload::Syscall, &["--iters", "2000"], it));
        v.push(single("net-stream", Workload::NetStream, &["--mib", "16"], it));
        v.push(single("net-rr", Workload::NetRr, &["--requests", "1000"], it));
        v.push(single("disk", Workload::Disk, &["--size-mib", "8", "--rand-ops", "64"], it));
    } else {
        // Each timed region lasts at least MIN_TIMED_REGION natively here,
        // sized from the fastest (quietest) native runs seen: SHA-256 16 MiB
        // 85 ms so 32 MiB; sieve 4 M 14 ms so 32 M (prefaulted: 196 ms);
        // matmul n=800 with C prefaulted 99 ms, so n=880 (1.33x the work); a
        // 32 MiB copy x25 95 ms so x30; first touch 2.7 us/page so 192 MiB;
        // O_DIRECT seq read up to 1.3 GB/s (96 MiB in 74 ms) so 160 MiB;
        // 4 KiB random writes, each fsync'd, far slower so 2048; 4 KiB
        // O_DIRECT random reads up to ~29k IOPS (2048 took 70-118 ms) so 6144;
        // TCP up to 20 Gbit/s so 256 MiB; a round trip 14 us so 10000.
        // SYSCALL_EXCEPTION says why getppid is smaller. A record whose
        // shortest region still ran under the minimum says so
        // (extra.timed_region_short).
        v.push(single("cpu", Workload::Cpu, &["--sha-mib", "32", "--sieve-n", "32000000", "--matmul-n", "880"], it));
        v.push(single("mem-bw", Workload::MemBw, &["--array-mib", "32", "--iters", "30"], it));
        v.push(single(
            "mem-touch",
            Workload::MemTouch,
            &["--touch-mib", "192", "--chase-mib", "32", "--accesses", "2000000"],
            it,
        ));
        v.push(single("syscall", Workload::Syscall, &["--iters", "50000"], it));
        v.push(single("net-stream", Workload::NetStream, &["--mib", "256"], it));
        v.push(single("net-rr", Workload::NetRr, &["--requests", "10000"], it));
        v.push(single(
            "disk",
            Workload::Disk,
            &["--size-mib", "160", "--rand-ops", "2048", "--rand-read-ops", "6144"],
            it,
        ));
    }
    v.push(Scenario { shape: Shape::ColdStart, ..single("cold-start", Workload::Noop, &[], pick(2, FULL_ROUNDS)) });
    // The job first-touches 16 MiB: on a restored guest those are the faults of the run.
    let touch = ["--touch-mib", "16", "--chase-mib", "1", "--accesses", "1000"];
    for start in StartKind::ALL {
        v.push(Scenario {
            name: format!("restore-start-{}", start.name()),
            shape: Shape::RestoreStart { start },
            ..single("restore-start", Workload::MemTouch, &touch, pick(3, FULL_ROUNDS))
        });
    }
    // N = 10 in a full run: at 20, gVisor's 20 restores per unit (46.5 s a unit in the committed
    // runs) made restore density a fifth of the whole run; 10 still shares one snapshot's pages.
    let n = pick(5, 10);
    for start in [StartKind::Cold, StartKind::Lazy, StartKind::Restore] {
        v.push(Scenario {
            name: format!("restore-density-{}-{n}", start.name()),
            shape: Shape::RestoreDensity { n, start },
            sample_footprint: true,
            ..single("restore-start", Workload::Noop, &[], pick(1, FULL_ROUNDS))
        });
    }
    for &n in super::image_ctx::DEPTHS {
        v.push(Scenario {
            name: format!("image-depth-{n}"),
            shape: Shape::ImageDepth { layers: n },
            ..single("image-depth", Workload::Noop, &[], pick(2, FULL_ROUNDS))
        });
    }
    let sizes = if q { super::swarm::Sizes::Quick } else { super::swarm::Sizes::Full };
    v.push(Scenario { shape: Shape::Swarm { sizes }, ..single("swarm", Workload::Idle, &[], pick(1, FULL_ROUNDS)) });
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
        if families.is_none() {
            let opt_in = if q { QUICK_OPT_IN } else { FULL_OPT_IN };
            sc.retain(|s| !opt_in.contains(&s.family.as_str()));
        }
        Ok(Plan {
            profile,
            backends,
            scenarios: sc,
            cell_budget: Duration::from_secs(if q { 25 } else { 180 }),
            run_timeout: Duration::from_secs(if q { 8 } else { 60 }),
            spacing: Duration::from_millis(if q { 25 } else { 50 }),
            seed: 0,
            // Quick: no warm-up unit (a third of its single-instance time here); a quick run is
            // too small to judge, and its design records the 0.
            warmup_units: if q { 0 } else { 1 },
            quiet: QuietGate {
                max_psi_some_avg10: QUIET_MAX_PSI_PCT,
                max_steal_pct: QUIET_MAX_STEAL_PCT,
                fallback_max_load: std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0),
                // Quick: a short look (steal in 20 ms is coarse, 2 ticks a CPU) so the
                // gate adds seconds, not a minute, to a matrix that must stay under 3.
                window: Duration::from_millis(if q { 20 } else { 100 }),
                // A busy host costs every unit this much at most: avg10 is a
                // ten-second mean, so waiting much longer per unit would
                // stretch the run without settling it.
                max_wait: Duration::from_millis(if q { 50 } else { 300 }),
            },
            cooldown: Duration::from_millis(if q { 500 } else { 2000 }),
            // The cgroup charge and memory.stat medians over the first 0.5-2 s after the last
            // READY equal those over 2-16 s within one charge batch (measured here, README
            // "bench"), so a longer window only idles.
            density_window: Duration::from_millis(if q { 1000 } else { 2000 }),
            pin: None,
            stretch: Stretch::default(),
            drop_caches: false,
            swarm: None,
        })
    }

    /// Every measured scenario at `rounds` rounds (the surface probe stays at one): a run to
    /// time the matrix or try it out; below [`FULL_ROUNDS`] the report judges no cell.
    pub fn with_rounds(mut self, rounds: u32) -> Plan {
        for sc in self.scenarios.iter_mut().filter(|s| s.shape != Shape::Surface) {
            sc.iterations = rounds.max(1);
        }
        self
    }

    /// What this plan leaves out or shortens to fit its time bound, each with why (recorded in
    /// the design; the report's method section lists them).
    pub fn cuts(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.profile == Profile::Full {
            v.push("no density-1: one idle instance's memory is the footprint scenario's".to_string());
        }
        if self.scenarios.iter().any(|s| matches!(s.shape, Shape::Density { n } if n > DENSITY_ALL_UP_TO)) {
            let left: Vec<String> = self
                .backends
                .iter()
                .filter_map(|b| b.parse::<BackendId>().ok())
                .filter_map(|b| density_stand_in(b).map(|(by, why)| format!("{b} (by {by}: {why})")))
                .collect();
            if !left.is_empty() {
                v.push(format!(
                    "density above {DENSITY_ALL_UP_TO} instances on a representative subset: left out {}; \
                     each runs density-{DENSITY_ALL_UP_TO}",
                    left.join("; ")
                ));
            }
        }
        if self.scenarios.iter().any(|s| matches!(s.shape, Shape::Density { .. })) {
            v.push(format!(
                "density: the N instances stay up together {:.1} s after the last READY (each at most its hold), \
                 not a fixed hold sized for the slowest launch spread: the cgroup charge and memory.stat medians \
                 over the first 0.5-2 s after the last READY equal those over 2-16 s within one charge batch",
                self.density_window.as_secs_f64()
            ));
        }
        v
    }

    /// Rounds of `sc`, warm-up included.
    pub fn rounds_of(&self, sc: &Scenario) -> u32 {
        self.warmup_for(sc) + sc.iterations
    }

    /// How many sweeps the run makes: one per round of its longest scenario.
    pub fn sweeps(&self) -> u32 {
        self.scenarios.iter().map(|sc| self.rounds_of(sc)).max().unwrap_or(0)
    }

    /// The scenarios (indices into `scenarios`) that run a round in sweep `sweep`, in that
    /// sweep's shuffled order: round `sweep` of each scenario that has one.
    pub fn sweep_order(&self, sweep: u32) -> Vec<usize> {
        super::design::sweep_order(self.seed, sweep, self.scenarios.len())
            .into_iter()
            .filter(|&i| sweep < self.rounds_of(&self.scenarios[i]))
            .collect()
    }

    /// Warm-up units for `sc`: only single-instance scenarios measured more
    /// than once get one (a batch of N is its own warm-up for N-1 of them).
    pub fn warmup_for(&self, sc: &Scenario) -> u32 {
        if sc.shape == Shape::Single && sc.iterations > 1 {
            self.warmup_units
        } else {
            0
        }
    }

    /// The design record for the manifest, with every round's order over
    /// `backends` (names in slot order).
    pub fn design(&self, backends: &[String]) -> Design {
        let mut orders = Vec::new();
        for sc in &self.scenarios {
            for round in 0..self.rounds_of(sc) {
                let order = super::design::round_order(self.seed, &sc.name, round, backends.len());
                let names: Vec<&str> = order.iter().map(|i| backends[*i].as_str()).collect();
                orders.push(format!("{}#{round}: {}", sc.name, names.join(",")));
            }
        }
        Design {
            seed: self.seed,
            orders,
            warmup_units: self.warmup_units,
            spacing_ms: self.spacing.as_millis() as u64,
            quiet_max_load: None,
            quiet_max_wait_ms: self.quiet.max_wait.as_millis() as u64,
            quiet: Some(self.quiet.describe(super::quiet::psi_available(std::path::Path::new("/proc")))),
            schedule: Schedule::Sweeps,
            block_order: Vec::new(),
            sweep_orders: (0..self.sweeps())
                .map(|sweep| {
                    let names: Vec<&str> =
                        self.sweep_order(sweep).iter().map(|&i| self.scenarios[i].name.as_str()).collect();
                    format!("sweep#{sweep}: {}", names.join(","))
                })
                .collect(),
            cooldown_ms: self.cooldown.as_millis() as u64,
            pin: self.pin,
            min_timed_region_ms: if self.profile == Profile::Full { MIN_TIMED_REGION.as_millis() as u64 } else { 0 },
            timed_region_exceptions: if self.profile == Profile::Full {
                vec![SYSCALL_EXCEPTION.to_string()]
            } else {
                Vec::new()
            },
            cuts: self.cuts(),
        }
    }

    /// Units the matrix will start at most (for the progress bar).
    pub fn total_units(&self) -> u64 {
        self.scenarios.iter().map(|s| u64::from(s.iterations + self.warmup_for(s))).sum::<u64>()
            * self.backends.len() as u64
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
        assert_eq!(p.total_units(), 2);
        assert!(Plan::new(Profile::Quick, vec![], Some(&["gpu".to_string()])).is_err());
    }

    #[test]
    fn full_profile_has_at_least_ten_rounds_per_cell() {
        let judged = |s: &Scenario| s.shape != Shape::Surface && !FULL_OPT_IN.contains(&s.family.as_str());
        for s in scenarios(Profile::Full).into_iter().filter(judged) {
            assert!(s.iterations >= 10, "{} has {}", s.name, s.iterations);
        }
    }

    #[test]
    fn only_the_full_plan_discards_a_warm_up_unit() {
        let cpu = Some(vec!["cpu".to_string()]);
        let full = Plan::new(Profile::Full, vec![], cpu.as_deref()).unwrap();
        let quick = Plan::new(Profile::Quick, vec![], cpu.as_deref()).unwrap();
        assert_eq!((full.warmup_for(&full.scenarios[0]), quick.warmup_for(&quick.scenarios[0])), (1, 0));
    }

    #[test]
    fn every_judged_cell_of_the_full_plan_has_at_least_ten_rounds_on_every_backend() {
        let all: Vec<String> = BackendId::ALL.iter().map(|b| b.name().to_string()).collect();
        let p = Plan::new(Profile::Full, all, None).unwrap();
        let judged = |s: &Scenario| s.shape != Shape::Surface && !FULL_OPT_IN.contains(&s.family.as_str());
        for s in p.scenarios.iter().filter(|s| judged(s)) {
            assert!(s.iterations >= FULL_ROUNDS, "{} has {}", s.name, s.iterations);
        }
        // --rounds below the minimum is allowed (a timing run), and says nothing about the profile.
        assert!(p.with_rounds(1).scenarios.iter().filter(|s| judged(s)).all(|s| s.iterations == 1));
    }

    #[test]
    fn density_above_ten_leaves_out_only_variants_whose_stand_in_runs_it() {
        let sc = scenarios(Profile::Full);
        let d50 = sc.iter().find(|s| s.name == "density-50").unwrap();
        let d10 = sc.iter().find(|s| s.name == "density-10").unwrap();
        let mut left = 0;
        for b in BackendId::ALL {
            assert!(not_applicable(d10, b).is_none() || b.only_families().is_some(), "{b} lacks density-10");
            if let Some((by, _)) = density_stand_in(b) {
                left += 1;
                assert!(not_applicable(d50, b).unwrap().contains(by.name()), "{b}");
                assert!(not_applicable(d50, by).is_none(), "{b}'s stand-in {by} must run density-50");
            } else if b.only_families().is_none() {
                assert!(not_applicable(d50, b).is_none(), "{b} is left out of density-50 without a stand-in");
            }
        }
        assert!(left > 0);
    }

    #[test]
    fn the_full_design_states_its_cuts_and_the_quick_one_the_density_window() {
        let all: Vec<String> = BackendId::ALL.iter().map(|b| b.name().to_string()).collect();
        let full = Plan::new(Profile::Full, all.clone(), None).unwrap().design(&all);
        assert!(full.cuts.iter().any(|c| c.starts_with("no density-1")), "{:?}", full.cuts);
        assert!(full.cuts.iter().any(|c| c.contains("docker-cvbench (by docker")), "{:?}", full.cuts);
        assert!(full.cuts.iter().any(|c| c.contains("2.0 s after the last READY")), "{:?}", full.cuts);
        let quick = Plan::new(Profile::Quick, all.clone(), None).unwrap().design(&all);
        assert_eq!(quick.cuts.len(), 1, "{:?}", quick.cuts);
        // Without the variants there is no subset to state.
        let few = Plan::new(Profile::Full, vec!["native".into(), "docker".into()], None).unwrap();
        assert!(!few.cuts().iter().any(|c| c.contains("representative subset")));
    }

    #[test]
    fn design_records_one_order_per_round_including_warm_up() {
        let mut p = Plan::new(Profile::Quick, vec![], Some(&["cpu".to_string(), "surface".to_string()])).unwrap();
        p.seed = 5;
        p.warmup_units = 1;
        let d = p.design(&["native".to_string(), "crun".to_string()]);
        // surface: 1 round, no warm-up; cpu: 1 warm-up + 2 measured.
        assert_eq!(d.orders.len(), 1 + 3);
        assert!(d.orders[1].starts_with("cpu#0: "), "{:?}", d.orders);
        assert_eq!(d.seed, 5);
    }
}
