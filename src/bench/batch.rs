//! Units that start several instances at once: startup-parallel (N launches
//! released by one barrier) and density (N idle instances up together: the
//! growth of a parent cgroup's memory charge holding them all, summed PSS, and
//! host-wide MemAvailable as a check).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use super::parent_cgroup::{self, ParentCgroup, Placement};
use crate::backend::Backend;
use crate::group_hold::GroupHold;
use crate::record::RunRecord;
use crate::runner::{self, RunRequest};

/// Each instance's record with the instant its launch was released.
struct Launched {
    start: Instant,
    rec: RunRecord,
}

/// Run `n` copies of `req` at once; records come back in instance order with
/// `extra.instance` set, and the batch figures on instance 0.
fn launch_n(backend: &dyn Backend, req: &RunRequest, n: u32) -> (Instant, Vec<Launched>) {
    let barrier = Barrier::new(n as usize + 1);
    let release = Mutex::new(None);
    let out: Vec<Launched> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|k| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let mut rec = runner::run(backend, req);
                    rec.extra.insert("instance".into(), f64::from(k));
                    Launched { start, rec }
                })
            })
            .collect();
        barrier.wait();
        if let Ok(mut g) = release.lock() {
            *g = Some(Instant::now());
        }
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    // The batch clock starts at the first launch: the releasing thread itself
    // may be scheduled after the instances it released.
    let released = release.into_inner().ok().flatten();
    let t0 = out.iter().map(|l| l.start).chain(released).min().unwrap_or_else(Instant::now);
    (t0, out)
}

fn ready_at(l: &Launched) -> Option<Instant> {
    l.rec.host.launch_to_ready_ns.map(|ns| l.start + Duration::from_nanos(ns))
}

/// startup-parallel: N noop launches released together.
pub fn parallel(backend: &dyn Backend, req: &RunRequest, n: u32) -> Vec<RunRecord> {
    let (t0, out) = launch_n(backend, req, n);
    let last_ready = out.iter().filter_map(ready_at).max();
    let last_exit =
        out.iter().filter_map(|l| l.rec.host.launch_to_exit_ns.map(|ns| l.start + Duration::from_nanos(ns))).max();
    let mut recs: Vec<RunRecord> = out.into_iter().map(|l| l.rec).collect();
    if let Some(first) = recs.first_mut() {
        first.extra.insert("batch_n".into(), f64::from(n));
        if let Some(t) = last_ready {
            first.extra.insert("batch_last_ready_ns".into(), t.duration_since(t0).as_nanos() as f64);
        }
        if let Some(t) = last_exit {
            first.extra.insert("batch_last_exit_ns".into(), t.duration_since(t0).as_nanos() as f64);
        }
    }
    recs
}

/// `MemAvailable:` from a /proc/meminfo text, KiB.
pub fn parse_mem_available(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn mem_available() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo").ok().as_deref().and_then(parse_mem_available)
}

/// Median of the samples taken inside `[from, to]`; `None` if there are none.
pub fn median_in_window(samples: &[(Instant, u64)], from: Instant, to: Instant) -> Option<f64> {
    let inside: Vec<f64> = samples.iter().filter(|(t, _)| *t >= from && *t <= to).map(|(_, v)| *v as f64).collect();
    crate::stats::median(&inside)
}

