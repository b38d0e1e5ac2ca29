//! The `swarm` scenario. One unit is one round on one swarm made by the run (3 managers +
//! 2 workers, src/swarm/): the swarm is formed once, then each service size N of the round is
//! measured on it in an order shuffled from the plan's seed, each N giving one record
//! (`swarm-N`): a service of N idle tasks until all run (the managers' task states) and all
//! printed READY, beside N `docker run -d` on one engine; scale N → 2N; a rolling update to a new
//! tag; node loss (SIGKILL of a worker's dockerd and containerd) until the node is down and all
//! tasks run again; leader loss until a new leader answers; each engine's memory idle and with
//! tasks. After each N the service is removed and the killed engines are restarted on their data
//! roots, and the next N waits until every node is back and no engine holds a container (a swarm
//! that does not come back in time is torn down and the next N gets a fresh one; nothing is
//! restored after the last N). Only the `docker` backend has this cell.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendId};
use crate::record::RunRecord;
use crate::runner::RunRequest;
use crate::swarm::cluster::{self, Engine};
use crate::swarm::remote::{Remote, Target};
use crate::swarm::{Role, Swarm, SwarmConfig, SwarmError};

/// The service sizes of a profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sizes {
    Quick,
    Full,
}

impl Sizes {
    /// Every round measures each of these.
    pub fn list(self) -> &'static [u32] {
        match self {
            Sizes::Quick => &[1, 5],
            Sizes::Full => &[1, 10, 50],
        }
    }

    /// The cell's time budget: ten full rounds, with room for a host busier than the one the
    /// committed run had (README, reports/swarm/).
    pub fn budget(self) -> Duration {
        Duration::from_secs(match self {
            Sizes::Quick => 600,
            Sizes::Full => 4200,
        })
    }
}

const SERVICE: &str = "cvb-idle";

/// Why `backend` has no swarm cell.
pub fn not_applicable(backend: BackendId) -> Option<String> {
    (backend != BackendId::Docker).then(|| "swarm: Docker Swarm's orchestration (docker backend only)".to_string())
}

/// A bound for waits that grow with the task count.
fn bound(n: u32) -> Duration {
    Duration::from_secs(60 + 3 * n as u64)
}

/// Bound on bringing the swarm back after an N: engines restarted, nodes ready, containers gone.
const RESTORE: Duration = Duration::from_secs(180);

/// One round: a swarm formed once (or the one `named` by the user), every size of the round
/// measured on it in shuffled order. One record per size, named `swarm-N`.
pub fn unit(b: &dyn Backend, req: &RunRequest, sizes: Sizes, seed: u64, named: Option<&Target>) -> Vec<RunRecord> {
    let ns = sizes.list();
    let order = super::design::round_order(seed, &req.scenario, req.iteration, ns.len());
    let ns: Vec<u32> = order.iter().map(|&k| ns[k]).collect();
    let mut recs: Vec<RunRecord> = ns
        .iter()
        .enumerate()
        .map(|(position, n)| {
            let mut r = crate::runner::record_for(b, req);
            r.scenario = format!("swarm-{n}");
            r.extra.insert("swarm_position".into(), position as f64);
            r.extra.insert("swarm_sizes_in_round".into(), ns.len() as f64);
            if named.is_some() {
                return r;
            }
            r.notes.push(format!(
                "swarm: one swarm of 3 managers + 2 workers per round, each a private dockerd 20.10 in its own \
                 network namespace on a run-created bridge, dispatcher heartbeat 1 s; every size of the round \
                 measured on it in shuffled order (extra.swarm_position), killed engines restarted between sizes, \
                 both image tags pulled on every node first; {n} idle tasks; images from a registry on the bridge"
            ));
            r
        })
        .collect();
    if let Some(why) = not_applicable(b.id()) {
        for r in &mut recs {
            r.error = Some(why.clone());
        }
        return recs;
    }
    if let Some(target) = named {
        on_named(target, &ns, &mut recs);
        return recs;
    }
    let round = Instant::now();
    let mut swarm: Option<Formed> = None;
    // Why the swarm of the round was dropped (a failed restore), said on the size that re-forms it.
    let mut dropped: Option<String> = None;
    let last = ns.len().saturating_sub(1);
    for (k, (r, &n)) in recs.iter_mut().zip(&ns).enumerate() {
        let f = match swarm.take() {
            Some(f) => f,
            None => match Formed::new() {
                Ok(f) => {
                    if let Some(why) = dropped.take() {
                        r.notes.push(format!("swarm: a fresh swarm for this size: {why}"));
                    }
                    f
                }
                Err(e) => {
                    r.error = Some(format!("swarm-{n}: {e}"));
                    continue;
                }
            },
        };
        let Formed { mut s, formed, prepared } = f;
        let mut m = Measured::default();
        m.phase("swarm formed", formed);
        m.extra.insert("swarm_prepull_ns".into(), prepared.as_nanos() as f64);
        let result = measure(&mut s, n, &mut m);
        if let Err(e) = result {
            r.error = Some(format!("swarm-{n}: {e}"));
        }
        // After the last size the swarm is torn down whole: nothing to restore.
        if k < last {
            let t = Instant::now();
            let restored = restore(&mut s);
            m.extra.insert("swarm_restore_ns".into(), t.elapsed().as_nanos() as f64);
            match restored {
                Ok(()) => swarm = Some(Formed { s, formed, prepared }),
                Err(e) => dropped = Some(format!("the swarm was not restored after swarm-{n} ({e})")),
            }
        }
        m.fill(r);
    }
    drop(swarm);
    // The whole round, teardown included: what one unit of this cell costs.
    for r in &mut recs {
        r.extra.insert("swarm_round_s".into(), round.elapsed().as_secs_f64());
    }
    recs
}

