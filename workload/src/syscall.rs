//! `syscall`: the cost of the cheapest system call (getppid) over N calls.

use crate::out::Report;
use crate::sys::{getppid, now_ns};

pub fn run(iters: u64) {
    // Warm up the path (first-call effects: page faults, exit handler setup).
    for _ in 0..iters.min(1000) {
        getppid();
    }
    let t = now_ns();
    let mut acc = 0isize;
    for _ in 0..iters {
        acc = acc.wrapping_add(getppid());
    }
    let ns = now_ns() - t;
    let mut r = Report::new("syscall");
    r.metric("iters", iters as f64)
        .metric("ns_per_call", ns as f64 / iters.max(1) as f64)
        .metric("ppid_sum", acc as f64)
        .metric("elapsed_ns", ns as f64);
    r.finish();
}
