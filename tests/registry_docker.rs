//! The registry against the private dockerd: docker pulls and runs the image we pushed, and
//! a `docker save` archive goes through our import, push and pull unchanged. Needs root and
//! dockerd (SKIPPED otherwise); the registry and the daemon are private and stopped by pid.

use cvbench::backend::peers::{self, docker::Docker};
use cvbench::backend::Backend;
use cvbench_registry::{Client, LocalRegistry, Options};
use cvbench_runtime::image::{self, Store};

/// The private dockerd's directories are named by our pid: one daemon at a time.
static ONE_DAEMON: std::sync::Mutex<()> = std::sync::Mutex::new(());

type Setup = (std::sync::MutexGuard<'static, ()>, tempfile::TempDir, LocalRegistry, Docker);

fn ready() -> Option<Setup> {
    if !nix::unistd::geteuid().is_root() || !peers::on_path("dockerd") {
        eprintln!("SKIPPED: needs root and dockerd for a private docker daemon");
        return None;
    }
    if !std::path::Path::new(cvbench_registry::server::REGISTRY_BIN).is_file() {
        eprintln!("SKIPPED: {} is not installed", cvbench_registry::server::REGISTRY_BIN);
        return None;
    }
    let guard = ONE_DAEMON.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let reg = LocalRegistry::start(&tmp.path().join("registry"), false).unwrap();
    let d = Docker::new();
    d.check().expect("private dockerd");
    Some((guard, tmp, reg, d))
}

#[test]
fn docker_pulls_and_runs_the_image_we_pushed() {
    let Some((_one, tmp, reg, d)) = ready() else { return };
    let store = Store::open(&tmp.path().join("state")).unwrap();
    image::build::ensure_default_image(&store, &cvbench::paths::workload_binary().unwrap()).unwrap();
    let reference = reg.reference("cvbench/workload:docker");
    Client::new(&reference, &Options::default()).unwrap().push(&store, image::DEFAULT_IMAGE).unwrap();

    peers::run_tool(d.cli().unwrap().args(["pull", &reference])).unwrap();
    let out = peers::run_tool(d.cli().unwrap().args(["run", "--rm", "--network", "none", &reference, "noop"]));
    let _ = peers::run_tool(d.cli().unwrap().args(["rmi", "-f", &reference]));

    let out = out.unwrap();
    assert!(out.lines().any(|l| l.trim() == "READY"), "docker run printed: {out}");
}

#[test]
fn docker_save_archive_round_trips_through_the_registry() {
    let Some((_one, tmp, reg, d)) = ready() else { return };
    let saved = tmp.path().join("saved.tar");
    // The backend loaded this image into its private daemon with `docker import`.
    peers::run_tool(d.cli().unwrap().args(["save", "-o"]).arg(&saved).arg("cvbench-workload:latest")).unwrap();
    let src = Store::open(&tmp.path().join("src")).unwrap();
    let names = image::import::import(&src, &saved).unwrap();
    let reference = reg.reference("cvbench/saved:v1");

    let pushed = Client::new(&reference, &Options::default()).unwrap().push(&src, &names[0]).unwrap();
    let dst = Store::open(&tmp.path().join("dst")).unwrap();
    let pulled = Client::new(&reference, &Options::default()).unwrap().pull(&dst).unwrap();

    assert_eq!(pushed.manifest_digest, pulled.manifest_digest);
    let r = dst.resolve(&reference).unwrap();
    let bin = std::fs::read(cvbench::paths::workload_binary().unwrap()).unwrap();
    let found = r.layer_dirs.iter().any(|l| std::fs::read(l.join("cvbench-workload")).is_ok_and(|b| b == bin));
    assert!(found, "the workload binary did not survive save → import → push → pull");
}
