//! `cvbench bench`: run the whole matrix (every scenario × backend,
//! interleaved), store the result set, and write the report.

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cvbench::backend;
use cvbench::bench::{self, Observer, Plan, Profile, Slot};
use cvbench::env::Manifest;
use cvbench::record::RunRecord;
use cvbench::results::RecordSink;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The small matrix (under 3 minutes here) instead of the full one.
    #[arg(long)]
    pub quick: bool,
    /// Comma-separated backends (default: every known backend; those that
    /// cannot run here are listed in the report with the reason).
    #[arg(long, value_delimiter = ',')]
    pub backends: Option<Vec<String>>,
    /// Comma-separated scenario families (surface, startup-serial,
    /// startup-parallel, footprint, density, cpu, mem-bw, mem-touch,
    /// syscall, net-stream, net-rr, disk, cold-start, image-depth; the last two
    /// run in --quick only when named here).
    #[arg(long, value_delimiter = ',')]
    pub workloads: Option<Vec<String>>,
    /// Where the report goes.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    /// Result directory (default: results/<unix time>).
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Skip writing the report at the end.
    #[arg(long)]
    pub no_report: bool,
    /// Cold-start and image-depth: drop the page cache before each unit (else it is warm).
    #[arg(long)]
    pub drop_caches: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

fn install_stop_handler() {
    let act = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_signal),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    for sig in [nix::sys::signal::SIGINT, nix::sys::signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; no other handler for these signals is replaced
        // that the program relies on.
        let _ = unsafe { nix::sys::signal::sigaction(sig, &act) };
    }
}

struct Progress {
    bar: ProgressBar,
    sink: RecordSink,
    failed: u64,
    in_unit: bool,
    write_error: Option<String>,
}

impl Observer for Progress {
    fn unit(&mut self, backend: &str, scenario: &str, iteration: u32) {
        self.bar.set_message(format!("{scenario} · {backend} #{iteration}"));
        self.in_unit = true;
    }
    fn records(&mut self, recs: &[RunRecord]) {
        for r in recs {
            if r.error.is_some() {
                self.failed += 1;
            }
            if let Err(e) = self.sink.append(r) {
                self.write_error.get_or_insert(format!("{e:#}"));
            }
        }
        // Placeholders for cells that never run are counted by `skipped`.
        if std::mem::take(&mut self.in_unit) {
            self.bar.inc(1);
        }
    }
    fn skipped(&mut self, units: u64) {
        self.bar.inc(units);
    }
}

pub fn execute(a: BenchArgs) -> anyhow::Result<i32> {
    let names: Vec<String> = a.backends.clone().unwrap_or_else(|| backend::ALL.iter().map(|s| s.to_string()).collect());
    let profile = if a.quick { Profile::Quick } else { Profile::Full };
    let plan = Plan::new(profile, names.clone(), a.workloads.as_deref())?;
    bench::cold_start::DROP_CACHES.store(a.drop_caches, Ordering::Relaxed);
    let manifest = Manifest::collect();
    let env_id = manifest.id();
    let dir = a.results.clone().unwrap_or_else(|| {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        PathBuf::from("results").join(t.to_string())
    });
    let sink = RecordSink::create(&dir, &manifest).with_context(|| dir.display().to_string())?;
    eprintln!("cvbench bench: {profile:?} matrix, results in {}", dir.display());
    let slots: Vec<Slot> = names.iter().map(|n| Slot::resolve(n)).collect();
    for s in &slots {
        match s {
            Slot::Ready(_) => eprintln!("  {:<13} ready", s.name()),
            Slot::Unavailable { name, reason } => eprintln!("  {name:<13} UNAVAILABLE: {reason}"),
        }
    }
    install_stop_handler();
    let bar = ProgressBar::new(plan.total_units());
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut obs = Progress { bar, sink, failed: 0, in_unit: false, write_error: None };
    bench::run(&plan, &slots, &env_id, &mut obs, &STOP);
    obs.bar.finish_with_message("done");
    drop(slots); // backends with daemons stop them here
    if let Some(e) = obs.write_error {
        anyhow::bail!("storing records in {}: {e}", dir.display());
    }
    eprintln!("{} failed records kept with their error", obs.failed);
    if STOP.load(Ordering::Relaxed) {
        eprintln!("interrupted: the result set holds every record up to the interruption");
    }
    if !a.no_report {
        super::report::write_report(&dir, &a.out)?;
    }
    Ok(if STOP.load(Ordering::Relaxed) { 130 } else { 0 })
}
