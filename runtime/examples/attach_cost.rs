//! Measures the cgroup v1 attach cost this runtime works around: writing another process's
//! pid to `cgroup.procs` (takes the global threadgroup rwsem: an RCU grace period when the
//! rwsem was idle) versus the process writing "0" to `tasks` itself (single-thread move of
//! `current`: the kernel skips that rwsem). Run as root: `cargo run --release --example
//! attach_cost -p cvbench-runtime`.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let own = cvbench_runtime::cgroups::parse_proc_cgroup(&fs::read_to_string("/proc/self/cgroup")?);
    let dir: PathBuf = PathBuf::from("/sys/fs/cgroup/memory")
        .join(own.get("memory").map(|p| p.trim_start_matches('/')).unwrap_or(""))
        .join(format!("cvbench-{}-attach", std::process::id()));
    fs::create_dir(&dir)?;
    let (mut by_parent, mut by_self) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        // Let the rwsem's rcu_sync fall back to idle, as between benchmark runs.
        std::thread::sleep(Duration::from_millis(50));
        let mut child = std::process::Command::new("sleep").arg("1").spawn()?;
        let t = Instant::now();
        fs::write(dir.join("cgroup.procs"), child.id().to_string())?;
        by_parent.push(t.elapsed().as_secs_f64() * 1e3);
        child.kill()?;
        child.wait()?;

        std::thread::sleep(Duration::from_millis(50));
        let tasks = dir.join("tasks");
        let (rd, wr) = nix::unistd::pipe()?;
        // SAFETY: the child only opens/writes a file and exits with _exit.
        match unsafe { nix::unistd::fork() }? {
            nix::unistd::ForkResult::Child => {
                let t = Instant::now();
                let ok = fs::OpenOptions::new().write(true).open(&tasks).and_then(|mut f| f.write_all(b"0")).is_ok();
                let us = t.elapsed().as_nanos() as u64;
                let mut w = fs::File::from(wr);
                let _ = w.write_all(&(if ok { us } else { u64::MAX }).to_ne_bytes());
                // SAFETY: leave the forked child immediately.
                unsafe { libc::_exit(0) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(wr);
                let mut b = [0u8; 8];
                std::io::Read::read_exact(&mut fs::File::from(rd), &mut b)?;
                nix::sys::wait::waitpid(child, None)?;
                let ns = u64::from_ne_bytes(b);
                anyhow::ensure!(ns != u64::MAX, "self-attach failed");
                by_self.push(ns as f64 / 1e6);
            }
        }
    }
    fs::remove_dir(&dir)?;
    println!(
        "cgroup v1 memory attach, 20 samples after 50 ms idle each: parent writes pid to \
         cgroup.procs median {:.3} ms (max {:.3}); child writes 0 to tasks median {:.3} ms (max {:.3})",
        median(by_parent.clone()),
        by_parent.iter().cloned().fold(0.0, f64::max),
        median(by_self.clone()),
        by_self.iter().cloned().fold(0.0, f64::max)
    );
    Ok(())
}
