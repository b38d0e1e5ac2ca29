//! The image-depth scenario: the same container image at 1, 8, 32 and 128 layers (each layer
//! one small file; the bottom one also holds a 64 MiB file). Per depth: the overlay mount, the
//! first read of a file only the bottom layer has (its lookup passes every layer), the
//! copy-up of the first write to the 64 MiB file, and our runtime's start → READY. The mounts
//! are made on a thread of their own in a private mount namespace, so none can leak onto the
//! host; the lower dirs are named through short symlinks so 128 of them fit in the one page
//! of mount options the kernel takes (docker's overlay2 does the same).

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cvbench_registry::{Client, Options};
use cvbench_runtime::config::{ContainerConfig, RootfsSource};
use cvbench_runtime::container::{Container, Stdio};
use cvbench_runtime::image::Store;
use nix::mount::{mount, MsFlags};

use super::image_ctx::{self, ImageBench, BIG_FILE};
use crate::backend::{Backend, BackendId};
use crate::record::RunRecord;
use crate::runner::RunRequest;

/// Why a backend has no image-depth cell: the scenario is about our overlay layers.
pub fn not_applicable(backend: BackendId) -> Option<String> {
    (backend != BackendId::Container).then(|| {
        format!("image-depth measures overlayfs layer depth with our runtime's image store; not run on {backend}")
    })
}

/// Host-side overlay timings of one depth.
#[derive(Debug, Default)]
struct OverlayCost {
    mount_ns: u64,
    first_read_ns: u64,
    copy_up_ns: u64,
}

/// Mount `lowers` (bottom first) in a private mount namespace on a thread of its own, and
/// time the first read of `layer-0` and the first write to the big file.
fn overlay_cost(work: &Path, lowers: &[PathBuf]) -> Result<OverlayCost, String> {
    let links = PathBuf::from(format!("/run/cvbl-{}", std::process::id()));
    image_ctx::remove_tree(&links)?;
    std::fs::create_dir_all(&links).map_err(|e| format!("{}: {e}", links.display()))?;
    for (i, l) in lowers.iter().enumerate() {
        std::os::unix::fs::symlink(l, links.join(i.to_string())).map_err(|e| format!("symlink: {e}"))?;
    }
    // overlayfs lists the top layer first.
    let lowerdir: Vec<String> = (0..lowers.len()).rev().map(|i| format!("{}/{i}", links.display())).collect();
    let (upper, wdir, merged) = (work.join("upper"), work.join("work"), work.join("merged"));
    for d in [&upper, &wdir, &merged] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let data = format!("lowerdir={},upperdir={},workdir={}", lowerdir.join(":"), upper.display(), wdir.display());
    let merged2 = merged.clone();
    let r = std::thread::spawn(move || -> Result<OverlayCost, String> {
        // This thread's own mount namespace: gone with the thread, mounts and all.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare: {e}"))?;
        mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
            .map_err(|e| format!("making / private: {e}"))?;
        let mut c = OverlayCost::default();
        let t = Instant::now();
        mount(Some("overlay"), &merged2, Some("overlay"), MsFlags::empty(), Some(data.as_str())).map_err(|e| {
            format!("overlay mount of {} layers ({} bytes of options): {e}", lowerdir.len(), data.len())
        })?;
        c.mount_ns = t.elapsed().as_nanos() as u64;
        let t = Instant::now();
        let mut buf = Vec::new();
        std::fs::File::open(merged2.join("layer-0"))
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map_err(|e| format!("first read: {e}"))?;
        c.first_read_ns = t.elapsed().as_nanos() as u64;
        let t = Instant::now();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(0)
            .open(merged2.join(BIG_FILE))
            .map_err(|e| format!("open for write (copy-up): {e}"))?;
        f.write_all(b"x").map_err(|e| format!("first write: {e}"))?;
        drop(f);
        c.copy_up_ns = t.elapsed().as_nanos() as u64;
        let _ = nix::mount::umount2(&merged2, nix::mount::MntFlags::MNT_DETACH);
        Ok(c)
    })
    .join()
    .map_err(|_| "overlay thread panicked".to_string())?;
    let _ = image_ctx::remove_tree(&links);
    let _ = image_ctx::remove_tree(work);
    let _ = merged;
    r
}

