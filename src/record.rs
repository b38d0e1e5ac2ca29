//! The suite's single results schema: one `RunRecord` per run of one workload
//! on one backend, kept even when the run failed (with its error).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bumped whenever a field changes meaning or is removed. Readers refuse
/// records of any other version rather than guess what their fields mean.
pub const SCHEMA_VERSION: u32 = 1;

/// How a bench run was designed, recorded in its manifest so a reader can
/// tell what the figures were protected against.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Design {
    /// Seed of the per-round shuffle of the backends' order.
    pub seed: u64,
    /// The order of every round: `scenario#round: backend,backend,...`.
    pub orders: Vec<String>,
    /// Units run before each cell's measured ones and discarded.
    pub warmup_units: u32,
    /// Pause between consecutive units, the same for every backend (ms).
    pub spacing_ms: u64,
    /// Runs before the pressure gate: the 1-minute load average the gate
    /// waited for. Absent from newer manifests (see `quiet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_max_load: Option<f64>,
    /// The quiet-host gate waits at most this long for pressure and steal
    /// (ms), and ten times that for the previous unit's children.
    pub quiet_max_wait_ms: u64,
    /// The quiet-host gate's limits; each record's `extra` carries what it
    /// saw (`psi_*_some_avg10`, `steal_pct`), how long it waited
    /// (`quiet_wait_ms`) and whether the unit started above a limit
    /// (`quiet_above_limit` = 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet: Option<QuietDesign>,
    /// How the scenarios' rounds were laid out in time (absent: blocks, every run before sweeps).
    #[serde(default, skip_serializing_if = "Schedule::is_blocks")]
    pub schedule: Schedule,
    /// Blocks: the order the scenario blocks ran in (shuffled from the seed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block_order: Vec<String>,
    /// Sweeps: each sweep's order of scenarios, `sweep#r: scenario,scenario,...`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sweep_orders: Vec<String>,
    /// Blocks: the pause between two scenario blocks; sweeps: the pause after a round of a
    /// multi-instance scenario (ms).
    #[serde(default)]
    pub cooldown_ms: u64,
    /// CPU pinning, when on: the harness on one CPU, the instance on another.
    pub pin: Option<Pinning>,
    /// Throughput scenarios are sized so one sample's timed region lasts at
    /// least this long natively (ms).
    pub min_timed_region_ms: u64,
    /// Scenarios sized below that minimum, each with why.
    #[serde(default)]
    pub timed_region_exceptions: Vec<String>,
    /// What the plan left out or shortened to fit its time bound, each with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cuts: Vec<String>,
}

/// The quiet-host gate's limits, as run.
/// How a run lays its scenarios' rounds out in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Every round of one scenario, then every round of the next (scenarios in a shuffled
    /// order): a cell's rounds lie within minutes of each other, and its CI misses the drift of
    /// the rest of the run.
    #[default]
    Blocks,
    /// Sweep r runs round r of every scenario, the scenarios shuffled per sweep: a cell's rounds
    /// are spread over the whole run, so its CI over rounds carries the run's drift, and the
    /// two halves of its rounds are the two halves of the run.
    Sweeps,
}

