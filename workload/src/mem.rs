//! `mem-bw` (STREAM-style copy/scale/add/triad bandwidth) and `mem-touch`
//! (first-touch page-fault cost and a dependent random-access pointer chase).

use crate::opts::{Opts, UsageError};
use crate::out::Report;
use crate::sys::{now_ns, Errno, Mapping};

const PAGE: usize = 4096;

/// STREAM kernels over three arrays of `mib` MiB each, best of `iters` runs.
pub fn bandwidth(mib: u64, iters: u64) -> Result<(), Errno> {
    let bytes = (mib as usize) << 20;
    let mut ma = Mapping::new(bytes)?;
    let mut mb = Mapping::new(bytes)?;
    let mut mc = Mapping::new(bytes)?;
    let (a, b, c) = (ma.slice_mut::<f64>(), mb.slice_mut::<f64>(), mc.slice_mut::<f64>());
    for i in 0..a.len() {
        a[i] = 1.0;
        b[i] = 2.0;
        c[i] = 0.0;
    }
    let q = 3.0;
    let mut best = [u64::MAX; 4];
    let t_all = now_ns();
    for _ in 0..iters {
        let t = now_ns();
        c.copy_from_slice(a);
        best[0] = best[0].min(now_ns() - t);
        let t = now_ns();
        for (bi, ci) in b.iter_mut().zip(c.iter()) {
            *bi = q * *ci;
        }
        best[1] = best[1].min(now_ns() - t);
        let t = now_ns();
        for i in 0..c.len() {
            c[i] = a[i] + b[i];
        }
        best[2] = best[2].min(now_ns() - t);
        let t = now_ns();
        for i in 0..a.len() {
            a[i] = b[i] + q * c[i];
        }
        best[3] = best[3].min(now_ns() - t);
    }
    let elapsed = now_ns() - t_all;
    // Bytes moved per kernel, counted as STREAM counts them.
    let moved = [2.0, 2.0, 3.0, 3.0].map(|k| k * bytes as f64);
    let gbs = |i: usize| moved[i] / best[i].max(1) as f64;
    let mut r = Report::new("mem-bw");
    r.metric("array_mib", mib as f64)
        .metric("iters", iters as f64)
        .metric("copy_gb_s", gbs(0))
        .metric("scale_gb_s", gbs(1))
        .metric("add_gb_s", gbs(2))
        .metric("triad_gb_s", gbs(3))
        .metric("check", a[a.len() / 2])
        .metric("elapsed_ns", elapsed as f64);
    r.finish();
    Ok(())
}

/// xorshift64: a fixed-seed generator so every backend chases the same cycle.
pub fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// Turn `next` into one random cycle through all its indices (Sattolo).
pub fn sattolo(next: &mut [u32], seed: u64) {
    for (i, x) in next.iter_mut().enumerate() {
        *x = i as u32;
    }
    let mut s = seed;
    let mut i = next.len();
    while i > 1 {
        i -= 1;
        let j = (xorshift(&mut s) % i as u64) as usize;
        next.swap(i, j);
    }
}

/// `mem-touch` options.
pub struct TouchParams {
    pub touch_mib: u64,
    pub chase_mib: u64,
    pub accesses: u64,
}

impl TouchParams {
    pub fn from_opts(o: &mut Opts) -> Result<TouchParams, UsageError> {
        Ok(TouchParams {
            touch_mib: o.num("touch-mib", 128, 1, crate::MIB_MAX)?,
            chase_mib: o.num("chase-mib", 32, 1, 1 << 14)?,
            accesses: o.num("accesses", 4_000_000, 1, 1 << 40)?,
        })
    }
}

/// First touch of `mib` MiB of fresh anonymous pages, then `accesses`
/// dependent loads through a random cycle spanning `chase_mib` MiB.
pub fn touch(p: &TouchParams) -> Result<Report, Errno> {
    let (mib, chase_mib, accesses) = (p.touch_mib, p.chase_mib, p.accesses);
    let bytes = (mib as usize) << 20;
    let mut m = Mapping::new(bytes)?;
    let base = m.as_mut_ptr();
    let pages = m.len() / PAGE;
    let t = now_ns();
    for p in 0..pages {
        // SAFETY: p * PAGE < len, inside the mapping owned by `m`.
        unsafe { core::ptr::write_volatile(base.add(p * PAGE), 1) };
    }
    let touch_ns = now_ns() - t;
    drop(m);

    let mut cm = Mapping::new((chase_mib as usize) << 20)?;
    let next = cm.slice_mut::<u32>();
    sattolo(next, 0x9E37_79B9_7F4A_7C15);
    let mut i = 0u32;
    let t = now_ns();
    for _ in 0..accesses {
        i = next[i as usize];
    }
    let chase_ns = now_ns() - t;

    let mut r = Report::new("mem-touch");
    r.metric("touch_mib", mib as f64)
        .metric("touch_pages", pages as f64)
        .metric("touch_ns_per_page", touch_ns as f64 / pages.max(1) as f64)
        .metric("touch_mib_per_s", mib as f64 / (touch_ns.max(1) as f64 / 1e9))
        .metric("chase_mib", chase_mib as f64)
        .metric("chase_accesses", accesses as f64)
        .metric("chase_ns_per_access", chase_ns as f64 / accesses.max(1) as f64)
        .metric("chase_end", i as f64)
        .metric("touch_ns", touch_ns as f64)
        .metric("chase_ns", chase_ns as f64)
        .metric("timed_region_min_ns", touch_ns.min(chase_ns) as f64)
        .metric("elapsed_ns", (touch_ns + chase_ns) as f64);
    Ok(r)
}
