//! `cvbench-vmm`: the micro-VM monitor as its own process, so the harness measures its start-up
//! and memory like a container's. One subcommand per guest kind; each converts its CLI
//! arguments into the library's config type and runs it.
//!
//! Exit status: the guest's own exit status; if the guest was stopped by a SIGTERM/SIGINT it
//! had not blocked, the VMM dies of the same signal (as the workload process would natively);
//! otherwise 124 when the run hit its timeout, 125 when the VMM could not set the VM up,
//! 126 when the guest faulted or stopped unexpectedly (the message names vector, RIP and
//! fault address), 159 when the jailed VMM made a system call outside its seccomp allow-list
//! (the message names the call).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cvbench_microvm::bare::{self, BareConfig, BareError, BareOutcome, GuestEnd, RestoreConfig};

mod vmm_linux;

const EXIT_TIMEOUT: i32 = 124;
const EXIT_VMM_ERROR: i32 = 125;
const EXIT_GUEST_CRASH: i32 = 126;

#[derive(Parser)]
#[command(name = "cvbench-vmm", about = "cvbench's KVM micro-VM monitor")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Run a static ELF directly at guest CPL3 with no guest kernel; the VMM services its
    /// system calls.
    Bare(BareArgs),
    /// Boot a Linux guest (vmlinux/PVH or bzImage) with serial, virtio-net and virtio-blk.
    Linux(vmm_linux::LinuxArgs),
    /// Restore a bare guest saved with `bare --snapshot-to DIR` and run it on: it resumes
    /// inside its read from stdin.
    BareRestore(RestoreArgs),
    /// Restore a Linux guest saved with `linux --snapshot-to DIR` and run it on: its workload
    /// resumes waiting for the go line, which this process's stdin delivers to the console.
    LinuxRestore(vmm_linux::LinuxRestoreArgs),
}

/// What both restores (`bare-restore`, `linux-restore`) take besides the guest's own facts.
#[derive(clap::Args)]
struct RestoreRun {
    /// The snapshot directory (files `memory` and `state`).
    #[arg(long)]
    snapshot: PathBuf,
    /// `lazy`: map the memory file MAP_PRIVATE (pages fault in on first touch); `eager`: read
    /// it into memory before the guest resumes.
    #[arg(long, default_value = "lazy")]
    load: cvbench_microvm::snapshot::memory::Load,
    /// Stop the guest after this many seconds (fractions allowed).
    #[arg(long)]
    timeout_s: Option<f64>,
    /// Write run statistics (phases, restore, page faults after restore) as JSON to this file.
    #[arg(long)]
    stats_json: Option<PathBuf>,
    /// Write the line `restored` to this inherited descriptor when the guest is about to resume.
    #[arg(long)]
    ready_fd: Option<i32>,
    /// Do not jail the VMM: debugging only.
    #[arg(long)]
    no_jail: bool,
}

impl RestoreRun {
    /// The stats file (created now: once jailed, the VMM can reach no path) and the
    /// `--ready-fd` descriptor, or the exit status that says why not.
    fn open(&self) -> Result<(Option<std::fs::File>, Option<std::fs::File>), i32> {
        let stats = self.stats_json.as_ref().map(std::fs::File::create).transpose().map_err(|e| {
            eprintln!("cvbench-vmm: cannot create the stats file: {e}");
            EXIT_VMM_ERROR
        })?;
        Ok((stats, inherited_fd(self.ready_fd)?))
    }
}

#[derive(clap::Args)]
struct RestoreArgs {
    #[command(flatten)]
    run: RestoreRun,
    /// Refuse the snapshot unless its guest memory is this many MiB.
    #[arg(long)]
    mem_mib: Option<u32>,
}

impl TryFrom<&RestoreArgs> for RestoreConfig {
    type Error = anyhow::Error;

    fn try_from(a: &RestoreArgs) -> anyhow::Result<RestoreConfig> {
        Ok(RestoreConfig {
            snapshot: a.run.snapshot.clone(),
            load: a.run.load,
            mem_mib: a.mem_mib,
            timeout: timeout_of(a.run.timeout_s)?,
            measure_memory: a.run.stats_json.is_some(),
            jail: !a.run.no_jail,
        })
    }
}

fn timeout_of(secs: Option<f64>) -> anyhow::Result<Option<Duration>> {
    match secs {
        Some(s) if s.is_finite() && s > 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => anyhow::bail!("--timeout-s must be a positive number of seconds, not {s}"),
        None => Ok(None),
    }
}

