//! `cvbench-vmm linux`: the Linux-guest mode of the VMM binary. Converts its arguments into
//! the library's `builder::Config`, boots the guest, and reports the run as one typed
//! [`LinuxStats`](cvbench_microvm::stats::LinuxStats) JSON object (`--stats-json`) plus a
//! one-line summary on stderr.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use cvbench_microvm::builder::{self, BlkConfig, Config, NetConfig};
use cvbench_microvm::linux::restore::{self, RestoreConfig};
use cvbench_microvm::stats::GuestEnd;
use cvbench_microvm::vstate::StopRequest;

use super::{error_chain, EXIT_GUEST_CRASH, EXIT_TIMEOUT, EXIT_VMM_ERROR};

/// The flags that describe the VM; `--config` replaces them all.
const LINUX_VM_FLAGS: [&str; 18] = [
    "snapshot_to",
    "console_input",
    "kernel",
    "initrd",
    "cmdline",
    "mem_mib",
    "vcpus",
    "net_netns",
    "net_tap",
    "net_host_ip",
    "net_guest_ip",
    "blk",
    "blk_read_only",
    "console",
    "timeout_s",
    "pvm_workarounds",
    "no_jail",
    "init_args",
];

#[derive(clap::Args)]
pub struct LinuxArgs {
    /// Read the whole VM as one JSON `builder::Config` from this file instead of the flags
    /// below (what the harness passes).
    #[arg(long, conflicts_with_all = LINUX_VM_FLAGS)]
    config: Option<PathBuf>,
    /// Guest kernel: vmlinux with a PVH entry (fast path) or bzImage.
    #[arg(long, required_unless_present = "config")]
    kernel: Option<PathBuf>,
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
    #[command(flatten)]
    devices: DeviceArgs,
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
    /// Do not jail the VMM (no namespaces, root, capability drop or seccomp): debugging only.
    #[arg(long)]
    no_jail: bool,
    /// Save the guest into this existing directory when its workload prints READY (`wait-go`)
    /// and exit 0; fail, leaving nothing there, if the guest ends first.
    #[arg(long)]
    snapshot_to: Option<PathBuf>,
    /// Forward stdin to the guest console (the workload's stdin, e.g. `wait-go`'s go line).
    #[arg(long)]
    console_input: bool,
    /// Print the resolved config as JSON (what `--config` takes) and exit without booting.
    #[arg(long)]
    print_config: bool,
    /// Arguments for the guest /init (the workload subcommand and its arguments).
    #[arg(last = true)]
    init_args: Vec<String>,
}

impl TryFrom<LinuxArgs> for Config {
    type Error = anyhow::Error;

    fn try_from(a: LinuxArgs) -> anyhow::Result<Config> {
        if let Some(path) = &a.config {
            let config: Config = super::read_config(path)?;
            validate(&config).with_context(|| path.display().to_string())?;
            return Ok(config);
        }
        let kernel = a.kernel.context("--kernel or --config is required")?;
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
        let (net, blk) = a.devices.configs()?;
        Ok(Config {
            kernel,
            initrd: a.initrd,
            cmdline_extra: a.cmdline,
            init_args: a.init_args,
            mem_mib: a.mem_mib,
            vcpus: a.vcpus,
            net,
            blk,
            console: a.console,
            timeout_ms,
            pvm_workarounds,
            jail: !a.no_jail,
            snapshot_to: a.snapshot_to,
            console_input: a.console_input,
        })
    }
}

/// The virtio devices' back ends, shared by `linux` and `linux-restore`.
#[derive(clap::Args)]
struct DeviceArgs {
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
}

impl DeviceArgs {
    /// The network (a /30) and the disk the flags describe.
    fn configs(&self) -> anyhow::Result<(Option<NetConfig>, Option<BlkConfig>)> {
        let net = match &self.net_netns {
            Some(netns) => Some(NetConfig {
                netns: netns.clone(),
                tap: self.net_tap.clone().context("--net-tap is required with --net-netns")?,
                host_ip: self.net_host_ip.context("--net-host-ip is required")?,
                guest_ip: self.net_guest_ip.context("--net-guest-ip is required")?,
                prefix_len: 30,
            }),
            None => None,
        };
        let blk = self.blk.clone().map(|path| BlkConfig { path, read_only: self.blk_read_only });
        Ok((net, blk))
    }
}