/// density: N idle instances up together. Instance 0's record carries the
/// unit's figures (`density_*`); if the instances were never all up at the
/// same time, it carries an error instead. Where the harness can place every
/// instance in one parent cgroup (see [`BackendId::placement`](crate::backend::BackendId::placement)), the growth
/// of that cgroup's memory charge per instance is the unit's main figure.
pub fn density(backend: &dyn Backend, req: &RunRequest, n: u32, window: Duration) -> Vec<RunRecord> {
    let mut req = req.clone();
    // Every instance stays up until all N are READY, then `window` more (at most `req.hold`).
    req.group = Some(Arc::new(GroupHold::new(n, window)));
    let mut cg_note = None;
    let parent = match backend.id().placement() {
        None => {
            cg_note = Some(format!(
                "density: {} places its containers' cgroups itself; no parent-cgroup memory, PSS only",
                backend.name()
            ));
            None
        }
        Some(place) => match ParentCgroup::create() {
            Ok(p) => {
                match place {
                    Placement::Spawned => req.options.join_cgroup_procs = p.procs_files(),
                    Placement::Below => req.options.cgroup_parent = Some(p.name().to_string()),
                }
                Some(p)
            }
            Err(e) => {
                cg_note = Some(format!("density: no parent cgroup ({}); PSS only", runner::chain(&e)));
                None
            }
        },
    };
    let cg_file = parent.as_ref().and_then(ParentCgroup::memory_file);
    let stat_file = parent.as_ref().and_then(ParentCgroup::memory_stat_file);
    let stat_samples = Arc::new(Mutex::new(Vec::<(Instant, u64)>::new()));
    let samples = Arc::new(Mutex::new(Vec::<(Instant, u64, Option<u64>)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, stop, stat_samples) = (samples.clone(), stop.clone(), stat_samples.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let cg = cg_file.as_deref().and_then(parent_cgroup::read_bytes);
                let stat = stat_file
                    .as_deref()
                    .and_then(|f| std::fs::read_to_string(f).ok())
                    .and_then(|t| parent_cgroup::stat_bytes(&t));
                if let (Some(v), Ok(mut s)) = (stat, stat_samples.lock()) {
                    s.push((Instant::now(), v / 1024));
                }
                if let (Some(v), Ok(mut s)) = (mem_available(), samples.lock()) {
                    s.push((Instant::now(), v, cg));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // A baseline over a quiet 200 ms before the launches.
    std::thread::sleep(Duration::from_millis(200));
    let before = Instant::now();
    let (t0, out) = launch_n(backend, &req, n);
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    // Every instance has ended: the parent cgroup is empty and goes now.
    drop(parent);
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let host: Vec<(Instant, u64)> = samples.iter().map(|&(t, v, _)| (t, v)).collect();
    let cg: Vec<(Instant, u64)> = samples.iter().filter_map(|&(t, _, c)| Some((t, c? / 1024))).collect();
    let baseline = median_in_window(&host, before - Duration::from_millis(250), before);
    let cg_baseline = median_in_window(&cg, before - Duration::from_millis(250), before);
    let stat = stat_samples.lock().map(|s| s.clone()).unwrap_or_default();
    let stat_baseline = median_in_window(&stat, before - Duration::from_millis(250), before);

    let all_ready = out.iter().all(|l| l.rec.error.is_none());
    let last_ready = out.iter().filter_map(ready_at).max();
    // The first to leave goes at the window's end or at its own bound, whichever is sooner.
    let first_close = out.iter().filter_map(ready_at).min().map(|t| t + req.hold);
    let pss: Vec<u64> = out.iter().filter_map(|l| l.rec.footprint.pss_kib).collect();
    // The shared daemon (dockerd, containerd, shims) at its largest while the N were starting.
    let shared = out.iter().filter_map(|l| l.rec.extra.get("shared_daemon_pss_kib").copied()).reduce(f64::max);
    let mut recs: Vec<RunRecord> = out.into_iter().map(|l| l.rec).collect();
    let Some(first) = recs.first_mut() else {
        return recs;
    };
    let nf = f64::from(n);
    first.extra.insert("density_n".into(), nf);
    if let Some(kib) = shared {
        first.extra.insert("density_shared_daemon_pss_kib".into(), kib);
        first.extra.insert("density_shared_daemon_pss_per_instance_kib".into(), kib / nf);
    }
    first.notes.extend(cg_note);
    if let Some(t) = last_ready {
        first.extra.insert("density_launch_all_ns".into(), t.duration_since(t0).as_nanos() as f64);
    }
    if pss.len() == n as usize {
        let sum: u64 = pss.iter().sum();
        first.extra.insert("density_pss_sum_kib".into(), sum as f64);
        first.extra.insert("density_pss_per_instance_kib".into(), sum as f64 / nf);
    }
    let (Some(up), Some(close)) = (last_ready, first_close) else {
        return recs; // some instance never got READY: its record says why
    };
    if !all_ready {
        return recs;
    }
    let close = close.min(up + window);
    first.extra.insert("density_window_ms".into(), close.saturating_duration_since(up).as_millis() as f64);
    if up >= close {
        first.error = Some(format!(
            "density-{n}: the {n} instances were never all up at once (hold {:?} too short for the launch spread)",
            req.hold
        ));
        return recs;
    }
    if let (Some(base), Some(during)) = (cg_baseline, median_in_window(&cg, up, close)) {
        let growth = during - base;
        first.extra.insert("density_cgroup_growth_kib".into(), growth);
        first.extra.insert("density_cgroup_per_instance_kib".into(), growth / nf);
        // The charge moves in batches: a growth within this of another is no difference.
        first.extra.insert("density_cgroup_granularity_kib".into(), parent_cgroup::charge_granularity_kib() as f64);
        first.notes.push(format!(
            "density: the cgroup charge moves in batches of {} pages per CPU (up to {} KiB here); \
             memory.stat's page counts are density_cgroup_stat_*",
            parent_cgroup::CHARGE_BATCH_PAGES,
            parent_cgroup::charge_granularity_kib()
        ));
    }
    if let (Some(base), Some(during)) = (stat_baseline, median_in_window(&stat, up, close)) {
        let growth = during - base;
        first.extra.insert("density_cgroup_stat_growth_kib".into(), growth);
        first.extra.insert("density_cgroup_stat_per_instance_kib".into(), growth / nf);
    }
    match (baseline, median_in_window(&host, up, close)) {
        (Some(base), Some(during)) => {
            let growth = base - during;
            first.extra.insert("density_memavail_growth_kib".into(), growth);
            first.extra.insert("density_memavail_per_instance_kib".into(), growth / nf);
            first.notes.push("density: MemAvailable is host-wide; other activity on the host adds noise".into());
        }
        _ => first.notes.push("density: no MemAvailable samples around the launch; only PSS is reported".into()),
    }
    recs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_mem_available_reads_kib() {
        let t = "MemTotal:  100 kB\nMemFree:   50 kB\nMemAvailable:   75 kB\n";
        assert_eq!(parse_mem_available(t), Some(75));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn median_in_window_uses_only_samples_inside() {
        let t = Instant::now();
        let s: Vec<(Instant, u64)> = (0..10).map(|i| (t + Duration::from_millis(i * 10), i * 100)).collect();
        let m = median_in_window(&s, t + Duration::from_millis(20), t + Duration::from_millis(40));
        assert_eq!(m, Some(300.0));
        assert_eq!(median_in_window(&s, t + Duration::from_secs(5), t + Duration::from_secs(6)), None);
    }
}
