//! `cvbench run`: one workload, one backend, one record.

use anyhow::Context;
use clap::{Args, ValueEnum};
use std::time::Duration;

use cvbench::backend::{self, BackendOptions, NetMode};
use cvbench::record::RunRecord;
use cvbench::runner::{self, RunRequest};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Workload {
    Noop,
    Idle,
    Cpu,
    MemBw,
    MemTouch,
    Syscall,
    NetStream,
    NetRr,
    Disk,
}

impl Workload {
    pub fn subcommand(self) -> &'static str {
        match self {
            Workload::Noop => "noop",
            Workload::Idle => "idle",
            Workload::Cpu => "cpu",
            Workload::MemBw => "mem-bw",
            Workload::MemTouch => "mem-touch",
            Workload::Syscall => "syscall",
            Workload::NetStream => "net-stream",
            Workload::NetRr => "net-rr",
            Workload::Disk => "disk",
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Seccomp {
    Default,
    Unconfined,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Backend: native, container, microvm-bare, microvm.
    #[arg(long, short)]
    pub backend: String,
    /// Workload to run.
    #[arg(long, short, value_enum)]
    pub workload: Workload,
    /// Print the record as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Kill the run after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
    /// For `idle`: keep it up this many milliseconds after READY (footprint is sampled then).
    #[arg(long, default_value_t = 0)]
    pub hold_ms: u64,
    /// Containers: keep all capabilities and drop seccomp and masked paths.
    #[arg(long)]
    pub privileged: bool,
    /// Containers: seccomp profile.
    #[arg(long, value_enum, default_value = "default")]
    pub seccomp: Seccomp,
    /// Containers: network mode.
    #[arg(long, value_enum)]
    pub net: Option<NetArg>,
    /// Containers: memory limit, in MiB.
    #[arg(long)]
    pub memory_mib: Option<u64>,
    /// Containers: CPU quota, percent of one CPU.
    #[arg(long)]
    pub cpu_pct: Option<u32>,
    /// Containers: maximum number of tasks.
    #[arg(long)]
    pub pids_max: Option<u64>,
    /// Containers: comma-separated namespaces (pid,mount,uts,ipc,net,cgroup,user).
    #[arg(long, value_delimiter = ',')]
    pub namespaces: Option<Vec<String>>,
    /// Containers: image name in the local store.
    #[arg(long)]
    pub image: Option<String>,
    /// VMs: guest memory in MiB.
    #[arg(long)]
    pub guest_mem_mib: Option<u32>,
    /// Arguments for the workload itself (after `--`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum NetArg {
    None,
    Loopback,
    Veth,
}

impl TryFrom<&RunArgs> for RunRequest {
    type Error = anyhow::Error;

    fn try_from(a: &RunArgs) -> anyhow::Result<RunRequest> {
        if a.timeout_s == 0 {
            anyhow::bail!("--timeout-s must be at least 1");
        }
        let mut r = RunRequest::new(a.workload.subcommand(), a.args.clone());
        r.timeout = Duration::from_secs(a.timeout_s);
        r.hold = Duration::from_millis(a.hold_ms);
        r.sample_footprint = true;
        r.options = BackendOptions {
            privileged: a.privileged,
            seccomp_unconfined: matches!(a.seccomp, Seccomp::Unconfined),
            net: match a.net {
                None | Some(NetArg::None) => NetMode::None,
                Some(NetArg::Loopback) => NetMode::Loopback,
                Some(NetArg::Veth) => NetMode::Veth,
            },
            namespaces: a.namespaces.clone(),
            memory_limit: a.memory_mib.map(|m| m << 20),
            cpu_quota_pct: a.cpu_pct,
            pids_limit: a.pids_max,
            image: a.image.clone(),
            guest_mem_mib: a.guest_mem_mib,
            vcpus: None,
        };
        Ok(r)
    }
}

pub fn execute(a: RunArgs) -> anyhow::Result<i32> {
    let backend = backend::by_name(&a.backend)?;
    if let Err(reason) = backend.check() {
        anyhow::bail!("backend {} cannot run here: {reason}", a.backend);
    }
    let mut req = RunRequest::try_from(&a)?;
    req.env_id = cvbench::env::cached_env_id();
    let rec = runner::run(backend.as_ref(), &req);
    if a.json {
        println!("{}", serde_json::to_string(&rec).context("serialising the record")?);
    } else {
        print_summary(&rec);
    }
    Ok(if rec.error.is_some() { 1 } else { 0 })
}

fn ms(ns: Option<u64>) -> String {
    ns.map(|n| format!("{:.3} ms", n as f64 / 1e6)).unwrap_or_else(|| "-".into())
}

fn print_summary(r: &RunRecord) {
    println!("backend   {}", r.backend);
    println!("workload  {} {}", r.workload, r.args.join(" "));
    println!("ready     {}", ms(r.host.launch_to_ready_ns));
    println!("exit      {}", ms(r.host.launch_to_exit_ns));
    for (name, ns) in &r.host.phases {
        println!("  phase {name:<20} {:.3} ms", *ns as f64 / 1e6);
    }
    if let Some(k) = r.footprint.peak_rss_kib {
        println!("peak RSS  {k} KiB");
    }
    if let (Some(rss), Some(pss)) = (r.footprint.rss_kib, r.footprint.pss_kib) {
        println!("RSS/PSS   {rss} / {pss} KiB (sampled at READY)");
    }
    for (k, v) in &r.metrics {
        println!("  {k:<24} {v}");
    }
    for (k, v) in &r.extra {
        println!("  [{k}] {v}");
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    if let Some(e) = &r.error {
        println!("error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn run_args_convert_into_a_request() {
        let t = T::try_parse_from([
            "x",
            "--backend",
            "container",
            "--workload",
            "mem-bw",
            "--memory-mib",
            "64",
            "--",
            "--array-mib",
            "4",
        ])
        .unwrap();
        let r = RunRequest::try_from(&t.run).unwrap();
        assert_eq!(r.workload, "mem-bw");
        assert_eq!(r.args, vec!["--array-mib", "4"]);
        assert_eq!(r.options.memory_limit, Some(64 << 20));
    }

    #[test]
    fn unknown_workload_is_rejected() {
        assert!(T::try_parse_from(["x", "--backend", "native", "--workload", "fork-bomb"]).is_err());
    }

    #[test]
    fn zero_timeout_is_rejected() {
        let t = T::try_parse_from(["x", "-b", "native", "-w", "noop", "--timeout-s", "0"]).unwrap();
        assert!(RunRequest::try_from(&t.run).is_err());
    }
}