impl Schedule {
    fn is_blocks(&self) -> bool {
        *self == Schedule::Blocks
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietDesign {
    /// Whether `/proc/pressure` was there; without it the gate used the load average.
    pub psi_available: bool,
    /// Limit on cpu, io and memory `some avg10` (% of the last 10 s with a stalled task).
    pub max_psi_some_avg10_pct: f64,
    /// Limit on steal time over the window (% of all CPU time).
    pub max_steal_pct: f64,
    /// Steal is measured over this window before each unit (ms).
    pub steal_window_ms: u64,
    /// Without PSI: the 1-minute load average the gate waited for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_max_load: Option<f64>,
}

/// Which CPUs the harness and the instances were pinned to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pinning {
    pub harness_cpu: usize,
    pub instance_cpu: usize,
}

impl Design {
    /// One paragraph for the report.
    pub fn describe(&self) -> String {
        let pin = match self.pin {
            Some(p) if self.quiet.is_some() => format!(
                "harness, peer servers and daemons (dockerd, containerd) pinned to CPU {}, instances to CPU {}",
                p.harness_cpu, p.instance_cpu
            ),
            // Runs before the pressure gate started daemons and peer servers from the pinned launch.
            Some(p) => format!(
                "harness pinned to CPU {}, instances to CPU {} (so is a daemon a backend starts at its first \
                 launch, such as the private dockerd)",
                p.harness_cpu, p.instance_cpu
            ),
            None => "no CPU pinning".to_string(),
        };
        let gate = match (&self.quiet, self.quiet_max_load) {
            (Some(q), _) if q.psi_available => format!(
                "before each unit the harness waited up to {} ms for cpu, io and memory pressure (`some avg10`) \
                 of at most {}% and steal time of at most {}% over {} ms, and up to ten times that for the \
                 previous unit's children to be gone (each record's `extra`: `quiet_wait_ms`, \
                 `psi_*_some_avg10`, `steal_pct`; `quiet_above_limit` = 1 when it started above a limit)",
                self.quiet_max_wait_ms, q.max_psi_some_avg10_pct, q.max_steal_pct, q.steal_window_ms
            ),
            (Some(q), _) => format!(
                "this kernel has no /proc/pressure: before each unit the harness waited up to {} ms for the \
                 1-minute load average to fall to {} and steal time to at most {}% over {} ms \
                 (`quiet_above_limit` = 1 when it started above a limit)",
                self.quiet_max_wait_ms,
                q.fallback_max_load.unwrap_or(f64::NAN),
                q.max_steal_pct,
                q.steal_window_ms
            ),
            (None, load) => format!(
                "before each unit the harness waited up to {} ms for the 1-minute load average to fall to {} \
                 and up to ten times that for the previous unit's children to be gone (each record's \
                 `extra.quiet_wait_ms`)",
                self.quiet_max_wait_ms,
                load.unwrap_or(f64::NAN)
            ),
        };
        let blocks = match (self.schedule, self.block_order.len(), self.sweep_orders.len()) {
            (Schedule::Blocks, 0, _) => String::new(),
            (Schedule::Blocks, n, _) => format!(
                "{n} scenario blocks in a shuffled order with {} ms of cool-down between them; ",
                self.cooldown_ms
            ),
            (Schedule::Sweeps, _, n) => format!(
                "{n} sweeps over the scenarios (sweep r runs round r of each, the scenarios in an order shuffled \
                 per sweep, so a cell's rounds are spread over the whole run and its CI carries the run's drift), \
                 {} ms of cool-down after a round of a multi-instance scenario; ",
                self.cooldown_ms
            ),
        };
        format!(
            "Backends shuffled within each round from seed {} ({} rounds recorded in the manifest); {blocks}{} \
             warm-up unit(s) per cell discarded; {} ms between units for every backend; {gate}; {pin}; {}.",
            self.seed,
            self.orders.len(),
            self.warmup_units,
            self.spacing_ms,
            match self.min_timed_region_ms {
                0 => "throughput sizes of the quick profile (timed regions not sized to a minimum)".to_string(),
                ms if self.timed_region_exceptions.is_empty() => {
                    format!("throughput timed regions of at least {ms} ms per sample")
                }
                ms => format!(
                    "throughput timed regions of at least {ms} ms per sample, except {}",
                    self.timed_region_exceptions.join("; ")
                ),
            }
        )
    }
}

/// The host's network state during a run, which moves network figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostNet {
    /// iptables + nftables rules in the root namespace, when readable.
    pub firewall_rules: Option<u64>,
    /// Whether any dockerd was running when the run started.
    pub dockerd_running: bool,
}

/// What a node does in a Docker Swarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwarmRole {
    Manager,
    Worker,
}

impl SwarmRole {
    pub fn name(self) -> &'static str {
        match self {
            SwarmRole::Manager => "manager",
            SwarmRole::Worker => "worker",
        }
    }
}

/// Whether a swarm node takes tasks (`docker node update --availability`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    Active,
    Pause,
    Drain,
}

/// One node of a swarm the user named, as its manager listed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmNodeInfo {
    pub id: String,
    pub hostname: String,
    pub role: SwarmRole,
    pub engine_version: String,
    pub availability: Availability,
    /// `ready`, `down`, `unknown`, `disconnected`.
    pub state: String,
    pub leader: bool,
}

/// A swarm the user named (`cvbench bench --swarm-manager`): its address and its nodes at the
/// start of the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedSwarm {
    /// The docker API address given (`unix:///…`, `tcp://host:port`).
    pub endpoint: String,
    /// The workload image its nodes pulled.
    pub image: String,
    pub nodes: Vec<SwarmNodeInfo>,
}

/// One run: what ran where, what the host saw, what the workload measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    pub schema_version: u32,
    /// Backend name: native, container, microvm-bare, microvm, runc, crun, qemu, docker.
    pub backend: String,
    /// Workload subcommand.
    pub workload: String,
    /// Arguments passed to the workload after the subcommand (including any
    /// the backend added, such as `--peer`).
    pub args: Vec<String>,
    /// Short id of the environment manifest this run belongs to.
    pub env_id: String,
    /// Free-form label for the experiment (e.g. `startup-serial`, `parallel-10`).
    #[serde(default)]
    pub scenario: String,
    /// The round of its scenario this run belongs to (warm-up rounds not
    /// counted): every backend's unit of round i carries i, so the report
    /// pairs a backend's value with native's of the same round. Every
    /// instance of a parallel or density batch carries its unit's round.
    #[serde(default)]
    pub iteration: u32,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    pub host: HostTimings,
    pub footprint: Footprint,
    pub exit: Option<ExitInfo>,
    /// The workload's own metrics from its JSON line (empty if it never printed one).
    pub metrics: BTreeMap<String, f64>,
    /// Backend-specific measurements (cgroup memory peak, VM exits, ...).
    #[serde(default)]
    pub extra: BTreeMap<String, f64>,
    /// Honest remarks: what this backend could not do here, and why.
    #[serde(default)]
    pub notes: Vec<String>,
    /// Why the run failed; `None` for a successful run.
    pub error: Option<String>,
}

