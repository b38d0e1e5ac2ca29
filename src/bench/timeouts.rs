//! How long an instance may run before the harness kills it: the plan's base timeout, stretched
//! when N instances of a unit share this host's CPUs and, on an emulated CPU (the test host), by
//! the emulator's slowdown measured at the start of the run. A timeout is a bound, never a
//! figure: a record given more than the base says how much and why in a note, so a timeout
//! failure there names the host instead of passing for a bug.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

use crate::hostkind::HostCpu;

/// Processes the calibration starts: kernel work (fork, exec, page faults, exit), what every
/// launch is made of, and the same work whatever profile cvbench was built with (a user-space
/// loop in cvbench itself runs at different speeds in debug and release builds).
const CALIBRATION_SPAWNS: u32 = 10;

/// The calibration's time on the machine cvbench is developed on (Debian 12 on 2 vCPUs of a KVM
/// guest), in ns: `cargo test --lib bench::timeouts::tests::calibration_time_here -- --ignored
/// --nocapture`, the smallest of its five printed values (the harness takes the smallest of three).
const REFERENCE_NS: u64 = 7_100_000;

/// The emulator's slowdown is bounded: beyond this a run is hopeless anyway.
const MAX_SLOWDOWN: f64 = 100.0;

/// What stretches the base timeout on this host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stretch {
    /// The calibration loop's time here over the reference machine's, on an emulated CPU; 1 elsewhere.
    pub emulator_slowdown: f64,
    /// CPUs the instances of one unit share.
    pub cpus: u32,
}

impl Default for Stretch {
    fn default() -> Stretch {
        Stretch { emulator_slowdown: 1.0, cpus: 1 }
    }
}

impl Stretch {
    /// This host's stretch: the emulator's slowdown is measured only on an emulated CPU.
    pub fn for_host(cpu: &HostCpu) -> Stretch {
        let cpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
        let emulator_slowdown = if cpu.emulated { measured_slowdown() } else { 1.0 };
        Stretch { emulator_slowdown, cpus }
    }

    /// How long the first of a density unit's instances stays up after READY: the plan's `hold`
    /// covers the spread of N launches on a real CPU, and an emulated CPU spreads them by its
    /// slowdown (the clean-clone pass's microvm density-10 never had all 10 up with the plain
    /// 3.8 s). What is measured, memory with all N up, does not change with it.
    pub fn hold(&self, hold: Duration) -> Duration {
        hold.mul_f64(self.emulator_slowdown.clamp(1.0, MAX_SLOWDOWN))
    }

    /// The timeout for one of `instances` instances started together, and the note a record
    /// carries when it is more than `base`.
    pub fn timeout(&self, base: Duration, instances: u32) -> (Duration, Option<String>) {
        let share = instances.div_ceil(self.cpus.max(1)).max(1);
        let slow = self.emulator_slowdown.clamp(1.0, MAX_SLOWDOWN);
        let t = base.mul_f64(slow) * share;
        if t == base {
            return (t, None);
        }
        let mut why = Vec::new();
        if share > 1 {
            why.push(format!("x{share} for {instances} instances on {} CPUs", self.cpus));
        }
        if slow > 1.0 {
            why.push(format!(
                "x{slow:.1} for this emulated CPU (its process start-up against the reference machine's)"
            ));
        }
        let note =
            format!("timeout: {:.0} s instead of {:.0} s ({})", t.as_secs_f64(), base.as_secs_f64(), why.join(", "));
        (t, Some(note))
    }
}

/// The calibration: start `/bin/true` and wait for it, [`CALIBRATION_SPAWNS`] times.
fn calibration_time() -> Duration {
    let t0 = Instant::now();
    for _ in 0..CALIBRATION_SPAWNS {
        // A host without /bin/true calibrates to nothing: the stretch stays at 1.
        if std::process::Command::new("/bin/true").status().is_err() {
            return Duration::ZERO;
        }
    }
    t0.elapsed()
}

/// The fastest of three calibrations, over the reference machine's.
fn measured_slowdown() -> f64 {
    let best = (0..3).map(|_| calibration_time()).min().unwrap_or_default();
    (best.as_nanos() as f64 / REFERENCE_NS as f64).clamp(1.0, MAX_SLOWDOWN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_instance_on_a_real_cpu_keeps_the_base() {
        let s = Stretch { emulator_slowdown: 1.0, cpus: 2 };
        assert_eq!(s.timeout(Duration::from_secs(8), 1), (Duration::from_secs(8), None));
        assert_eq!(s.timeout(Duration::from_secs(8), 2), (Duration::from_secs(8), None));
    }

    #[test]
    fn instances_beyond_the_cpus_stretch_it_and_say_so() {
        let s = Stretch { emulator_slowdown: 1.0, cpus: 2 };
        let (t, note) = s.timeout(Duration::from_secs(8), 10);
        assert_eq!(t, Duration::from_secs(40));
        let note = note.expect("a stretched timeout is noted");
        assert!(note.contains("x5 for 10 instances on 2 CPUs"), "{note}");
    }

    #[test]
    fn an_emulated_cpu_stretches_it_by_its_slowdown_within_bounds() {
        let s = Stretch { emulator_slowdown: 3.0, cpus: 2 };
        let (t, note) = s.timeout(Duration::from_secs(8), 1);
        assert_eq!(t, Duration::from_secs(24));
        assert!(note.expect("noted").contains("x3.0 for this emulated CPU"));
        let wild = Stretch { emulator_slowdown: 1e9, cpus: 2 };
        assert_eq!(wild.timeout(Duration::from_secs(1), 1).0, Duration::from_secs(100));
    }

    #[test]
    fn a_density_hold_stretches_only_on_an_emulated_cpu() {
        let real = Stretch { emulator_slowdown: 1.0, cpus: 2 };
        assert_eq!(real.hold(Duration::from_millis(3800)), Duration::from_millis(3800));
        let emulated = Stretch { emulator_slowdown: 10.0, cpus: 2 };
        assert_eq!(emulated.hold(Duration::from_millis(3800)), Duration::from_secs(38));
    }

    #[test]
    fn a_real_cpu_is_not_calibrated() {
        let s = Stretch::for_host(&HostCpu { hypervisor: None, emulated: false });
        assert_eq!(s.emulator_slowdown, 1.0);
        assert!(s.cpus >= 1);
    }

    /// Prints the calibration's time, to set `REFERENCE_NS` (not a check).
    #[test]
    #[ignore = "measures this machine; run by hand to set REFERENCE_NS"]
    fn calibration_time_here() {
        for _ in 0..5 {
            println!("calibration: {} ns", calibration_time().as_nanos());
        }
    }
}
