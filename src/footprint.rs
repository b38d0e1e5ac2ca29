//! Host-side memory footprint of a set of processes: RSS and PSS summed from
//! `/proc/<pid>/smaps_rollup` (PSS splits shared pages fairly between the
//! processes that map them, so it is the figure that adds up across instances).

use std::path::Path;

/// Sums over the sampled processes, in KiB; `None` where nothing was readable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub rss_kib: Option<u64>,
    pub pss_kib: Option<u64>,
}

/// Parse the `Rss:` and `Pss:` lines of an smaps_rollup text.
pub fn parse_rollup(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l[name.len()..].split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    (field("Rss:"), field("Pss:"))
}

/// Sample every pid; processes that vanished are skipped.
pub fn sample(pids: &[i32]) -> Sample {
    sample_under(Path::new("/proc"), pids)
}

fn sample_under(proc_root: &Path, pids: &[i32]) -> Sample {
    let mut s = Sample::default();
    for pid in pids {
        let Ok(text) = std::fs::read_to_string(proc_root.join(pid.to_string()).join("smaps_rollup")) else {
            continue;
        };
        let (rss, pss) = parse_rollup(&text);
        if let Some(r) = rss {
            s.rss_kib = Some(s.rss_kib.unwrap_or(0) + r);
        }
        if let Some(p) = pss {
            s.pss_kib = Some(s.pss_kib.unwrap_or(0) + p);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLLUP: &str = "55d0-7ffd ---p 00000000 00:00 0  [rollup]\nRss:                1234 kB\nPss:                 456 kB\nPss_Anon:            100 kB\n";

    #[test]
    fn parse_rollup_reads_rss_and_pss() {
        assert_eq!(parse_rollup(ROLLUP), (Some(1234), Some(456)));
    }

    #[test]
    fn sample_sums_processes_and_skips_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        for pid in [10, 11] {
            std::fs::create_dir(dir.path().join(pid.to_string())).unwrap();
            std::fs::write(dir.path().join(pid.to_string()).join("smaps_rollup"), ROLLUP).unwrap();
        }
        let s = sample_under(dir.path(), &[10, 11, 12]);
        assert_eq!(s, Sample { rss_kib: Some(2468), pss_kib: Some(912) });
    }

    #[test]
    fn sample_of_own_process_is_nonzero() {
        let s = sample(&[std::process::id() as i32]);
        assert!(s.rss_kib.unwrap_or(0) > 0);
    }
}

/// Parse `VmHWM:` (peak resident set since exec) from a /proc status text.
pub fn parse_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Sum of `VmHWM` over the processes that are still readable, in KiB.
pub fn hwm_sum(pids: &[i32]) -> Option<u64> {
    let seen: Vec<u64> = pids
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok().as_deref().and_then(parse_hwm))
        .collect();
    (!seen.is_empty()).then(|| seen.iter().sum())
}

/// Polls the instance's processes' `VmHWM` while it runs and keeps the sum of
/// the highest values seen. `VmHWM` is a per-address-space high-water mark, so
/// only growth in the last poll interval before exit can be missed. (The
/// `wait4` rusage figure is not used: it counts the harness's own pages from
/// before the child's exec.)
pub struct PeakSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Option<u64>>,
}

impl PeakSampler {
    pub fn start(pids: Vec<i32>, every: std::time::Duration) -> PeakSampler {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut best: Vec<Option<u64>> = vec![None; pids.len()];
            loop {
                for (slot, pid) in best.iter_mut().zip(&pids) {
                    if let Some(h) =
                        std::fs::read_to_string(format!("/proc/{pid}/status")).ok().as_deref().and_then(parse_hwm)
                    {
                        *slot = Some(slot.unwrap_or(0).max(h));
                    }
                }
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                // Parked rather than asleep, so `finish` ends the wait at once
                // (a noop run must not pay a whole polling period).
                std::thread::park_timeout(every);
            }
            let seen: Vec<u64> = best.into_iter().flatten().collect();
            (!seen.is_empty()).then(|| seen.iter().sum())
        });
        PeakSampler { stop, thread }
    }

    /// Stop polling and return the peak (KiB), if any process was readable.
    pub fn finish(self) -> Option<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.thread().unpark();
        self.thread.join().ok().flatten()
    }
}

#[cfg(test)]
mod hwm_tests {
    use super::*;

    #[test]
    fn parse_hwm_reads_the_high_water_mark() {
        assert_eq!(parse_hwm("Name:\tx\nVmPeak:\t  9 kB\nVmHWM:\t    1500 kB\n"), Some(1500));
        assert_eq!(parse_hwm("Name:\tx\n"), None);
    }

    #[test]
    fn peak_sampler_sees_this_process() {
        let s = PeakSampler::start(vec![std::process::id() as i32], std::time::Duration::from_millis(1));
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(s.finish().unwrap_or(0) > 0);
    }
}
