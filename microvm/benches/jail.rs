//! Start-up cost of the VMM's jail, side by side: `cvbench-vmm bare` running the workload's
//! `noop` to exit, jailed (the default) and with `--no-jail`. Each sample is one whole VMM
//! process, spawned and waited for. Needs root, /dev/kvm, the release workload and the
//! `cvbench-vmm` binary of the same profile; else it says SKIPPED.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

fn vmm() -> PathBuf {
    let exe = std::env::current_exe().expect("bench path");
    // target/<profile>/deps/jail-<hash> -> target/<profile>/cvbench-vmm
    exe.parent().and_then(|d| d.parent()).expect("target dir").join("cvbench-vmm")
}

fn workload() -> PathBuf {
    std::env::var_os("CVBENCH_WORKLOAD").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../workload/target/release/cvbench-workload")
    })
}

fn run_once(no_jail: bool) -> Duration {
    let mut cmd = Command::new(vmm());
    cmd.arg("bare").arg("--elf").arg(workload());
    if no_jail {
        cmd.arg("--no-jail");
    }
    cmd.args(["--", "noop"]).stdout(Stdio::null());
    let t = Instant::now();
    let status = cmd.status().expect("spawn cvbench-vmm");
    let d = t.elapsed();
    assert!(status.success(), "cvbench-vmm failed: {status:?}");
    d
}

fn jail(c: &mut Criterion) {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !vmm().exists() || !workload().exists() || cvbench_microvm::kvm_probe().usable().is_err() {
        eprintln!("SKIPPED: the jail bench needs root, /dev/kvm, {} and {}", vmm().display(), workload().display());
        return;
    }
    let mut g = c.benchmark_group("vmm_startup_noop");
    g.sample_size(30);
    for (name, no_jail) in [("jailed", false), ("no_jail", true)] {
        g.bench_function(name, |b| b.iter_custom(|iters| (0..iters).map(|_| run_once(no_jail)).sum()));
    }
    g.finish();
}

criterion_group!(benches, jail);
criterion_main!(benches);
