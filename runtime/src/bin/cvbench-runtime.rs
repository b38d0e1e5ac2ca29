//! `cvbench-runtime`: the OCI verbs (create/start/state/kill/delete/run) over bundles, plus
//! image store commands, `gc`, and `run-image` for running an image straight from the store.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use cvbench_runtime::config::{ContainerConfig, NetMode, Resources, RootfsSource};
use cvbench_runtime::container::{self, Container, Stdio};
use cvbench_runtime::image::{build, import, Store};
use cvbench_runtime::{cleanup, namespaces, oci, seccomp};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "cvbench-runtime", about = "cvbench's minimal OCI container runtime")]
struct Cli {
    /// State directory (image store and container state).
    #[arg(long, global = true, default_value = cvbench_runtime::DEFAULT_STATE_DIR)]
    root: PathBuf,
    /// Per-container runtime state (OCI state, subnet claims); default /run/cvbench, or
    /// /dev/shm/cvbench when /run is not a tmpfs.
    #[arg(long, global = true)]
    run_root: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a container from an OCI bundle; it waits for `start`.
    Create {
        id: String,
        #[arg(long, short, default_value = ".")]
        bundle: PathBuf,
    },
    /// Start a created container.
    Start { id: String },
    /// Print the OCI state JSON.
    State { id: String },
    /// Send a signal (number or name like TERM/KILL).
    Kill {
        id: String,
        #[arg(default_value = "TERM")]
        signal: String,
    },
    /// Delete a stopped container (or a running one with --force).
    Delete {
        id: String,
        #[arg(long, short)]
        force: bool,
    },
    /// create + start + wait + delete of a bundle; exits with the container's status.
    Run {
        id: String,
        #[arg(long, short, default_value = ".")]
        bundle: PathBuf,
    },
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
        for (name, ns) in c.phases() {
            eprintln!("phase {name:<16} {:>10.3} ms", *ns as f64 / 1e6);
        }
        eprintln!("exit {exit:?} memory_peak={:?} cpu_ns={:?}", stats.memory_peak_bytes, stats.cpu_usage_ns);
    }
    Ok(exit_code(&exit))
}

fn main() {
    let code = match run_cli() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:?}");
            1
        }
    };
    // Through the signal owner: an interrupted run ends by its signal once cleanup is done.
    cvbench_signals::exit(code)
}

fn run_cli() -> Result<i32> {
    let cli = Cli::parse();
    let root = cli.root;
    let run_root = cli.run_root.unwrap_or_else(cvbench_runtime::default_run_root);
    match cli.cmd {
        Cmd::Create { id, bundle } => {
            let bundle = std::fs::canonicalize(&bundle).with_context(|| bundle.display().to_string())?;
            oci::create(&id, &bundle, &run_root)?;
        }
        Cmd::Start { id } => oci::start(&id, &run_root)?,
        Cmd::State { id } => println!("{:#}", oci::state_json(&id, &run_root)?),
        Cmd::Kill { id, signal } => oci::kill(&id, parse_signal(&signal)?, &run_root)?,
        Cmd::Delete { id, force } => {
            oci::delete(&id, force, &run_root)?;
        }
        Cmd::Run { id, bundle } => {
            cleanup::install_signal_handlers();
            let bundle = std::fs::canonicalize(&bundle).with_context(|| bundle.display().to_string())?;
            let mut cfg = oci::load_bundle(&bundle, &run_root)?;
            cfg.id = id;
            let r = container::run(&cfg, Stdio::default(), None)?;
            return Ok(exit_code(&r.exit));
        }
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
