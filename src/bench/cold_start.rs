//! The cold-start scenario: an image that is not on the host yet (the store dropped before
//! every unit; the page cache dropped too only with `--drop-caches`, otherwise the report
//! says caches were warm) pulled from the private registry and started until READY, with
//! phases pull / unpack / prepare / start: `docker` (docker pull, docker run), `container`
//! (our pull, overlay + namespaces, start), `runc`/`crun` (our pull, flattened into a bundle,
//! run), `microvm` (our pull, the layers flattened into an initramfs with the guest's busybox
//! and `/init`, boot → READY; only where a Linux guest's user space runs: hardware KVM). The
//! image is the workload plus a 64 MiB incompressible layer.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio as PStdio};
use std::time::{Duration, Instant};

use cvbench_registry::{Client, Options};
use cvbench_runtime::config::{ContainerConfig, RootfsSource};
use cvbench_runtime::container::{Container, Stdio};
use cvbench_runtime::image::Store;

use super::image_ctx::{self, ImageBench};
use crate::backend::peers::{self, oci};
use crate::backend::{Backend, BackendId};
use crate::record::RunRecord;
use crate::runner::RunRequest;

const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Why `backend` has no cold-start cell here.
pub fn not_applicable(backend: BackendId) -> Option<String> {
    match backend {
        BackendId::Container | BackendId::Runc | BackendId::Crun | BackendId::Docker | BackendId::Microvm => None,
        BackendId::MicrovmBare => {
            Some("cold start does not apply to microvm-bare: it loads one static ELF, not an image's file tree".into())
        }
        BackendId::Qemu => Some(
            "cold start is measured for one VM, ours (microvm): the QEMU peer would boot the same flattened \
             initramfs, so it adds no image path of its own"
                .into(),
        ),
        BackendId::ContainerNomemcg | BackendId::ContainerHostnet => {
            Some("cold start is measured on `container`: this variant differs only in memory or network".into())
        }
        other @ (BackendId::Native | BackendId::CvbenchRuntime | BackendId::DockerCvbench) => {
            Some(format!("cold start does not apply to {other}: it runs no image"))
        }
        other @ (BackendId::Youki
        | BackendId::Podman
        | BackendId::Gvisor
        | BackendId::GvisorPtrace
        | BackendId::GvisorKvm) => Some(format!(
            "cold start is not measured for {other} yet: runc and crun stand for the exec'd runtimes, docker for the \
             engines; this peer has no registry pull path in the suite"
        )),
    }
}

/// What one cold start measured.
struct Measured {
    phases: Vec<(String, u64)>,
    notes: Vec<String>,
}

impl Measured {
    /// The four phases of our own pull paths (pull, unpack, prepare, start) and one note.
    fn four([pull, unpack, prepare, start]: [u64; 4], note: impl Into<String>) -> Measured {
        let phases = [("pull", pull), ("unpack", unpack), ("prepare", prepare), ("start", start)];
        Measured { phases: phases.map(|(k, v)| (k.to_string(), v)).to_vec(), notes: vec![note.into()] }
    }
}

fn ns(t: Instant) -> u64 {
    t.elapsed().as_nanos() as u64
}

/// Run one cold start of `b` and make its record.
pub fn unit(b: &dyn Backend, req: &RunRequest) -> RunRecord {
    let mut rec = crate::runner::record_for(b, req);
    if let Some(why) = not_applicable(b.id()) {
        rec.error = Some(why);
        return rec;
    }
    let result = image_ctx::get().and_then(|ctx| {
        let caches = if req.drop_caches {
            image_ctx::drop_caches()?;
            "page cache dropped before the pull (--drop-caches)"
        } else {
            "page cache warm (run with --drop-caches to drop it); the image store was empty"
        };
        let mut m = match b.id() {
            BackendId::Container => container(&ctx, req),
            BackendId::Docker => docker(b, &ctx, req),
            BackendId::Microvm => microvm(&ctx, req),
            tool => oci_runtime(&ctx, tool, req),
        }?;
        m.notes.push(format!(
            "cold-start: {caches}; image {} ({} bytes gzip in the registry)",
            ctx.cold_ref, ctx.cold_bytes
        ));
        Ok(m)
    });
    match result {
        Ok(m) => {
            let total: u64 = m.phases.iter().map(|(_, v)| v).sum();
            rec.host.launch_to_ready_ns = Some(total);
            for (k, v) in &m.phases {
                rec.extra.insert(format!("cold_{k}_ns"), *v as f64);
            }
            rec.host.phases = m.phases;
            rec.notes = m.notes;
        }
        Err(e) => rec.error = Some(e),
    }
    rec
}