/// What the flags' conversion checks and the types alone do not.
fn validate(c: &Config) -> anyhow::Result<()> {
    if c.timeout_ms == Some(0) {
        anyhow::bail!("timeout_ms must be positive");
    }
    Ok(())
}

/// Run the Linux guest; returns the process exit status.
pub fn run(args: LinuxArgs, start: Instant) -> i32 {
    let stats_path = args.stats_json.clone();
    let print = args.print_config;
    let config = match Config::try_from(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cvbench-vmm: {e:#}");
            return EXIT_VMM_ERROR;
        }
    };
    if print {
        return super::print_config(&config);
    }
    // SIGTERM/SIGINT are blocked in every thread (see `main`); the vCPU loop collects them.
    let stop = StopRequest::collecting_stop_signals();
    // Opened now: once jailed, the VMM can reach no path.
    let stats_file = match stats_path.as_ref().map(std::fs::File::create).transpose() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cvbench-vmm: cannot create the stats file: {e}");
            return EXIT_VMM_ERROR;
        }
    };
    finish(builder::build_and_boot_from(&config, start, &stop), stats_file, stats_path)
}

/// `cvbench-vmm linux-restore`: restore a Linux guest saved with `linux --snapshot-to`.
#[derive(clap::Args)]
pub struct LinuxRestoreArgs {
    #[command(flatten)]
    run: super::RestoreRun,
    /// Refuse the snapshot unless its guest memory is this many MiB.
    #[arg(long)]
    mem_mib: Option<u64>,
    /// Serial console output file (default: stdout).
    #[arg(long)]
    console: Option<PathBuf>,
    /// The guest's disk and network, when it was saved with them: the same image, and a
    /// namespace for a new tap with the addresses the guest was saved with.
    #[command(flatten)]
    devices: DeviceArgs,
}

impl TryFrom<&LinuxRestoreArgs> for RestoreConfig {
    type Error = anyhow::Error;

    fn try_from(a: &LinuxRestoreArgs) -> anyhow::Result<RestoreConfig> {
        let (net, blk) = a.devices.configs()?;
        Ok(RestoreConfig {
            net,
            blk,
            snapshot: a.run.snapshot.clone(),
            load: a.run.load,
            mem_mib: a.mem_mib,
            console: a.console.clone(),
            timeout_ms: super::timeout_of(a.run.timeout_s)?.map(|d| d.as_millis() as u64),
            jail: !a.run.no_jail,
        })
    }
}

/// Restore and run the Linux guest; returns the process exit status.
pub fn run_restore(args: &LinuxRestoreArgs, start: Instant) -> i32 {
    let config = match RestoreConfig::try_from(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cvbench-vmm: {e:#}");
            return EXIT_VMM_ERROR;
        }
    };
    let stop = StopRequest::collecting_stop_signals();
    let (stats_file, ready) = match args.run.open() {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    finish(restore::restore(&config, start, &stop, ready), stats_file, args.run.stats_json.clone())
}

/// Report a Linux run (stats file, summary line) and turn its end into the exit status.
fn finish(
    result: Result<builder::RunOutcome, builder::BuildError>,
    stats_file: Option<std::fs::File>,
    stats_path: Option<PathBuf>,
) -> i32 {
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cvbench-vmm: {}", error_chain(&e));
            return EXIT_VMM_ERROR;
        }
    };
    let json = serde_json::to_string(&outcome.stats()).unwrap_or_default();
    eprintln!("cvbench-vmm: linux guest: {json}");
    if let (Some(mut file), Some(path)) = (stats_file, stats_path) {
        if let Err(e) = std::io::Write::write_all(&mut file, json.as_bytes()) {
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
        (GuestEnd::Snapshotted, _) => 0,
        (GuestEnd::Failed(_), _) => EXIT_GUEST_CRASH,
        (GuestEnd::Signalled(sig), _) => 128 + sig,
        // The bare guest's end; a Linux guest reports its status through the boot timer.
        (GuestEnd::Exited(code), _) => *code,
    }
}
