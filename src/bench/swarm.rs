//! The `swarm` scenario: one unit is one round on a fresh swarm made by the run (3 managers +
//! 2 workers, src/swarm/): a service of N idle tasks until all run (the managers' task states)
//! and all printed READY, beside N `docker run -d` on one engine; scale N → 2N; a rolling update
//! to a new tag; node loss (SIGKILL of a worker's dockerd and containerd) until the node is down
//! and all tasks run again; leader loss until a new leader answers; each engine's memory idle
//! and with tasks. Only the `docker` backend has this cell.

use std::time::{Duration, Instant};

use crate::backend::{Backend, BackendId};
use crate::record::RunRecord;
use crate::runner::RunRequest;
use crate::swarm::{cluster, Role, Swarm, SwarmConfig, SwarmError};

/// Service sizes of the full profile (the quick profile runs the first two).
pub const SIZES: &[u32] = &[1, 10, 50];
pub const QUICK_SIZES: &[u32] = &[1, 5];

const SERVICE: &str = "cvb-idle";

/// Why `backend` has no swarm cell.
pub fn not_applicable(backend: BackendId) -> Option<String> {
    (backend != BackendId::Docker).then(|| "swarm: Docker Swarm's orchestration (docker backend only)".to_string())
}

/// A bound for waits that grow with the task count.
fn bound(n: u32) -> Duration {
    Duration::from_secs(60 + 3 * n as u64)
}

/// One round of `swarm-N`.
pub fn unit(b: &dyn Backend, req: &RunRequest, n: u32) -> RunRecord {
    let mut rec = crate::runner::record_for(b, req);
    if let Some(why) = not_applicable(b.id()) {
        rec.error = Some(why);
        return rec;
    }
    let mut m = Measured::default();
    match round(n, &mut m) {
        Ok(()) => {}
        Err(e) => rec.error = Some(format!("swarm-{n}: {e}")),
    }
    rec.host.launch_to_ready_ns = m.phases.iter().find(|(k, _)| k == "service all READY").map(|(_, v)| *v);
    for (k, v) in &m.phases {
        rec.extra.insert(format!("swarm_{}_ns", k.replace([' ', '→'], "_")), *v as f64);
    }
    rec.extra.extend(m.extra);
    rec.host.phases = m.phases;
    rec.notes.push(format!(
        "swarm: a fresh swarm of 3 managers + 2 workers per round, each a private dockerd 20.10 in its own network \
         namespace on a run-created bridge, dispatcher heartbeat 1 s; {n} idle tasks; images from a registry on the bridge"
    ));
    rec
}

#[derive(Default)]
struct Measured {
    phases: Vec<(String, u64)>,
    extra: std::collections::BTreeMap<String, f64>,
}

impl Measured {
    fn phase(&mut self, name: &str, d: Duration) {
        self.phases.push((name.to_string(), d.as_nanos() as u64));
    }

    /// Each engine's PSS and the sum, under `when` (`idle`, `tasks`).
    fn memory(&mut self, s: &Swarm, when: &str) {
        let mut total = 0;
        for node in s.nodes() {
            let kib = node.engine_pss_kib().unwrap_or(0);
            total += kib;
            self.extra.insert(format!("swarm_engine_pss_kib_{when}_{}", node.label()), kib as f64);
        }
        self.extra.insert(format!("swarm_engines_pss_kib_{when}"), total as f64);
    }
}

fn round(n: u32, m: &mut Measured) -> Result<(), SwarmError> {
    let t = Instant::now();
    let mut s = Swarm::create(&SwarmConfig::default(), &|_| {})?;
    m.phase("swarm formed", t.elapsed());
    m.memory(&s, "idle");
    let want = n as usize;
    let image = s.image().to_string();

    let t = Instant::now();
    cluster::create_service(&s, SERVICE, want, &image)?;
    let running = cluster::wait_running(&s, SERVICE, want, None, bound(n))?;
    m.phase("service all running", t.elapsed());
    cluster::wait_ready(&s, SERVICE, bound(n))?;
    m.phase("service all READY", t.elapsed());
    let _ = running;
    m.memory(&s, "tasks");

    m.phase("docker run -d ×N all READY", docker_run_beside(&s, n)?);

    let t = Instant::now();
    cluster::scale(&s, SERVICE, 2 * want)?;
    cluster::wait_running(&s, SERVICE, 2 * want, None, bound(2 * n))?;
    m.phase("scale N→2N all running", t.elapsed());

    let v2 = s.push_tag("v2")?;
    let t = Instant::now();
    cluster::update_image(&s, SERVICE, &v2)?;
    cluster::wait_running(&s, SERVICE, 2 * want, Some(&v2), bound(2 * n))?;
    m.phase("rolling update all running", t.elapsed());

    let victim = s.nodes().iter().rposition(|x| x.role == Role::Worker).ok_or_else(|| no("worker"))?;
    let t = Instant::now();
    s.node_mut(victim).ok_or_else(|| no("worker"))?.kill_engine()?;
    m.phase("node loss → marked down", cluster::wait_node_down(&s, victim, bound(0))?);
    cluster::wait_running(&s, SERVICE, 2 * want, None, bound(2 * n))?;
    m.phase("node loss → all running", t.elapsed());

    let old = cluster::leader(&s)?.ok_or_else(|| no("leader"))?;
    let t = Instant::now();
    s.node_mut(old).ok_or_else(|| no("leader"))?.kill_engine()?;
    cluster::wait_new_leader(&s, old, bound(0))?;
    m.phase("leader loss → new leader answers", t.elapsed());
    drop(s);
    Ok(())
}

fn no(what: &str) -> SwarmError {
    SwarmError::Config(format!("the swarm has no {what}"))
}

/// N `docker run -d` of the idle workload on the first worker's engine, until each printed READY;
/// removed after.
fn docker_run_beside(s: &Swarm, n: u32) -> Result<Duration, SwarmError> {
    let e = s.nodes().iter().find(|x| x.role == Role::Worker).ok_or_else(|| no("worker"))?;
    let call = Duration::from_secs(60);
    let t = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = e.docker(&["run", "-d", "-t", s.image(), "/cvbench-workload", "idle"], call)?;
        ids.push(id.trim().to_string());
    }
    let waited = cluster::wait_until("every docker run -d printed READY", bound(n), || {
        let waiting = ids.iter().filter(|id| !e.docker(&["logs", id], call).is_ok_and(|l| l.contains("READY"))).count();
        Ok((waiting > 0).then(|| format!("{waiting} of {n} not READY")))
    });
    let elapsed = t.elapsed();
    let mut args = vec!["rm", "-f"];
    args.extend(ids.iter().map(String::as_str));
    let _ = e.docker(&args, call);
    waited.map(|_| elapsed)
}