/// Our runtime from the depth-N image: create + start → READY.
fn container_ready(store_dir: &Path, reference: &str, req: &RunRequest) -> Result<u64, String> {
    let cfg = ContainerConfig {
        rootfs: RootfsSource::Image(reference.to_string()),
        args: std::iter::once("/cvbench-workload".to_string())
            .chain(std::iter::once(req.workload.to_string()))
            .chain(req.args.iter().cloned())
            .collect(),
        state_dir: store_dir.to_path_buf(),
        ..Default::default()
    };
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let null = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut c = Container::create_started(&cfg, Stdio { stdin: Some(null.into()), stdout: Some(wr), stderr: None })
        .map_err(|e| crate::runner::chain(&e))?;
    let ready = image_ctx::wait_ready(std::fs::File::from(rd), Duration::from_secs(60));
    let _ = c.wait(Some(Duration::from_secs(10)));
    let _ = c.delete();
    Ok(ready?.duration_since(t).as_nanos() as u64)
}

fn measure(ctx: &ImageBench, layers: u32, req: &RunRequest, rec: &mut RunRecord) -> Result<(), String> {
    let reference = &ctx.depth_ref(layers)?;
    // One store for the whole scenario: depth is the variable here, not the pull.
    let store_dir = ctx.dir.join("depth-store");
    let store = Store::open(&store_dir).map_err(|e| crate::runner::chain(&e))?;
    let client = Client::new(reference, &Options::default()).map_err(|e| crate::runner::chain(&e))?;
    let pulled = client.pull(&store).map_err(|e| crate::runner::chain(&e))?;
    let resolved = store.resolve(reference).map_err(|e| crate::runner::chain(&e))?;
    if req.drop_caches {
        image_ctx::drop_caches()?;
        rec.notes.push("image-depth: page cache dropped before the mount (--drop-caches)".into());
    } else {
        rec.notes
            .push("image-depth: page cache warm (layers unpacked earlier); dentry cache of the new mount cold".into());
    }
    let work = ctx.fresh_dir(&format!("depth-mnt-{layers}"))?;
    let c = overlay_cost(&work, &resolved.layer_dirs)?;
    let mut phases =
        vec![("mount".into(), c.mount_ns), ("first_read".into(), c.first_read_ns), ("copy_up".into(), c.copy_up_ns)];
    rec.extra.insert("depth_layers".into(), f64::from(layers));
    rec.extra.insert("depth_mount_ns".into(), c.mount_ns as f64);
    rec.extra.insert("depth_first_read_ns".into(), c.first_read_ns as f64);
    rec.extra.insert("depth_copy_up_ns".into(), c.copy_up_ns as f64);
    rec.extra.insert("depth_copy_up_bytes".into(), image_ctx::big_bytes() as f64);
    if pulled.blobs_fetched > 0 {
        rec.extra.insert("depth_pull_ns".into(), pulled.pull_ns as f64);
        rec.extra.insert("depth_unpack_ns".into(), pulled.unpack_ns as f64);
    }
    match container_ready(&store_dir, reference, req) {
        Ok(ns) => {
            rec.host.launch_to_ready_ns = Some(ns);
            rec.extra.insert("depth_container_ready_ns".into(), ns as f64);
            phases.push(("container_start".into(), ns));
        }
        Err(e) => rec.notes.push(format!("image-depth: our runtime could not start the {layers}-layer image: {e}")),
    }
    rec.host.phases = phases;
    Ok(())
}

/// Run one image-depth unit on `b` (the container backend).
pub fn unit(b: &dyn Backend, req: &RunRequest, layers: u32) -> RunRecord {
    let mut rec = crate::runner::record_for(b, req);
    if let Some(why) = not_applicable(b.id()) {
        rec.error = Some(why);
        return rec;
    }
    if let Err(e) = image_ctx::get().and_then(|ctx| measure(&ctx, layers, req, &mut rec)) {
        rec.error = Some(e);
    }
    rec
}
