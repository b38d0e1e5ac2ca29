//! The registry scenarios end to end on our runtime: a cold start yields the four phases, an
//! image-depth unit yields the overlay costs and a READY time, and backends the scenarios do
//! not apply to get a record that says why. Needs root (overlay mounts, containers).

use cvbench::backend::{self, BackendId};
use cvbench::bench::{cold_start, image_ctx, image_depth};
use cvbench::runner::RunRequest;

fn root_or_skip() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the registry scenarios start containers and mount overlays (need root)");
        return false;
    }
    true
}

/// Stops the private registry even when an assertion fails.
struct Registry;
impl Drop for Registry {
    fn drop(&mut self) {
        image_ctx::shutdown();
    }
}

#[test]
fn cold_start_and_image_depth_give_phase_breakdowns() {
    if !root_or_skip() {
        return;
    }
    let _r = Registry;
    let b = backend::by_name("container").unwrap();
    if let Err(e) = b.check() {
        eprintln!("SKIPPED: container backend unavailable: {e}");
        return;
    }
    let mut req = RunRequest::new(cvbench::workload::Workload::Noop, vec![]);
    req.scenario = "cold-start".into();

    let cold = cold_start::unit(b.as_ref(), &req);
    req.scenario = "image-depth-8".into();
    let depth = image_depth::unit(b.as_ref(), &req, 8);

    assert_eq!(cold.error, None);
    let names: Vec<&str> = cold.host.phases.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["pull", "unpack", "prepare", "start"]);
    assert!(cold.host.phases.iter().all(|(_, ns)| *ns > 0), "{:?}", cold.host.phases);
    assert_eq!(depth.error, None);
    for k in ["depth_mount_ns", "depth_first_read_ns", "depth_copy_up_ns", "depth_container_ready_ns"] {
        assert!(depth.extra.get(k).is_some_and(|v| *v > 0.0), "{k} missing: {:?}", depth.extra);
    }
    let leftover = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!leftover.contains("cvbench-images-"), "a scenario mount leaked onto the host");
}

#[test]
fn scenarios_say_why_they_do_not_apply() {
    let native = backend::by_name("native").unwrap();
    let mut req = RunRequest::new(cvbench::workload::Workload::Noop, vec![]);
    req.scenario = "cold-start".into();

    let r = cold_start::unit(native.as_ref(), &req);

    assert!(r.error.as_deref().is_some_and(|e| e.contains("native")), "{:?}", r.error);
    // Our micro-VM has a cold path (flatten to an initramfs, boot); the bare VM and QEMU say why not.
    assert!(cold_start::not_applicable(BackendId::Microvm).is_none());
    assert!(cold_start::not_applicable(BackendId::MicrovmBare).is_some_and(|w| w.contains("static ELF")));
    assert!(cold_start::not_applicable(BackendId::Qemu).is_some_and(|w| w.contains("microvm")));
    assert!(image_depth::not_applicable(BackendId::Docker).is_some());
    assert!(image_depth::not_applicable(BackendId::Container).is_none());
}