/// The flags that describe the VM; `--config` replaces them all.
const BARE_VM_FLAGS: [&str; 14] = [
    "snapshot_to",
    "elf",
    "mem_mib",
    "timeout_s",
    "argv0",
    "env",
    "run_dir",
    "max_file_mib",
    "net_peer_pid",
    "net_peer",
    "net_local_ip",
    "no_jail",
    "selftest_forbidden_syscall",
    "args",
];

#[derive(clap::Args)]
struct BareArgs {
    /// Read the whole run as one JSON `BareConfig` from this file instead of the flags below
    /// (what the harness passes).
    #[arg(long, conflicts_with_all = BARE_VM_FLAGS)]
    config: Option<PathBuf>,
    /// The static (ET_EXEC) executable to run.
    #[arg(long, required_unless_present = "config")]
    elf: Option<PathBuf>,
    /// Guest memory in MiB (multiple of 2, at least 32). Host memory is only used when touched.
    #[arg(long, default_value_t = bare::default_mem_mib())]
    mem_mib: u32,
    /// Stop the guest after this many seconds (fractions allowed).
    #[arg(long)]
    timeout_s: Option<f64>,
    /// `argv[0]` for the guest (default: the ELF path).
    #[arg(long)]
    argv0: Option<String>,
    /// Environment strings for the guest, KEY=VALUE (repeatable).
    #[arg(long = "env")]
    env: Vec<String>,
    /// Write run statistics (phases, exits, syscalls, KVM kind) as JSON to this file.
    #[arg(long)]
    stats_json: Option<PathBuf>,
    /// Forward file calls: the guest may use regular files beneath this directory only.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// No guest file may grow past this many MiB.
    #[arg(long, default_value_t = bare::default_max_file_mib())]
    max_file_mib: u64,
    /// Forward TCP: run in a private network namespace with a veth to the namespace of this
    /// process (the peer server).
    #[arg(long, requires_all = ["net_peer", "net_local_ip"])]
    net_peer_pid: Option<i32>,
    /// The one address the guest may connect to (the peer end of the /30).
    #[arg(long)]
    net_peer: Option<std::net::SocketAddrV4>,
    /// The VMM's end of the /30.
    #[arg(long)]
    net_local_ip: Option<std::net::Ipv4Addr>,
    /// Do not jail the VMM (no namespaces, root, capability drop or seccomp): debugging only.
    #[arg(long)]
    no_jail: bool,
    /// Test hook: once jailed, make a system call outside the allow-list.
    #[arg(long, hide = true)]
    selftest_forbidden_syscall: bool,
    /// Save the guest into this existing directory when it blocks reading stdin (`wait-go`)
    /// and exit 0; fail, leaving nothing there, if it ends first.
    #[arg(long)]
    snapshot_to: Option<PathBuf>,
    /// Print the resolved config as JSON (what `--config` takes) and exit without running.
    #[arg(long)]
    print_config: bool,
    /// Arguments for the guest after `argv[0]`.
    #[arg(last = true)]
    args: Vec<String>,
}

impl TryFrom<BareArgs> for BareConfig {
    type Error = anyhow::Error;

    fn try_from(a: BareArgs) -> anyhow::Result<BareConfig> {
        if let Some(path) = &a.config {
            let config: BareConfig = read_config(path)?;
            validate_bare(&config).with_context(|| path.display().to_string())?;
            return Ok(config);
        }
        let elf = a.elf.context("--elf or --config is required")?;
        let timeout = timeout_of(a.timeout_s)?;
        let argv0 = a.argv0.unwrap_or_else(|| elf.display().to_string());
        let mut argv = vec![argv0];
        argv.extend(a.args);
        let net = match (a.net_peer_pid, a.net_peer, a.net_local_ip) {
            (Some(peer_pid), Some(peer), Some(local_ip)) => Some(bare::net::NetConfig { peer_pid, peer, local_ip }),
            (None, None, None) => None,
            _ => anyhow::bail!("--net-peer-pid, --net-peer and --net-local-ip go together"),
        };
        Ok(BareConfig {
            elf,
            argv,
            env: a.env,
            mem_mib: a.mem_mib,
            timeout,
            measure_memory: a.stats_json.is_some(),
            run_dir: a.run_dir,
            max_file_mib: a.max_file_mib,
            net,
            jail: !a.no_jail,
            selftest_forbidden_syscall: a.selftest_forbidden_syscall,
            snapshot_to: a.snapshot_to,
        })
    }
}

/// `--print-config`: the resolved config on stdout, one JSON line.
fn print_config(config: &impl serde::Serialize) -> i32 {
    match serde_json::to_string(config) {
        Ok(json) => {
            println!("{json}");
            0
        }
        Err(e) => {
            eprintln!("cvbench-vmm: cannot serialise the config: {e}");
            EXIT_VMM_ERROR
        }
    }
}

