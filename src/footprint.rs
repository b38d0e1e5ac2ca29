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

/// Private memory of one process in KiB: `Private_Clean` + `Private_Dirty` of its
/// smaps_rollup, i.e. the pages no other process maps (a shared file's page cache is not
/// counted, which is what density from one snapshot file is about).
pub fn private_kib(pid: i32) -> Option<u64> {
    parse_private(&std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
}

/// The private part of an smaps_rollup text, in KiB.
pub fn parse_private(text: &str) -> Option<u64> {
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l[name.len()..].split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(field("Private_Clean:")? + field("Private_Dirty:")?)
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

/// RSS, in KiB, of the mappings of exactly `guest_bytes` bytes in an smaps text: a VMM's guest
/// RAM (ours and QEMU's map it as one anonymous region of the guest's size), i.e. the guest
/// memory the guest has touched. `None` when no mapping has that size.
pub fn parse_guest_ram_rss(smaps: &str, guest_bytes: u64) -> Option<u64> {
    let mut total = None;
    let mut in_guest = false;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
                in_guest = false;
                continue;
            };
            in_guest = b.saturating_sub(a) == guest_bytes;
        } else if in_guest && first == "Rss:" {
            let kib: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            total = Some(total.unwrap_or(0) + kib);
        }
    }
    total
}

/// A VMM's memory split at one instant: its whole RSS, the part that is guest RAM the guest
/// touched, and the difference — the VMM's own overhead (Firecracker's NSDI'20 figure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmmMemory {
    pub rss_kib: u64,
    pub guest_touched_kib: u64,
}

impl VmmMemory {
    pub fn overhead_kib(&self) -> u64 {
        self.rss_kib.saturating_sub(self.guest_touched_kib)
    }
}

/// Read [`VmmMemory`] of process `pid` whose guest RAM is `guest_bytes` long.
pub fn vmm_memory(pid: i32, guest_bytes: u64) -> Option<VmmMemory> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let rss_kib = parse_rollup(&rollup).0?;
    let guest_touched_kib = parse_guest_ram_rss(&smaps, guest_bytes)?;
    Some(VmmMemory { rss_kib, guest_touched_kib })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_memory_is_clean_plus_dirty_private_pages() {
        let t = "Rss: 900 kB\nPss: 500 kB\nShared_Clean: 400 kB\nPrivate_Clean: 120 kB\nPrivate_Dirty: 380 kB\n";
        assert_eq!(parse_private(t), Some(500));
        assert_eq!(parse_private("Rss: 1 kB\n"), None);
    }

    #[test]
    fn guest_ram_is_the_mapping_of_the_guest_size() {
        let smaps = "\
7f0000000000-7f0010000000 rw-p 00000000 00:00 0 \n\
Size:             262144 kB\n\
Rss:               30000 kB\n\
7f0010000000-7f0010001000 r-xp 00000000 08:01 42   /usr/bin/vmm\n\
Rss:                   4 kB\n";
        assert_eq!(parse_guest_ram_rss(smaps, 256 << 20), Some(30000));
        assert_eq!(parse_guest_ram_rss(smaps, 128 << 20), None);
        let m = VmmMemory { rss_kib: 32000, guest_touched_kib: 30000 };
        assert_eq!(m.overhead_kib(), 2000);
    }

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
