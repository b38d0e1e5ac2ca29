//! A swarm made by the run: three nodes (one manager, two workers) in namespaces of their own run
//! a service; SIGKILL of a worker's dockerd and containerd gets its tasks rescheduled on the other
//! nodes; and nothing is left behind (processes, namespaces, mounts, directories). Faults: an
//! image the nodes cannot pull never converges, and the error names the service and the task
//! states. Needs root and Debian's docker.io and docker-registry.

use std::path::Path;
use std::time::Duration;

use cvbench::swarm::{cluster, teardown, Role, Swarm, SwarmConfig, SwarmError};
use cvbench_testkit::{skip, Need};

fn usable() -> bool {
    if !cvbench_testkit::require_root("a swarm of private dockerds") {
        return false;
    }
    for bin in ["/usr/sbin/dockerd", "/usr/bin/docker", cvbench_registry::server::REGISTRY_BIN] {
        if !Path::new(bin).is_file() {
            skip(Need::Other, &format!("{bin} is not installed (apt-get install docker.io docker-registry)"));
            return false;
        }
    }
    true
}

/// What a swarm could leave on the host, for the swarm `tag`.
#[derive(Debug, PartialEq, Eq)]
struct Leaks {
    netns: Vec<String>,
    dirs: Vec<String>,
    mounts: usize,
    processes: Vec<String>,
}

fn leaks(tag: &str) -> Leaks {
    let names = |d: &str| -> Vec<String> {
        std::fs::read_dir(d)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(tag))
                    .collect()
            })
            .unwrap_or_default()
    };
    let processes = std::fs::read_dir("/proc")
        .map(|r| {
            r.flatten()
                .filter_map(|e| {
                    let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
                    let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                    cmd.contains(tag).then_some(cmd)
                })
                .collect()
        })
        .unwrap_or_default();
    Leaks {
        netns: names("/run/netns"),
        dirs: [names("/run"), names("/var/tmp")].concat(),
        mounts: std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(tag))
            .count(),
        processes,
    }
}

fn no_leaks() -> Leaks {
    Leaks { netns: vec![], dirs: vec![], mounts: 0, processes: vec![] }
}

fn progress(s: &str) {
    eprintln!("  {s}");
}

#[test]
fn a_killed_workers_tasks_are_rescheduled_and_the_swarm_leaves_nothing() {
    if !usable() {
        return;
    }
    let cfg = SwarmConfig { managers: 1, workers: 2, ..SwarmConfig::default() };
    let mut s = Swarm::create(&cfg, &progress).expect("creating a 1 + 2 swarm");
    let tag = s.tag.clone();
    assert_eq!(s.nodes().iter().filter(|n| n.role == Role::Worker).count(), 2);

    let image = s.image().to_string();
    cluster::create_service(&s, "idle", 6, &image).unwrap();
    cluster::wait_running(&s, "idle", 6, None, Duration::from_secs(90)).unwrap();
    cluster::wait_ready(&s, "idle", Duration::from_secs(60)).unwrap();
    let victim = s.nodes().iter().position(|n| n.role == Role::Worker).unwrap();
    let victim_id = s.nodes()[victim].node_id.clone();
    let on_victim =
        cluster::tasks(s.manager().unwrap(), "idle").unwrap().iter().filter(|t| t.node_id == victim_id).count();
    assert!(on_victim > 0, "the scheduler spreads 6 tasks over 3 nodes; none on the victim");

    s.node_mut(victim).unwrap().kill_engine().unwrap();
    cluster::wait_node_down(&s, victim, Duration::from_secs(60)).unwrap();
    cluster::wait_running(&s, "idle", 6, None, Duration::from_secs(90)).unwrap();
    let ts = cluster::tasks(s.manager().unwrap(), "idle").unwrap();
    assert!(ts.iter().all(|t| t.node_id != victim_id), "tasks still placed on the dead node: {ts:?}");
    cluster::wait_ready(&s, "idle", Duration::from_secs(60)).unwrap();

    assert_ne!(leaks(&tag), no_leaks(), "the leak check must see a live swarm");
    let removed = s.teardown();
    assert!(removed.iter().all(|r| !r.contains(": ")), "teardown failures: {removed:?}");
    drop(s);
    assert_eq!(leaks(&tag), no_leaks());
}