/// A VM config file: JSON of the library's config type, whose serde rejects unknown fields.
fn read_config<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the config file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// What the flags' conversion checks and the types alone do not.
fn validate_bare(c: &BareConfig) -> anyhow::Result<()> {
    if c.timeout == Some(Duration::ZERO) {
        anyhow::bail!("timeout must be positive");
    }
    if c.argv.is_empty() {
        anyhow::bail!("argv must hold at least argv[0]");
    }
    Ok(())
}

fn main() {
    let start = std::time::Instant::now();
    let cli = Cli::parse();
    let code = match cli.mode {
        // The bare guest takes SIGTERM/SIGINT through cvbench-signals' interceptor (bare::control).
        Mode::Bare(args) => run_bare(args),
        Mode::BareRestore(args) => run_restore(&args),
        Mode::Linux(args) => {
            // Before any thread exists, so every thread inherits the mask and the Linux VMM's
            // vCPU loop collects SIGTERM/SIGINT (sigtimedwait) as a stop request.
            cvbench_signals::block_stop_signals();
            vmm_linux::run(args, start)
        }
        Mode::LinuxRestore(args) => {
            cvbench_signals::block_stop_signals();
            vmm_linux::run_restore(&args, start)
        }
    };
    std::process::exit(code);
}

fn run_bare(args: BareArgs) -> i32 {
    let stats_path = args.stats_json.clone();
    let print = args.print_config;
    let config = match BareConfig::try_from(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cvbench-vmm: {e:#}");
            return EXIT_VMM_ERROR;
        }
    };
    if print {
        return print_config(&config);
    }
    // Opened now: once jailed, the VMM can reach no path.
    let stats_file = match stats_path.as_ref().map(std::fs::File::create).transpose() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cvbench-vmm: cannot create the stats file: {e}");
            return EXIT_VMM_ERROR;
        }
    };
    finish_bare(bare::run(&config), stats_file)
}

fn run_restore(args: &RestoreArgs) -> i32 {
    let config = match RestoreConfig::try_from(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cvbench-vmm: {e:#}");
            return EXIT_VMM_ERROR;
        }
    };
    let (stats_file, ready) = match args.run.open() {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    finish_bare(bare::restore(&config, ready), stats_file)
}

/// `--ready-fd`: a descriptor this process inherited open, and never stdio.
fn inherited_fd(fd: Option<i32>) -> Result<Option<std::fs::File>, i32> {
    match fd {
        Some(fd) if fd > 2 && std::fs::metadata(format!("/proc/self/fd/{fd}")).is_ok() => {
            // SAFETY: `fd` is open in this process (checked above) and nothing else here owns it;
            // the harness passed it for this one use.
            Ok(Some(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) }))
        }
        Some(fd) => {
            eprintln!("cvbench-vmm: --ready-fd {fd} is not an open descriptor above 2");
            Err(EXIT_VMM_ERROR)
        }
        None => Ok(None),
    }
}

/// Write the stats and turn a bare run's end into the exit status.
fn finish_bare(result: Result<BareOutcome, BareError>, stats_file: Option<std::fs::File>) -> i32 {
    match result {
        Ok(outcome) => {
            if let Some(file) = stats_file {
                if let Err(e) = write_stats(file, &outcome.stats) {
                    eprintln!("cvbench-vmm: {e:#}");
                }
            }
            match outcome.end {
                GuestEnd::Exited(code) => code,
                GuestEnd::Signalled(sig) => die_of(sig),
                GuestEnd::Snapshotted => 0,
                // Only the Linux guest ends these ways.
                GuestEnd::PowerOff | GuestEnd::Timeout | GuestEnd::Failed(_) => EXIT_GUEST_CRASH,
            }
        }
        Err(e) => {
            eprintln!("cvbench-vmm: {}", error_chain(&e));
            match e {
                BareError::Timeout(_) => EXIT_TIMEOUT,
                BareError::GuestFault { .. } | BareError::TripleFault { .. } | BareError::UnexpectedExit { .. } => {
                    EXIT_GUEST_CRASH
                }
                _ => EXIT_VMM_ERROR,
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn write_stats(mut file: std::fs::File, stats: &impl serde::Serialize) -> anyhow::Result<()> {
    let json = serde_json::to_vec(stats).context("serialising run statistics")?;
    std::io::Write::write_all(&mut file, &json).context("writing the stats file")
}

/// Terminate the VMM with signal `sig`, as the guest program would have died natively.
fn die_of(sig: i32) -> i32 {
    // SAFETY: resetting a disposition, unblocking and raising are plain libc calls on our own
    // process; sigset is initialised by sigemptyset before use.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
    128 + sig
}