fn pull(ctx: &ImageBench, store: &Store) -> Result<(u64, u64), String> {
    let c = Client::new(&ctx.cold_ref, &Options::default()).map_err(|e| crate::runner::chain(&e))?;
    let r = c.pull(store).map_err(|e| crate::runner::chain(&e))?;
    if r.blobs_skipped > 0 {
        return Err(format!("the store was not empty: {} blobs already there", r.blobs_skipped));
    }
    Ok((r.pull_ns, r.unpack_ns))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

/// Our runtime: pull into an empty store, create (overlay, namespaces, cgroup), start.
fn container(ctx: &ImageBench, req: &RunRequest) -> Result<Measured, String> {
    let state = ctx.fresh_dir("cold-container")?;
    let store = Store::open(&state).map_err(|e| crate::runner::chain(&e))?;
    let (pull_ns, unpack_ns) = pull(ctx, &store)?;
    let cfg = ContainerConfig {
        rootfs: RootfsSource::Image(ctx.cold_ref.clone()),
        args: std::iter::once("/cvbench-workload".to_string())
            .chain(std::iter::once(req.workload.to_string()))
            .chain(req.args.iter().cloned())
            .collect(),
        state_dir: state.clone(),
        ..Default::default()
    };
    let (rd, wr) = pipe()?;
    let null = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
    let stdio = Stdio { stdin: Some(null.into()), stdout: Some(wr), stderr: None };
    let t = Instant::now();
    let mut c = Container::create(&cfg, stdio).map_err(|e| crate::runner::chain(&e))?;
    let prepare_ns = ns(t);
    let t = Instant::now();
    c.start().map_err(|e| crate::runner::chain(&e))?;
    let ready = image_ctx::wait_ready(std::fs::File::from(rd), READY_TIMEOUT);
    let _ = c.wait(Some(Duration::from_secs(10)));
    let _ = c.delete();
    let start_ns = ready?.duration_since(t).as_nanos() as u64;
    drop(c);
    image_ctx::remove_tree(&state)?;
    Ok(Measured::four(
        [pull_ns, unpack_ns, prepare_ns, start_ns],
        "container: prepare = create (overlay mount, namespaces, cgroup); start = exec → READY",
    ))
}

/// runc / crun: pull into an empty store, flatten the layers into a bundle rootfs, run.
fn oci_runtime(ctx: &ImageBench, backend: BackendId, req: &RunRequest) -> Result<Measured, String> {
    let tool = backend.name();
    let work = ctx.fresh_dir(&format!("cold-{tool}"))?;
    let store = Store::open(&work.join("state")).map_err(|e| crate::runner::chain(&e))?;
    let (pull_ns, unpack_ns) = pull(ctx, &store)?;
    let t = Instant::now();
    let resolved = store.resolve(&ctx.cold_ref).map_err(|e| crate::runner::chain(&e))?;
    let bundle = work.join("bundle");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(|e| e.to_string())?;
    for l in &resolved.layer_dirs {
        // Flatten bottom to top (the images have no whiteouts), keeping modes and owners.
        peers::run_tool(Command::new("cp").arg("-a").arg(format!("{}/.", l.display())).arg(&rootfs))
            .map_err(|e| e.to_string())?;
    }
    let mut args = vec![req.workload.to_string()];
    args.extend(req.args.iter().cloned());
    oci::write_bundle(&bundle, &oci::RunConfig { rootfs: &rootfs, args, netns: None, data: None })
        .map_err(|e| e.to_string())?;
    let prepare_ns = ns(t);
    let root = work.join("root");
    let id = peers::unique(&format!("cvb-cold-{tool}"));
    let mut cmd = Command::new(tool);
    cmd.arg("--root").arg(&root);
    if backend == BackendId::Crun && peers::oci_runtime::needs_unified_detach() {
        peers::oci_runtime::detach_unified(&mut cmd);
    }
    cmd.args(["run", "--bundle"]).arg(&bundle).arg(&id);
    cmd.stdin(PStdio::null()).stdout(PStdio::piped()).stderr(PStdio::piped());
    let t = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("{tool}: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let ready = image_ctx::wait_ready(out, READY_TIMEOUT);
    let start_ns = ready.map(|r| r.duration_since(t).as_nanos() as u64);
    if start_ns.is_err() {
        let _ = Command::new(tool).arg("--root").arg(&root).args(["kill", &id, "KILL"]).status();
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let _ = Command::new(tool).arg("--root").arg(&root).args(["delete", "-f", &id]).output();
    let start_ns = start_ns.map_err(|e| format!("{e} ({tool} exited {status})"))?;
    image_ctx::remove_tree(&work)?;
    Ok(Measured::four(
        [pull_ns, unpack_ns, prepare_ns, start_ns],
        format!("{tool}: prepare = layers copied into a bundle rootfs + config.json; start = {tool} run → READY"),
    ))
}

/// Guest RAM for the cold start: the initramfs (~70 MiB) is held in RAM and unpacked into the
/// guest's root tmpfs, on top of the kernel.
const COLD_VM_MEM_MIB: u32 = 512;

/// Our VMM: pull into an empty store, flatten the layers into an initramfs, boot → READY.
fn microvm(ctx: &ImageBench, req: &RunRequest) -> Result<Measured, String> {
    use crate::backend::microvm::MicroVm;
    use crate::backend::{BackendOptions, LaunchSpec};
    use cvbench_microvm::linux::flatten;

    let work = ctx.fresh_dir("cold-microvm")?;
    let store = Store::open(&work.join("state")).map_err(|e| crate::runner::chain(&e))?;
    let (pull_ns, unpack_ns) = pull(ctx, &store)?;
    let t = Instant::now();
    let resolved = store.resolve(&ctx.cold_ref).map_err(|e| crate::runner::chain(&e))?;
    let initrd =
        tempfile::Builder::new().prefix("initrd-").suffix(".cpio").tempfile_in(&work).map_err(|e| e.to_string())?;
    // A quarter of guest RAM: the archive and its unpacked copy both sit in RAM while it boots.
    let limit = u64::from(COLD_VM_MEM_MIB) << 18;
    let flat = flatten::write_image_initramfs(&resolved.layer_dirs, Path::new("/bin/busybox"), initrd.path(), limit)
        .map_err(|e| crate::runner::chain(&e))?;
    let prepare_ns = ns(t);
    let vm = MicroVm::with_initrd(initrd);
    let (rd, wr) = pipe()?;
    let err_path = work.join("vmm-stderr");
    let err = std::fs::File::create(&err_path).map_err(|e| format!("{}: {e}", err_path.display()))?;
    let spec = LaunchSpec {
        workload: req.workload,
        args: req.args.clone(),
        stdin_pipe: false,
        stdout: wr,
        stderr: err.into(),
        timeout: READY_TIMEOUT,
        options: BackendOptions { guest_mem_mib: Some(COLD_VM_MEM_MIB), ..Default::default() },
    };
    let t = Instant::now();
    let mut inst = vm.launch(spec).map_err(|e| crate::runner::chain(&e))?;
    let ready = image_ctx::wait_ready(std::fs::File::from(rd), READY_TIMEOUT);
    let start_ns = ready.map(|r| r.duration_since(t).as_nanos() as u64);
    let end = if start_ns.is_ok() { inst.wait(Duration::from_secs(60)) } else { inst.stop() };
    // The instance's own notes: the KVM kind, how the guest ended, the jail.
    let vm_notes = inst.notes();
    drop(inst);
    let start_ns = start_ns.map_err(|e| {
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        format!("{e} (VMM: {end:?}; its stderr: {})", stderr.trim())
    })?;
    image_ctx::remove_tree(&work)?;
    let note = format!(
        "microvm: prepare = the layers flattened into an initramfs ({} entries, {} file bytes, {} skipped; {} bytes \
         with busybox and /init); start = cvbench-vmm linux boots it ({COLD_VM_MEM_MIB} MiB) → READY",
        flat.entries, flat.file_bytes, flat.skipped, flat.archive_bytes
    );
    let mut m = Measured::four([pull_ns, unpack_ns, prepare_ns, start_ns], note);
    m.notes.extend(vm_notes);
    Ok(m)
}

/// Docker: remove the image from the private dockerd, `docker pull`, `docker run` → READY.
fn docker(b: &dyn Backend, ctx: &ImageBench, req: &RunRequest) -> Result<Measured, String> {
    let d = (b as &dyn std::any::Any)
        .downcast_ref::<peers::docker::Docker>()
        .ok_or("the docker backend is not the private-dockerd one")?;
    let r = &ctx.cold_ref;
    let _ = peers::run_tool(d.cli()?.args(["rmi", "-f", r]));
    let t = Instant::now();
    peers::run_tool(d.cli()?.args(["pull", "-q", r])).map_err(|e| e.to_string())?;
    let pull_ns = ns(t);
    let name = peers::unique("cvb-cold-docker");
    let mut cmd = d.cli()?;
    cmd.args(["run", "--rm", "--network", "none", "--name", &name, r, req.workload.name()]).args(&req.args);
    cmd.stdin(PStdio::null()).stdout(PStdio::piped()).stderr(PStdio::piped());
    let t = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("docker run: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let ready = image_ctx::wait_ready(out, READY_TIMEOUT);
    if ready.is_err() {
        let _ = peers::run_tool(d.cli()?.args(["rm", "-f", &name]));
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let start_ns = ready.map_err(|e| format!("{e} (docker run exited {status})"))?.duration_since(t).as_nanos() as u64;
    let _ = peers::run_tool(d.cli()?.args(["rmi", "-f", r]));
    Ok(Measured {
        phases: vec![("pull".into(), pull_ns), ("start".into(), start_ns)],
        notes: vec![
            "docker: pull = docker pull from the loopback registry (download and unpack are one step in dockerd: no separate unpack phase); start = docker run → READY (create + start inside dockerd/containerd/runc)".into(),
        ],
    })
}
