//! What the harness's integration tests share: one small case of every workload (arguments
//! that finish in well under a second, and the metric its result must carry) and one way to
//! run a case on a backend through the runner.

use std::time::Duration;

use cvbench::backend::BackendId;
use cvbench::record::RunRecord;
use cvbench::runner::{run, RunRequest};

/// Every workload, small: (workload, arguments, a metric it must report above 0; "" for none).
pub const SMALL_CASES: &[(&str, &[&str], &str)] = &[
    ("noop", &[], ""),
    ("cpu", &["--sha-mib", "1", "--sieve-n", "100000", "--matmul-n", "16"], "sieve_primes"),
    ("mem-bw", &["--array-mib", "2", "--iters", "1"], "triad_gb_s"),
    ("mem-touch", &["--touch-mib", "2", "--chase-mib", "1", "--accesses", "1000"], "touch_ns_per_page"),
    ("syscall", &["--iters", "1000"], "ns_per_call"),
    ("net-stream", &["--mib", "4"], "gbit_per_s"),
    ("net-rr", &["--requests", "50"], "p99_us"),
    ("disk", &["--size-mib", "2", "--rand-ops", "4"], "rand_write_iops"),
    ("idle", &[], "idle_ns"),
];

/// One run of `workload args` on `b`, footprint sampled, through the harness's runner.
pub fn record(b: BackendId, workload: &str, args: &[&str]) -> RunRecord {
    let backend = b.backend();
    let mut req =
        RunRequest::new(workload.parse().expect("a known workload"), args.iter().map(|s| s.to_string()).collect());
    req.sample_footprint = true;
    req.timeout = Duration::from_secs(120);
    run(backend.as_ref(), &req)
}
