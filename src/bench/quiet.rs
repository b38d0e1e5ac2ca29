//! The quiet-host gate before each unit: a bounded wait until the host's
//! pressure (`/proc/pressure/{cpu,io,memory}`, `some avg10`) and its steal
//! time (from `/proc/stat`, over a short window) are below their limits and
//! the previous unit's children are gone. What it saw and how long it waited
//! goes on every record of the unit; a unit that started above a limit is
//! flagged. Without PSI (a kernel built without it, or `psi=0`) it falls
//! back to the 1-minute load average, and the manifest says so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::record::QuietDesign;

/// The `some avg10` figure of one `/proc/pressure/*` file: the share of the
/// last ten seconds (percent) in which at least one task stalled.
pub fn parse_psi_some_avg10(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace().find_map(|f| f.strip_prefix("avg10="))?.parse().ok()
}

/// The 1-minute load average from a `/proc/loadavg` text.
pub fn parse_loadavg1(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The aggregate `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    /// Every state up to and including steal (user, nice, system, idle,
    /// iowait, irq, softirq, steal); guest time is already inside user.
    pub total: u64,
    pub steal: u64,
}

pub fn parse_cpu_times(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.split_whitespace().next() == Some("cpu"))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // Kernels before 2.6.11 have no steal column: then there is nothing to gate on.
    let steal = *v.get(7)?;
    Some(CpuTimes { total: v.iter().sum(), steal })
}

/// Steal time between two readings, as a percentage of all CPU time.
pub fn steal_pct(before: CpuTimes, after: CpuTimes) -> Option<f64> {
    let total = after.total.checked_sub(before.total)?;
    let steal = after.steal.checked_sub(before.steal)?;
    (total > 0).then(|| 100.0 * steal as f64 / total as f64)
}

/// What one look at the host saw.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reading {
    pub psi_cpu: Option<f64>,
    pub psi_io: Option<f64>,
    pub psi_memory: Option<f64>,
    /// Steal over the gate's window (percent).
    pub steal_pct: Option<f64>,
    /// Only read when PSI is absent.
    pub loadavg1: Option<f64>,
}

/// Where the gate reads the host: `/proc` here, fixed texts in tests.
pub trait Probe {
    /// One reading; `window` is how long steal is measured over (the call
    /// takes about that long).
    fn read(&mut self, window: Duration) -> Reading;
    /// Live children of the harness that were not there before the unit.
    fn new_children(&mut self, known: &[i32]) -> usize;
}

/// The host's `/proc`.
pub struct ProcProbe {
    pub proc: PathBuf,
}

impl ProcProbe {
    pub fn host() -> ProcProbe {
        ProcProbe { proc: PathBuf::from("/proc") }
    }

    fn text(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.proc.join(rel)).ok()
    }
}

/// Whether this kernel reports pressure stall information.
pub fn psi_available(proc: &Path) -> bool {
    std::fs::read_to_string(proc.join("pressure/cpu")).ok().as_deref().and_then(parse_psi_some_avg10).is_some()
}

impl Probe for ProcProbe {
    fn read(&mut self, window: Duration) -> Reading {
        let before = self.text("stat").as_deref().and_then(parse_cpu_times);
        std::thread::sleep(window);
        let after = self.text("stat").as_deref().and_then(parse_cpu_times);
        let psi = |f: &str| self.text(&format!("pressure/{f}")).as_deref().and_then(parse_psi_some_avg10);
        let psi_cpu = psi("cpu");
        Reading {
            psi_cpu,
            psi_io: psi("io"),
            psi_memory: psi("memory"),
            steal_pct: before.zip(after).and_then(|(b, a)| steal_pct(b, a)),
            loadavg1: if psi_cpu.is_none() { self.text("loadavg").as_deref().and_then(parse_loadavg1) } else { None },
        }
    }

    fn new_children(&mut self, known: &[i32]) -> usize {
        super::design::own_children(&self.proc.join("self")).iter().filter(|p| !known.contains(p)).count()
    }
}

/// The gate's limits.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietGate {
    /// Wait while any of cpu, io or memory `some avg10` is above this (%).
    pub max_psi_some_avg10: f64,
    /// Wait while steal over the window is above this (%).
    pub max_steal_pct: f64,
    /// Without PSI: wait while the 1-minute load average is above this.
    pub fallback_max_load: f64,
    /// Steal is measured over this window (every look takes this long).
    pub window: Duration,
    /// Wait at most this long for pressure and steal; the previous unit's
    /// children get [`CHILDREN_WAIT_FACTOR`] times as long.
    pub max_wait: Duration,
}

/// How much longer than for pressure the gate waits for children: a
/// leftover child is the previous unit still running.
pub const CHILDREN_WAIT_FACTOR: u32 = 10;

/// What the gate saw and waited before one unit.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Waited {
    pub waited: Duration,
    /// The last reading (the one the unit started after).
    pub seen: Reading,
    /// Children still alive when the wait ended (0 when they were gone).
    pub children_left: usize,
    /// The wait hit its bound.
    pub timed_out: bool,
    /// The unit starts with pressure, steal or load above a limit.
    pub above_limit: bool,
}

impl QuietGate {
    fn calm(&self, r: &Reading) -> bool {
        let under = |v: Option<f64>, max: f64| v.is_none_or(|v| v <= max);
        under(r.psi_cpu, self.max_psi_some_avg10)
            && under(r.psi_io, self.max_psi_some_avg10)
            && under(r.psi_memory, self.max_psi_some_avg10)
            && under(r.steal_pct, self.max_steal_pct)
            && under(r.loadavg1, self.fallback_max_load)
    }

    /// Wait until the previous unit's children are gone and the host is calm,
    /// within the bounds. `known`: children alive before the previous unit
    /// started (the harness's own daemons), which are not its leftovers.
    pub fn wait(&self, probe: &mut dyn Probe, known: &[i32]) -> Waited {
        let t0 = Instant::now();
        loop {
            let children = probe.new_children(known);
            let seen = probe.read(self.window);
            let calm = self.calm(&seen);
            let waited = t0.elapsed();
            let done =
                (children == 0 && (calm || waited >= self.max_wait)) || waited >= self.max_wait * CHILDREN_WAIT_FACTOR;
            if done {
                return Waited {
                    waited,
                    seen,
                    children_left: children,
                    timed_out: !(children == 0 && calm),
                    above_limit: !calm,
                };
            }
            // A reading already took `window`; a short pause keeps a zero window from spinning.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The gate as the manifest records it.
    pub fn describe(&self, psi: bool) -> QuietDesign {
        QuietDesign {
            psi_available: psi,
            max_psi_some_avg10_pct: self.max_psi_some_avg10,
            max_steal_pct: self.max_steal_pct,
            steal_window_ms: self.window.as_millis() as u64,
            fallback_max_load: (!psi).then_some(self.fallback_max_load),
        }
    }
}

impl Waited {
    /// The record's `extra` keys for this wait.
    pub fn extra(&self) -> Vec<(&'static str, f64)> {
        let s = &self.seen;
        let mut v = vec![
            ("quiet_wait_ms", self.waited.as_secs_f64() * 1e3),
            ("quiet_above_limit", if self.above_limit { 1.0 } else { 0.0 }),
            ("quiet_children_left", self.children_left as f64),
        ];
        for (k, x) in [
            ("psi_cpu_some_avg10", s.psi_cpu),
            ("psi_io_some_avg10", s.psi_io),
            ("psi_memory_some_avg10", s.psi_memory),
            ("steal_pct", s.steal_pct),
            ("loadavg_1m", s.loadavg1),
        ] {
            if let Some(x) = x {
                v.push((k, x));
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PSI: &str = "some avg10=51.45 avg60=25.75 avg300=13.61 total=2306247702\n\
                       full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";

    #[test]
    fn psi_parses_some_avg10_not_full() {
        assert_eq!(parse_psi_some_avg10(PSI), Some(51.45));
        assert_eq!(parse_psi_some_avg10("full avg10=3.00 avg60=0 avg300=0 total=0\n"), None);
        assert_eq!(parse_psi_some_avg10(""), None);
    }

    #[test]
    fn cpu_times_sum_the_first_eight_states_and_take_steal() {
        let stat = "cpu  100 0 50 800 10 0 5 35 20 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1\n";
        assert_eq!(parse_cpu_times(stat), Some(CpuTimes { total: 1000, steal: 35 }));
        assert_eq!(parse_cpu_times("cpu  1 2 3 4\n"), None, "no steal column");
    }

    #[test]
    fn steal_is_a_share_of_the_window() {
        let a = CpuTimes { total: 1000, steal: 35 };
        assert_eq!(steal_pct(a, CpuTimes { total: 1200, steal: 45 }), Some(5.0));
        assert_eq!(steal_pct(a, a), None, "an empty window says nothing");
        assert_eq!(steal_pct(a, CpuTimes { total: 900, steal: 35 }), None, "counters never go back");
    }

    /// A host whose readings are fixed: `busy_for` readings above every limit, then calm.
    struct Fixed {
        busy_for: usize,
        reads: usize,
        children: usize,
    }

    impl Probe for Fixed {
        fn read(&mut self, window: Duration) -> Reading {
            std::thread::sleep(window);
            self.reads += 1;
            let busy = self.reads <= self.busy_for;
            let v = if busy { 60.0 } else { 1.0 };
            Reading { psi_cpu: Some(v), psi_io: Some(0.0), psi_memory: Some(0.0), steal_pct: Some(v), loadavg1: None }
        }
        fn new_children(&mut self, _known: &[i32]) -> usize {
            self.children
        }
    }

    fn gate(max_wait_ms: u64) -> QuietGate {
        QuietGate {
            max_psi_some_avg10: 10.0,
            max_steal_pct: 5.0,
            fallback_max_load: 2.0,
            window: Duration::from_millis(5),
            max_wait: Duration::from_millis(max_wait_ms),
        }
    }

    #[test]
    fn a_calm_host_passes_after_one_look() {
        let mut p = Fixed { busy_for: 0, reads: 0, children: 0 };
        let w = gate(1000).wait(&mut p, &[]);
        assert_eq!(p.reads, 1);
        assert!(!w.timed_out && !w.above_limit, "{w:?}");
        assert!(w.waited < Duration::from_millis(500), "{w:?}");
    }

    #[test]
    fn the_gate_waits_for_pressure_to_fall_and_records_what_it_saw() {
        let mut p = Fixed { busy_for: 3, reads: 0, children: 0 };
        let w = gate(5000).wait(&mut p, &[]);
        assert_eq!(p.reads, 4);
        assert!(!w.timed_out && !w.above_limit);
        assert_eq!(w.seen.psi_cpu, Some(1.0));
    }

    #[test]
    fn a_busy_host_costs_at_most_the_bound_and_the_unit_is_flagged() {
        let mut p = Fixed { busy_for: usize::MAX, reads: 0, children: 0 };
        let w = gate(50).wait(&mut p, &[]);
        assert!(w.timed_out && w.above_limit, "{w:?}");
        assert!(w.waited >= Duration::from_millis(50), "{w:?}");
        // Polled with a 5 ms window: well under a second even on a loaded host.
        assert!(w.waited < Duration::from_secs(2), "{w:?}");
        let keys: Vec<&str> = w.extra().iter().map(|(k, _)| *k).collect();
        assert!(keys.contains(&"steal_pct") && keys.contains(&"psi_cpu_some_avg10"), "{keys:?}");
        assert!(w.extra().contains(&("quiet_above_limit", 1.0)));
    }

    #[test]
    fn children_get_ten_times_the_bound_not_forever() {
        let mut p = Fixed { busy_for: 0, reads: 0, children: 1 };
        let w = gate(20).wait(&mut p, &[]);
        assert!(w.timed_out && w.children_left == 1 && !w.above_limit, "{w:?}");
        assert!(w.waited >= Duration::from_millis(200) && w.waited < Duration::from_secs(3), "{w:?}");
    }

    #[test]
    fn without_psi_the_load_average_decides() {
        let g = gate(10);
        let busy = Reading { loadavg1: Some(3.0), ..Default::default() };
        let calm = Reading { loadavg1: Some(1.0), ..Default::default() };
        assert!(!g.calm(&busy) && g.calm(&calm));
        assert_eq!(g.describe(false).fallback_max_load, Some(2.0));
        assert_eq!(g.describe(true).fallback_max_load, None);
    }

    #[test]
    fn the_host_probe_reads_this_kernel() {
        let mut p = ProcProbe::host();
        let r = p.read(Duration::from_millis(50));
        if !psi_available(Path::new("/proc")) {
            eprintln!("SKIPPED: this kernel has no /proc/pressure (the gate falls back to the load average)");
            assert!(r.loadavg1.is_some());
            return;
        }
        assert!(r.psi_cpu.is_some() && r.psi_io.is_some() && r.psi_memory.is_some(), "{r:?}");
        assert!(r.loadavg1.is_none());
    }
}
