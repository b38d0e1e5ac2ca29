//! `cvbench-vmm linux`: the Linux-guest mode of the VMM binary. Converts its arguments into
//! the library's `builder::Config`, boots the guest, and reports the run as one JSON object
//! (`--stats-json`) plus a one-line summary on stderr.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use cvbench_microvm::builder::{self, BlkConfig, Config, NetConfig, RunOutcome};
use cvbench_microvm::linux::vcpus::GuestEnd;

use super::{error_chain, EXIT_GUEST_CRASH, EXIT_TIMEOUT, EXIT_VMM_ERROR};

#[derive(clap::Args)]
pub struct LinuxArgs {
    /// Guest kernel: vmlinux with a PVH entry (fast path) or bzImage.
    #[arg(long)]
    kernel: PathBuf,
    /// Initramfs (uncompressed newc cpio).
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Extra kernel command-line text, appended to the generated one.
    #[arg(long, default_value = "")]
    cmdline: String,
    #[arg(long, default_value_t = 128)]
    mem_mib: u64,
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// Network namespace file (e.g. /run/netns/NAME) to create the tap in; enables virtio-net.
    #[arg(long, requires_all = ["net_tap", "net_host_ip", "net_guest_ip"])]
    net_netns: Option<PathBuf>,
    #[arg(long)]
    net_tap: Option<String>,
    #[arg(long)]
    net_host_ip: Option<Ipv4Addr>,
    #[arg(long)]
    net_guest_ip: Option<Ipv4Addr>,
    /// Raw disk image for virtio-blk.
    #[arg(long)]
    blk: Option<PathBuf>,
    #[arg(long)]
    blk_read_only: bool,
    /// Serial console output file (default: stdout).
    #[arg(long)]
    console: Option<PathBuf>,
    /// Stop the guest after this many seconds.
    #[arg(long)]
    timeout_s: Option<f64>,
    /// kvm_pvm workarounds: auto (detect), on, off.
    #[arg(long, default_value = "auto")]
    pvm_workarounds: String,
    /// Write the run's timings and end as JSON to this file.
    #[arg(long, alias = "boot-timer-out")]
    stats_json: Option<PathBuf>,
    /// Arguments for the guest /init (the workload subcommand and its arguments).
    #[arg(last = true)]
    init_args: Vec<String>,
}

impl TryFrom<LinuxArgs> for Config {
    type Error = anyhow::Error;

    fn try_from(a: LinuxArgs) -> anyhow::Result<Config> {
        let timeout_ms = match a.timeout_s {
            Some(s) if s.is_finite() && s > 0.0 => Some((s * 1000.0) as u64),
            Some(s) => anyhow::bail!("--timeout-s must be a positive number of seconds, not {s}"),
            None => None,
        };
        let pvm_workarounds = match a.pvm_workarounds.as_str() {
            "auto" => None,
            "on" => Some(true),
            "off" => Some(false),
            other => anyhow::bail!("--pvm-workarounds takes auto, on or off, not {other:?}"),
        };
        let net = match a.net_netns {
            Some(netns) => Some(NetConfig {
                netns,
                tap: a.net_tap.context("--net-tap is required with --net-netns")?,
                host_ip: a.net_host_ip.context("--net-host-ip is required")?,
                guest_ip: a.net_guest_ip.context("--net-guest-ip is required")?,
                prefix_len: 30,
            }),
            None => None,
        };
        Ok(Config {
            kernel: a.kernel,
            initrd: a.initrd,
            cmdline_extra: a.cmdline,
            init_args: a.init_args,
            mem_mib: a.mem_mib,
            vcpus: a.vcpus,
            net,
            blk: a.blk.map(|path| BlkConfig { path, read_only: a.blk_read_only }),
            console: a.console,
            timeout_ms,
            pvm_workarounds,
        })
    }
}

fn ms(d: Option<Duration>) -> serde_json::Value {
    d.map_or(serde_json::Value::Null, |d| serde_json::json!(d.as_secs_f64() * 1000.0))
}

/// The run as JSON: what the harness and the tests read.
pub fn outcome_json(o: &RunOutcome) -> serde_json::Value {
    let (end, detail) = match &o.end {
        GuestEnd::PowerOff => ("power_off", String::new()),
        GuestEnd::Timeout => ("timeout", String::new()),
        GuestEnd::Failed(e) => ("failed", e.clone()),
        GuestEnd::Stopped(sig) => ("stopped", format!("signal {sig}")),
    };
    serde_json::json!({
        "kvm_kind": o.kvm_kind,
        "end": end,
        "end_detail": detail,
        "exit_status": o.boot.exit_status,
        "kernel_init_ms": ms(o.boot.kernel_init),
        "user_init_ms": ms(o.boot.user_init),
        "first_kvm_run_ms": ms(o.first_kvm_run),
        "total_ms": o.total.as_secs_f64() * 1000.0,
        "cmdline": o.cmdline,
        "notes": o.notes,
    })
}

/// Run the Linux guest; returns the process exit status.
pub fn run(args: LinuxArgs, start: Instant) -> i32 {
    let stats_path = args.stats_json.clone();
    let config = match Config::try_from(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cvbench-vmm: {e:#}");
            return EXIT_VMM_ERROR;
        }
    };
    exit_on_stop_signal();
    let outcome = match builder::build_and_boot_from(&config, start) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cvbench-vmm: {}", error_chain(&e));
            return EXIT_VMM_ERROR;
        }
    };
    let json = outcome_json(&outcome);
    eprintln!("cvbench-vmm: linux guest: {json}");
    if let Some(path) = stats_path {
        if let Err(e) = std::fs::write(&path, json.to_string()) {
            eprintln!("cvbench-vmm: cannot write {}: {e}", path.display());
        }
    }
    match (&outcome.end, outcome.boot.exit_status) {
        (GuestEnd::PowerOff, Some(code)) => i32::from(code),
        (GuestEnd::PowerOff, None) => {
            eprintln!("cvbench-vmm: the guest stopped without reporting a workload exit status");
            EXIT_GUEST_CRASH
        }
        (GuestEnd::Timeout, _) => EXIT_TIMEOUT,
        (GuestEnd::Failed(_), _) => EXIT_GUEST_CRASH,
        (GuestEnd::Stopped(sig), _) => 128 + sig,
    }
}

/// SIGTERM/SIGINT become a stop request through the process's signal owner (graceful mode):
/// the vCPUs are stopped, the stats are written, and the exit closes the tap fd (removing the
/// tap). A second signal ends the VMM at once. The VMM creates no other host state.
fn exit_on_stop_signal() {
    cvbench_signals::install();
    cvbench_signals::set_mode(cvbench_signals::Mode::Graceful);
}