/// A swarm of the round, formed and with both tags on every node; how long each took.
struct Formed {
    s: Swarm,
    formed: Duration,
    prepared: Duration,
}

impl Formed {
    fn new() -> Result<Formed, SwarmError> {
        let t = Instant::now();
        let s = Swarm::create(&SwarmConfig::default(), &|_| {})?;
        let formed = t.elapsed();
        // Every node holds both tags before any size runs: the first size on a swarm pulls
        // nothing the later ones do not.
        let t = Instant::now();
        prepare(&s)?;
        Ok(Formed { s, formed, prepared: t.elapsed() })
    }
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

    fn fill(self, rec: &mut RunRecord) {
        rec.host.launch_to_ready_ns = self.phases.iter().find(|(k, _)| k == "service all READY").map(|(_, v)| *v);
        for (k, v) in &self.phases {
            rec.extra.insert(format!("swarm_{}_ns", k.replace([' ', '→'], "_")), *v as f64);
        }
        rec.extra.extend(self.extra);
        rec.host.phases = self.phases;
    }
}

/// Every phase of size `n` on `s`, which is settled and holds no container.
fn measure(s: &mut Swarm, n: u32, m: &mut Measured) -> Result<(), SwarmError> {
    m.memory(s, "idle");
    let want = n as usize;
    let image = s.image().to_string();

    let t = Instant::now();
    cluster::create_service(s, SERVICE, want, &image)?;
    cluster::wait_running(s, SERVICE, want, None, bound(n))?;
    m.phase("service all running", t.elapsed());
    cluster::wait_ready(s, SERVICE, bound(n))?;
    m.phase("service all READY", t.elapsed());
    m.memory(s, "tasks");

    let worker = s.nodes().iter().find(|x| x.role == Role::Worker).ok_or_else(|| no("worker"))?;
    m.phase("docker run -d ×N all READY", docker_run_beside(worker, s.image(), n)?);

    let t = Instant::now();
    cluster::scale(s, SERVICE, 2 * want)?;
    cluster::wait_running(s, SERVICE, 2 * want, None, bound(2 * n))?;
    m.phase("scale N→2N all running", t.elapsed());

    let v2 = s.reference(UPDATE_TAG);
    let t = Instant::now();
    cluster::update_image(s, SERVICE, &v2)?;
    cluster::wait_running(s, SERVICE, 2 * want, Some(&v2), bound(2 * n))?;
    m.phase("rolling update all running", t.elapsed());

    let victim = s.nodes().iter().rposition(|x| x.role == Role::Worker).ok_or_else(|| no("worker"))?;
    let t = Instant::now();
    s.node_mut(victim).ok_or_else(|| no("worker"))?.kill_engine()?;
    m.phase("node loss → marked down", cluster::wait_node_down(s, victim, bound(0))?);
    cluster::wait_running(s, SERVICE, 2 * want, None, bound(2 * n))?;
    m.phase("node loss → all running", t.elapsed());

    let old = cluster::leader(s)?.ok_or_else(|| no("leader"))?;
    let t = Instant::now();
    s.node_mut(old).ok_or_else(|| no("leader"))?.kill_engine()?;
    cluster::wait_new_leader(s, old, bound(0))?;
    m.phase("leader loss → new leader answers", t.elapsed());
    Ok(())
}

/// The rolling update's tag, pushed once per round.
const UPDATE_TAG: &str = "v2";

/// Push the update's tag and pull both tags on every node.
fn prepare(s: &Swarm) -> Result<(), SwarmError> {
    let v2 = s.push_tag(UPDATE_TAG)?;
    for node in s.nodes() {
        for r in [s.image(), v2.as_str()] {
            node.docker(&["pull", "-q", r], Duration::from_secs(120))?;
        }
    }
    Ok(())
}