impl RunRecord {
    /// A record the bench wrote for a cell that never started here (the backend cannot run on
    /// this host, or the scenario does not apply to it): an error and no start time. A unit that
    /// started and failed is not one.
    pub fn never_ran(&self) -> bool {
        self.error.is_some() && self.started_unix_ms == 0
    }
}

/// Timings taken by the host, in nanoseconds from the launch call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostTimings {
    pub launch_to_ready_ns: Option<u64>,
    pub launch_to_exit_ns: Option<u64>,
    /// Ordered per-phase durations the backend recorded (name, ns).
    #[serde(default)]
    pub phases: Vec<(String, u64)>,
}

/// Host memory cost of the instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Footprint {
    /// Peak resident set of the instance's processes (KiB), where known.
    pub peak_rss_kib: Option<u64>,
    /// RSS sampled while running (KiB), summed over the instance's processes.
    pub rss_kib: Option<u64>,
    /// PSS sampled while running (KiB), summed over the instance's processes.
    pub pss_kib: Option<u64>,
}

/// How the instance ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
}

impl ExitInfo {
    pub fn success(&self) -> bool {
        self.code == Some(0) && self.signal.is_none() && !self.oom_killed
    }
}

/// The line every workload (and `cvbench-workload serve`) prints once it is ready.
pub const READY_LINE: &str = "READY";

/// Whether a line of workload output (a pipe or a guest console, so `\r\n` too) is its READY line.
pub fn is_ready_line(line: &str) -> bool {
    line.trim() == READY_LINE
}

/// The workload's final JSON line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadOutput {
    pub workload: String,
    pub metrics: BTreeMap<String, Option<f64>>,
}

impl WorkloadOutput {
    /// Parse one line; `None` if it is not the workload's JSON result.
    pub fn parse(line: &str) -> Option<WorkloadOutput> {
        let line = line.trim();
        if !line.starts_with('{') {
            return None;
        }
        serde_json::from_str(line).ok()
    }

    /// Finite metrics only (the workload prints `null` for non-finite values).
    pub fn finite_metrics(&self) -> BTreeMap<String, f64> {
        self.metrics.iter().filter_map(|(k, v)| v.map(|v| (k.clone(), v))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RunRecord {
        RunRecord {
            schema_version: SCHEMA_VERSION,
            backend: "native".into(),
            workload: "cpu".into(),
            args: vec!["--sha-mib".into(), "4".into()],
            env_id: "abc123".into(),
            scenario: "cpu".into(),
            iteration: 3,
            started_unix_ms: 1_700_000_000_000,
            host: HostTimings {
                launch_to_ready_ns: Some(500_000),
                launch_to_exit_ns: Some(9_000_000),
                phases: vec![("spawn".into(), 400_000)],
            },
            footprint: Footprint { peak_rss_kib: Some(1200), rss_kib: None, pss_kib: None },
            exit: Some(ExitInfo { code: Some(0), signal: None, oom_killed: false }),
            metrics: [("sha256_mib_per_s".to_string(), 180.5)].into_iter().collect(),
            extra: BTreeMap::new(),
            notes: vec![],
            error: None,
        }
    }

    #[test]
    fn record_round_trips_through_json() {
        let r = sample();
        let text = serde_json::to_string(&r).unwrap();
        let back: RunRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn record_rejects_unknown_fields() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v.as_object_mut().unwrap().insert("surprise".into(), 1.into());
        assert!(serde_json::from_value::<RunRecord>(v).is_err());
    }

    #[test]
    fn failed_record_keeps_its_error() {
        let mut r = sample();
        r.error = Some("container: pivot_root failed".into());
        r.exit = None;
        let back: RunRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.error.as_deref(), Some("container: pivot_root failed"));
    }

    #[test]
    fn workload_output_parses_and_drops_nulls() {
        let o = WorkloadOutput::parse(r#"{"workload":"cpu","metrics":{"a":1.5,"b":null}}"#).unwrap();
        assert_eq!(o.workload, "cpu");
        let m = o.finite_metrics();
        assert_eq!(m.get("a"), Some(&1.5));
        assert!(!m.contains_key("b"));
    }

    #[test]
    fn ready_line_is_recognised_with_console_line_endings() {
        assert!(is_ready_line("READY\n") && is_ready_line("READY\r\n") && is_ready_line("READY"));
        assert!(!is_ready_line("READY?") && !is_ready_line("cvbench-init: READY") && !is_ready_line(""));
    }

    #[test]
    fn workload_output_ignores_non_json_lines() {
        assert!(WorkloadOutput::parse("READY").is_none());
        assert!(WorkloadOutput::parse("{not json").is_none());
    }

    #[test]
    fn exit_success_requires_code_zero_and_no_oom() {
        assert!(ExitInfo { code: Some(0), signal: None, oom_killed: false }.success());
        assert!(!ExitInfo { code: Some(0), signal: None, oom_killed: true }.success());
        assert!(!ExitInfo { code: None, signal: Some(9), oom_killed: false }.success());
    }
}
