//! `cvbench-runtime`: the OCI verbs (create/start/state/kill/delete/run) over bundles, plus
//! image store commands, `gc`, and `run-image` for running an image straight from the store.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use cvbench_runtime::config::{ContainerConfig, NetMode, Resources, RootfsSource};
use cvbench_runtime::container::{self, Container, Stdio};
use cvbench_runtime::image::{build, import, Store};
use cvbench_runtime::{checkpoint, cleanup, namespaces, oci, seccomp};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "cvbench-runtime", about = "cvbench's minimal OCI container runtime")]
struct Cli {
    /// For the OCI verbs (create/start/state/kill/delete/run/exec/ps), the container state
    /// directory, as in runc; for image commands and run-image, the image store (default
    /// /var/lib/cvbench).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Per-container runtime state (OCI state, subnet claims); default: --root for the OCI
    /// verbs, else /run/cvbench, or /dev/shm/cvbench when /run is not a tmpfs.
    #[arg(long, global = true)]
    run_root: Option<PathBuf>,
    /// Also write errors to this file (runc's --log, read by containerd).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Format of --log: text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    /// Manage cgroups through systemd (not supported: a clear error).
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Print debug output (accepted for runc compatibility).
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a container from an OCI bundle; it waits for `start`.
    Create(CreateArgs),
    /// Start a created container.
    Start { id: String },
    /// Print the OCI state JSON.
    State { id: String },
    /// Send a signal (number or name like TERM/KILL).
    Kill {
        id: String,
        #[arg(default_value = "TERM")]
        signal: String,
        /// Signal every process in the container's cgroup.
        #[arg(long, short)]
        all: bool,
    },
    /// Delete a stopped container (or a running one with --force).
    Delete {
        id: String,
        #[arg(long, short)]
        force: bool,
    },
    /// create + start + wait + delete of a bundle; exits with the container's status.
    Run(CreateArgs),
    /// Run a process in a running container (process.json as `docker exec` passes it).
    Exec(ExecArgs),
    /// Checkpoint a running container through criu into --image-path (the container stops).
    Checkpoint {
        id: String,
        #[arg(long)]
        image_path: PathBuf,
        /// Accepted for runc compatibility: criu's logs go to the container's state dir.
        #[arg(long)]
        work_path: Option<PathBuf>,
    },
    /// Restore a container from a checkpoint image (criu) and wait for it, as `run` does.
    Restore(RestoreArgs),
    /// List the processes of a container (host pids).
    Ps {
        id: String,
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Print what this runtime supports (runtime-spec `features` JSON).
    Features,
    /// Run an image from the store (default: the workload image).
    RunImage(RunImageArgs),
    /// Image store commands.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Remove leftovers of crashed runs.
    Gc,
    /// Print how many system calls the default seccomp profile blocks.
    SeccompInfo,
}

#[derive(clap::Args)]
struct CreateArgs {
    id: String,
    #[arg(long, short, default_value = ".")]
    bundle: PathBuf,
    /// Write the container's pid here.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// For process.terminal: the UNIX socket that receives the terminal's master side.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility: no session keyring is made either way.
    #[arg(long)]
    no_new_keyring: bool,
}

#[derive(clap::Args)]
struct RestoreArgs {
    id: String,
    #[arg(long, short, default_value = ".")]
    bundle: PathBuf,
    #[arg(long)]
    image_path: PathBuf,
    /// Write the restored container's pid here once it runs.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Accepted for runc compatibility: criu's logs go to the container's state dir.
    #[arg(long)]
    work_path: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ExecArgs {
    id: String,
    /// The process to run, as a runtime-spec `process` JSON file.
    #[arg(long, short)]
    process: Option<PathBuf>,
    /// Return once the process started (its parent becomes our parent's subreaper).
    #[arg(long, short)]
    detach: bool,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    #[arg(long)]
    console_socket: Option<PathBuf>,
    #[arg(long, short)]
    tty: bool,
    /// Working directory (without --process).
    #[arg(long)]
    cwd: Option<String>,
    /// Environment variables (without --process).
    #[arg(long, short)]
    env: Vec<String>,
    /// The command (without --process).
    #[arg(trailing_var_arg = true)]
    args: Vec<String>,
}

#[derive(clap::Args)]
struct RunImageArgs {
    #[arg(long, default_value = cvbench_runtime::image::DEFAULT_IMAGE)]
    image: String,
    /// Build/refresh the default image from this workload binary first.
    #[arg(long)]
    workload: Option<PathBuf>,
    #[arg(long, default_value = "loopback")]
    net: String,
    /// Comma-separated namespaces (pid,mount,uts,ipc,net,cgroup,user).
    #[arg(long)]
    namespaces: Option<String>,
    #[arg(long)]
    privileged: bool,
    #[arg(long = "seccomp-unconfined")]
    seccomp_unconfined: bool,
    #[arg(long)]
    memory: Option<u64>,
    #[arg(long)]
    pids: Option<u64>,
    #[arg(long)]
    hostname: Option<String>,
    /// Print per-phase timings to stderr.
    #[arg(long)]
    timings: bool,
    #[arg(long)]
    timeout_ms: Option<u64>,
    #[arg(trailing_var_arg = true)]
    args: Vec<String>,
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Pack a directory into an image.
    Build {
        dir: PathBuf,
        #[arg(long)]
        tag: String,
    },
    /// Import an OCI layout (dir or tar) or a docker-save tarball.
    Import { path: PathBuf },
    /// List images.
    Ls,
    /// Remove an image.
    Rm { name: String },
    /// Build the default image from the workload binary.
    Default { workload: PathBuf },
}

fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse() {
        return Ok(n);
    }
    let name = s.trim_start_matches("SIG").to_ascii_uppercase();
    Ok(match name.as_str() {
        "TERM" => libc::SIGTERM,
        "KILL" => libc::SIGKILL,
        "INT" => libc::SIGINT,
        "HUP" => libc::SIGHUP,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        _ => bail!("unknown signal {s}"),
    })
}

fn exit_code(e: &container::ExitStatus) -> i32 {
    e.code.unwrap_or_else(|| 128 + e.signal.unwrap_or(0))
}

/// `run`'s phase timings on stderr when `CVBENCH_RUNTIME_TIMINGS` is set (an OCI caller passes
/// no flags of ours), and `run-image --timings`'s; one `phase <name> <ms>` line each.
fn print_phases(phases: &[(String, u64)]) {
    for (name, ns) in phases {
        eprintln!("phase {name:<16} {:>10.3} ms", *ns as f64 / 1e6);
    }
}

fn run_image(root: PathBuf, run_root: PathBuf, a: RunImageArgs) -> Result<i32> {
    if let Some(w) = &a.workload {
        let store = Store::open(&root)?;
        build::ensure_default_image(&store, w).with_context(|| w.display().to_string())?;
    }
    let mut cfg = ContainerConfig {
        rootfs: RootfsSource::Image(a.image),
        args: a.args,
        state_dir: root,
        run_root,
        net: a.net.parse::<NetMode>().map_err(anyhow::Error::msg)?,
        privileged: a.privileged,
        seccomp_unconfined: a.seccomp_unconfined,
        resources: Resources { memory_bytes: a.memory, pids_max: a.pids, ..Default::default() },
        ..Default::default()
    };
    if let Some(ns) = a.namespaces {
        cfg.namespaces = namespaces::parse_list(&ns)?;
    }
    if let Some(h) = a.hostname {
        cfg.hostname = h;
    }
    let mut c = Container::create_started(&cfg, Stdio::default())?;
    let exit = c.wait(a.timeout_ms.map(Duration::from_millis));
    let stats = c.stats().unwrap_or_default();
    c.delete()?;
    let exit = exit?;
    if a.timings {
        print_phases(c.phases());
        eprintln!("exit {exit:?} memory_peak={:?} cpu_ns={:?}", stats.memory_peak_bytes, stats.cpu_usage_ns);
    }
    Ok(exit_code(&exit))
}

fn main() {
    let cli = Cli::parse();
    let (log, json) = (cli.log.clone(), cli.log_format == "json");
    let code = match run_cli(cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("cvbench-runtime: {msg}");
            if let Some(p) = log {
                write_log(&p, json, &msg);
            }
            1
        }
    };
    // Through the signal owner: an interrupted run ends by its signal once cleanup is done.
    cvbench_signals::exit(code)
}

