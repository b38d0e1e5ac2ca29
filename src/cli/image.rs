//! `cvbench image build|import|ls|rm|push|pull` and `cvbench gc`: the container image
//! store, its registry round trip, and the clean-up of a crashed run, over the runtime and
//! registry libraries.

use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

use cvbench_runtime::{cleanup, image};

#[derive(Args, Debug)]
pub struct ImageArgs {
    /// State directory holding the image store.
    #[arg(long, default_value = cvbench_runtime::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Pack a directory into an OCI image (one layer) and tag it.
    Build {
        /// Directory that becomes the image's root filesystem.
        dir: PathBuf,
        /// Name to tag the image with.
        #[arg(long, short)]
        tag: String,
    },
    /// Import an OCI layout (directory or tarball) or a `docker save` tarball.
    Import { path: PathBuf },
    /// List the images in the store.
    Ls,
    /// Remove an image (its layers go when no other image uses them).
    Rm { name: String },
    /// Build the default image from the workload binary alone.
    Default,
    /// Push a stored image to a registry (REF = host:port/repo:tag; plain HTTP only to
    /// loopback; credentials from CVBENCH_REGISTRY_USER / CVBENCH_REGISTRY_PASSWORD).
    Push { name: String, reference: String },
    /// Pull an image from a registry into the store, tagged REF, and unpack its layers.
    Pull { reference: String },
}

fn open(state_dir: &Path) -> anyhow::Result<image::Store> {
    image::Store::open(state_dir).with_context(|| format!("opening the image store under {}", state_dir.display()))
}

pub fn execute(a: ImageArgs) -> anyhow::Result<i32> {
    let store = open(&a.state_dir)?;
    match a.command {
        ImageCommand::Build { dir, tag } => {
            let d = image::build::build(&store, &dir, &tag).with_context(|| format!("building {}", dir.display()))?;
            println!("{tag} {}", d.digest);
        }
        ImageCommand::Import { path } => {
            let names =
                image::import::import(&store, &path).with_context(|| format!("importing {}", path.display()))?;
            for n in names {
                println!("imported {n}");
            }
        }
        ImageCommand::Ls => {
            println!("{:<32} {:<20} {:>6} {:>12}", "NAME", "DIGEST", "LAYERS", "SIZE");
            for i in store.list()? {
                let short: String = i.digest.trim_start_matches("sha256:").chars().take(12).collect();
                println!("{:<32} sha256:{:<13} {:>6} {:>12}", i.name, short, i.layers, i.size);
            }
        }
        ImageCommand::Rm { name } => {
            store.remove(&name).with_context(|| format!("removing image {name}"))?;
            println!("removed {name}");
        }
        ImageCommand::Default => {
            let bin = cvbench::paths::workload_binary()?;
            image::build::ensure_default_image(&store, &bin)?;
            println!("{} (from {})", image::DEFAULT_IMAGE, bin.display());
        }
        ImageCommand::Push { name, reference } => {
            let c = cvbench_registry::Client::new(&reference, &cvbench_registry::Options::from_env())?;
            let r = c.push(&store, &name).with_context(|| format!("pushing {name} to {reference}"))?;
            println!(
                "pushed {name} -> {reference} {} ({} blobs, {} bytes; {} already there) in {:.1} ms",
                r.manifest_digest,
                r.blobs_pushed,
                r.bytes_pushed,
                r.blobs_skipped,
                r.push_ns as f64 / 1e6
            );
        }
        ImageCommand::Pull { reference } => {
            let c = cvbench_registry::Client::new(&reference, &cvbench_registry::Options::from_env())?;
            let r = c.pull(&store).with_context(|| format!("pulling {reference}"))?;
            println!(
                "pulled {} {} ({} blobs, {} bytes; {} already here): pull {:.1} ms, unpack {:.1} ms",
                r.name,
                r.manifest_digest,
                r.blobs_fetched,
                r.bytes_fetched,
                r.blobs_skipped,
                r.pull_ns as f64 / 1e6,
                r.unpack_ns as f64 / 1e6
            );
        }
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// State directory of the runtime.
    #[arg(long, default_value = cvbench_runtime::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

pub fn gc(a: GcArgs) -> anyhow::Result<i32> {
    // Swarms first: their processes are found through the namespaces the runtime's gc would remove.
    let mut removed = cvbench::swarm::teardown::gc();
    removed.extend(cleanup::gc(&a.state_dir, &cvbench_runtime::default_run_root()));
    removed.extend(cvbench::backend::peers::docker::gc());
    removed.extend(cvbench::backend::peers::leftovers::gc_cgroups(std::path::Path::new(
        cvbench::backend::peers::leftovers::CGROUP_ROOT,
    )));
    if removed.is_empty() {
        println!("gc: nothing left behind");
    }
    for r in removed {
        println!("gc: {r}");
    }
    Ok(0)
}