/// Back to a settled swarm with no service and no container: the service removed, every killed
/// engine restarted on its data root.
fn restore(s: &mut Swarm) -> Result<(), SwarmError> {
    if s.manager().is_ok() {
        let _ = cluster::remove_service(s, SERVICE);
    }
    for i in 0..s.nodes().len() {
        if let Some(node) = s.node_mut(i) {
            node.restart(RESTORE)?;
        }
    }
    cluster::wait_settled(s, RESTORE)?;
    // A restarted engine can miss the removal: remove the service again once a leader answers.
    let _ = cluster::remove_service(s, SERVICE);
    cluster::wait_no_containers(s, RESTORE)?;
    Ok(())
}

fn no(what: &str) -> SwarmError {
    SwarmError::Config(format!("the swarm has no {what}"))
}

/// N `docker run -d` of the idle workload on engine `e`, until each printed READY; removed after.
fn docker_run_beside(e: &dyn Engine, image: &str, n: u32) -> Result<Duration, SwarmError> {
    let call = Duration::from_secs(60);
    let t = Instant::now();
    let mut ids = Vec::new();
    let mut started = Ok(());
    for _ in 0..n {
        match e.docker(&["run", "-d", "-t", image, "/cvbench-workload", "idle"], call) {
            Ok(id) => ids.push(id.trim().to_string()),
            Err(err) => {
                started = Err(err);
                break;
            }
        }
    }
    let waited = started.and_then(|()| {
        cluster::wait_until("every docker run -d printed READY", bound(n), || {
            let waiting = ids
                .iter()
                .filter(|id| !e.docker(&["logs", id], call).is_ok_and(|l| l.lines().any(crate::record::is_ready_line)))
                .count();
            Ok((waiting > 0).then(|| format!("{waiting} of {n} not READY")))
        })
    });
    let elapsed = t.elapsed();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids.iter().map(String::as_str));
        let _ = e.docker(&args, call);
    }
    waited.map(|_| elapsed)
}

/// The round on the user's swarm: every size in turn, with the run's own service, removed after.
fn on_named(target: &Target, ns: &[u32], recs: &mut [RunRecord]) {
    let r = match Remote::connect(target) {
        Ok(r) => r,
        Err(e) => {
            for rec in recs.iter_mut() {
                rec.error = Some(format!("swarm: {e}"));
            }
            return;
        }
    };
    let service = format!("cvb-idle-{}", std::process::id());
    for (rec, &n) in recs.iter_mut().zip(ns) {
        rec.notes.push(format!(
            "swarm: the swarm named by --swarm-manager {} (its nodes are in the manifest), sizes ({}) in \
             shuffled order; {n} idle tasks of {}",
            target.endpoint,
            ns.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
            target.image
        ));
        rec.notes.push(format!("swarm: {}", crate::swarm::remote::NOT_MEASURED));
        rec.extra.insert("swarm_named".into(), 1.0);
        let mut m = Measured::default();
        let result = measure_named(&r, &service, n, &mut m);
        let _ = cluster::remove_service(&r, &service);
        let gone = cluster::wait_until(&format!("service {service} removed"), RESTORE, || {
            let left = r.docker(&["service", "ls", "-q", "--filter", &format!("name={service}")], CALL)?;
            Ok((!left.trim().is_empty()).then(|| "still listed".to_string()))
        });
        if let Err(e) = result.and(gone.map(|_| ())) {
            rec.error = Some(format!("swarm-{n}: {e}"));
        }
        m.fill(rec);
    }
}

const CALL: Duration = Duration::from_secs(30);

/// The phases a user's swarm allows (see [`crate::swarm::remote::NOT_MEASURED`]).
fn measure_named(r: &Remote, service: &str, n: u32, m: &mut Measured) -> Result<(), SwarmError> {
    let want = n as usize;
    let image = r.target.image.as_str();
    let t = Instant::now();
    cluster::create_service(r, service, want, image)?;
    cluster::wait_running(r, service, want, None, bound(n))?;
    m.phase("service all running", t.elapsed());
    cluster::wait_ready(r, service, bound(n))?;
    m.phase("service all READY", t.elapsed());

    m.phase("docker run -d ×N all READY", docker_run_beside(r, image, n)?);

    let t = Instant::now();
    cluster::scale(r, service, 2 * want)?;
    cluster::wait_running(r, service, 2 * want, None, bound(2 * n))?;
    m.phase("scale N→2N all running", t.elapsed());

    let before: Vec<String> = cluster::tasks(r, service)?.into_iter().map(|t| t.id).collect();
    let t = Instant::now();
    cluster::force_update(r, service)?;
    cluster::wait_replaced(r, service, 2 * want, &before, bound(2 * n))?;
    m.phase("rolling update (--force, same image) all running", t.elapsed());
    Ok(())
}