/// `secs` since the epoch as an RFC 3339 UTC time (containerd parses the log's `time`).
fn rfc3339(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn write_log(path: &std::path::Path, json: bool, msg: &str) {
    use std::io::Write;
    let line = if json {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        serde_json::json!({"level": "error", "msg": msg, "time": rfc3339(t)}).to_string()
    } else {
        format!("level=error msg={msg:?}")
    };
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "{line}");
    }
}

fn oci_create(a: &CreateArgs, run_root: &std::path::Path) -> Result<(PathBuf, oci::CreateOptions)> {
    let bundle = std::fs::canonicalize(&a.bundle).with_context(|| a.bundle.display().to_string())?;
    let _ = run_root;
    Ok((bundle, oci::CreateOptions { pid_file: a.pid_file.clone(), console_socket: a.console_socket.clone() }))
}

fn run_cli(cli: Cli) -> Result<i32> {
    if cli.systemd_cgroup {
        bail!("--systemd-cgroup is not supported: cvbench-runtime writes cgroupfs itself");
    }
    let oci_verb = matches!(
        cli.cmd,
        Cmd::Create(_)
            | Cmd::Start { .. }
            | Cmd::State { .. }
            | Cmd::Kill { .. }
            | Cmd::Delete { .. }
            | Cmd::Run(_)
            | Cmd::Exec(_)
            | Cmd::Ps { .. }
            | Cmd::Checkpoint { .. }
            | Cmd::Restore(_)
    );
    let run_root = match (&cli.run_root, &cli.root) {
        (Some(r), _) => r.clone(),
        (None, Some(r)) if oci_verb => r.clone(),
        _ => cvbench_runtime::default_run_root(),
    };
    let root = cli.root.clone().unwrap_or_else(|| PathBuf::from(cvbench_runtime::DEFAULT_STATE_DIR));
    match cli.cmd {
        Cmd::Create(a) => {
            let (bundle, opts) = oci_create(&a, &run_root)?;
            oci::create(&a.id, &bundle, &run_root, &opts)?;
        }
        Cmd::Start { id } => oci::start(&id, &run_root)?,
        Cmd::State { id } => println!("{:#}", oci::state_json(&id, &run_root)?),
        Cmd::Kill { id, signal, all } => oci::kill(&id, parse_signal(&signal)?, all, &run_root)?,
        Cmd::Delete { id, force } => {
            oci::delete(&id, force, &run_root)?;
        }
        Cmd::Run(a) => {
            cleanup::install_signal_handlers();
            let timings = std::env::var_os("CVBENCH_RUNTIME_TIMINGS").is_some();
            let (bundle, opts) = oci_create(&a, &run_root)?;
            if opts.console_socket.is_some() {
                bail!("run: --console-socket is for create; run relays the terminal itself");
            }
            let mut b = oci::load_warned(&bundle, &run_root)?;
            b.config.id = a.id;
            if !b.config.terminal {
                let (exit, phases) = oci::run(b, &bundle, Stdio::default())?;
                if timings {
                    print_phases(&phases);
                }
                return Ok(exit_code(&exit));
            }
            // process.terminal: the container's stdio is a new pty, relayed to ours.
            let pty = oci::console::Pty::open(b.config.console_size)?;
            let stdio = pty.stdio()?;
            let relay = pty.relay()?;
            let r = oci::run(b, &bundle, stdio);
            relay.finish(std::time::Duration::from_secs(2));
            let (exit, phases) = r?;
            if timings {
                print_phases(&phases);
            }
            return Ok(exit_code(&exit));
        }
        Cmd::Exec(a) => {
            if a.console_socket.is_some() || a.tty {
                bail!("exec: terminals are not supported");
            }
            let process = match &a.process {
                Some(p) => oci::exec::ProcessSpec::load(p)?,
                None => oci::exec::ProcessSpec::from_args(a.args, a.env, a.cwd)?,
            };
            return Ok(oci::exec::exec(&a.id, &run_root, &process, a.detach, a.pid_file.as_deref())?);
        }
        Cmd::Ps { id, format } => {
            let pids = oci::pids(&id, &run_root)?;
            if format == "json" {
                println!("{}", serde_json::to_string(&pids)?);
            } else {
                println!("PID");
                for p in pids {
                    println!("{p}");
                }
            }
        }
        Cmd::Checkpoint { id, image_path, work_path: _ } => {
            let m = checkpoint::criu::checkpoint(&id, &run_root, &image_path)?;
            eprintln!("checkpoint of {id}: {} files, {} bytes in {}", m.files.len(), m.bytes(), image_path.display());
        }
        Cmd::Restore(a) => {
            let bundle = std::fs::canonicalize(&a.bundle).with_context(|| a.bundle.display().to_string())?;
            return Ok(checkpoint::criu::restore(&checkpoint::criu::RestoreOptions {
                id: &a.id,
                bundle: &bundle,
                run_root: &run_root,
                image_dir: &a.image_path,
                pid_file: a.pid_file.as_deref(),
            })?);
        }
        Cmd::Features => println!("{:#}", oci::features()),
        Cmd::RunImage(a) => {
            cleanup::install_signal_handlers();
            return run_image(root, run_root, a);
        }
        Cmd::Image(ic) => {
            let store = Store::open(&root)?;
            match ic {
                ImageCmd::Build { dir, tag } => {
                    let d = build::build(&store, &dir, &tag)?;
                    println!("{tag} {}", d.digest);
                }
                ImageCmd::Import { path } => {
                    for n in import::import(&store, &path)? {
                        println!("{n}");
                    }
                }
                ImageCmd::Ls => {
                    for i in store.list()? {
                        println!("{:<40} {} {} layers {} bytes", i.name, i.digest, i.layers, i.size);
                    }
                }
                ImageCmd::Rm { name } => store.remove(&name)?,
                ImageCmd::Default { workload } => build::ensure_default_image(&store, &workload)?,
            }
        }
        Cmd::Gc => {
            for r in cleanup::gc(&root, &run_root) {
                println!("removed {r}");
            }
        }
        Cmd::SeccompInfo => {
            let (blocked, total) = seccomp::blocked_count();
            println!("default profile blocks {blocked} of {total} x86-64 system calls (Docker: 67 of 362)");
            println!("{}", seccomp::blocked_names().join(" "));
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_formats_utc_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_796_118_211), "2026-12-01T09:43:31Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