#[test]
fn a_service_whose_image_cannot_be_pulled_fails_naming_the_service_and_task_states() {
    if !usable() {
        return;
    }
    let cfg = SwarmConfig { managers: 1, workers: 0, ..SwarmConfig::default() };
    let s = Swarm::create(&cfg, &progress).expect("creating a one-node swarm");
    let tag = s.tag.clone();
    // A registry address on the swarm's bridge where nothing listens.
    let unreachable = s.image().replacen(":5000/", ":5999/", 1);
    cluster::create_service(&s, "unpullable", 2, &unreachable).unwrap();
    let e = cluster::wait_running(&s, "unpullable", 2, None, Duration::from_secs(20)).unwrap_err();
    let msg = e.to_string();
    eprintln!("  error as the user sees it: {msg}");
    assert!(matches!(e, SwarmError::NotConverged { .. }), "{msg}");
    assert!(msg.contains("service unpullable"), "{msg}");
    assert!(msg.contains("rejected") || msg.contains("failed"), "the failed tasks are named: {msg}");
    drop(s);
    assert_eq!(leaks(&tag), no_leaks());
}

#[test]
fn a_node_that_cannot_reach_a_manager_never_joins_and_is_named() {
    if !usable() {
        return;
    }
    let cfg = SwarmConfig { managers: 1, workers: 1, ..SwarmConfig::default() };
    let mut s = Swarm::create(&cfg, &progress).expect("creating a 1 + 1 swarm");
    let tag = s.tag.clone();
    let token = cluster::worker_token(&s).unwrap();
    // The bridge's own address: on the swarm's subnet, but no manager listens there.
    let nowhere = s.image().split('/').next().unwrap().replace(":5000", ":2377");
    let worker = s.node_mut(1).unwrap();
    cluster::leave(worker).unwrap();
    let e = cluster::join(worker, &nowhere, &token, Duration::from_secs(8)).unwrap_err();
    let msg = e.to_string();
    eprintln!("  error as the user sees it: {msg}");
    assert!(matches!(e, SwarmError::NotJoined { .. }), "{msg}");
    assert!(msg.contains("worker-1"), "the node is named: {msg}");
    drop(s);
    assert_eq!(leaks(&tag), no_leaks());
}

#[test]
fn gc_removes_a_swarm_whose_run_died() {
    if !usable() {
        return;
    }
    // A run that dies without tearing down: a child process makes a one-node swarm and is killed.
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args(["--exact", "crashed_run_child", "--nocapture", "--ignored"])
        .env("CVBENCH_SWARM_CRASH_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let tag = format!("cvbench-{}-sw0", child.id());
    let made = cluster::wait_until("the child's swarm formed", Duration::from_secs(120), || {
        Ok((!Path::new("/run").join(&tag).join("formed").exists()).then(|| "forming".to_string()))
    });
    let _ = child.kill();
    let _ = child.wait();
    made.unwrap();
    assert_ne!(leaks(&tag), no_leaks(), "the killed run left its swarm");
    let removed = teardown::gc();
    assert!(removed.iter().any(|r| r.contains(&tag)), "{removed:?}");
    assert_eq!(leaks(&tag), no_leaks());
}

/// The crashed run of [`gc_removes_a_swarm_whose_run_died`]: makes a swarm, marks it formed,
/// then waits to be killed.
#[test]
#[ignore = "run by gc_removes_a_swarm_whose_run_died"]
fn crashed_run_child() {
    if std::env::var_os("CVBENCH_SWARM_CRASH_CHILD").is_none() {
        return;
    }
    let cfg = SwarmConfig { managers: 1, workers: 0, ..SwarmConfig::default() };
    let s = Swarm::create(&cfg, &progress).unwrap();
    std::fs::write(Path::new("/run").join(&s.tag).join("formed"), "").unwrap();
    std::thread::sleep(Duration::from_secs(600));
    drop(s);
}
