//! Lab 7 (orchestration): a swarm made by the run (3 managers + 2 workers, or 1 + 2 with
//! --quick), who leads, where a service's tasks land, what happens to them when a worker's
//! engine dies, and (full run) how the managers elect a new leader when the leader dies.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{progress, yes, LabOptions, LabReport, Table};
use crate::swarm::{cluster, Role, Swarm, SwarmConfig};

const SERVICE: &str = "lab7";
const TASKS: usize = 6;
const WAIT: Duration = Duration::from_secs(120);

pub fn run(opts: &LabOptions, r: &mut LabReport) {
    let missing = crate::swarm::host_missing();
    if !missing.is_empty() {
        r.unavailable(format!("a swarm needs {}", missing.join(", ")));
        return;
    }
    let managers = if opts.quick { 1 } else { 3 };
    if opts.quick {
        r.note("--quick: one manager, so there is no leader election to show; run without --quick for 3 managers");
    }
    let cfg = SwarmConfig { managers, workers: 2, ..SwarmConfig::default() };
    let mut s = match Swarm::create(&cfg, &|m| progress(m)) {
        Ok(s) => s,
        Err(e) => {
            r.check("the swarm forms", false, e.to_string());
            return;
        }
    };
    if let Err(e) = observe(&mut s, r) {
        r.check("the experiment ran to the end", false, e.to_string());
    }
    let removed = s.teardown();
    let failed: Vec<&String> = removed.iter().filter(|l| l.contains(": ")).collect();
    r.check("the swarm is torn down (processes, namespaces, directories)", failed.is_empty(), format!("{failed:?}"));
}

fn node_table(s: &Swarm, title: &str) -> Result<Table, crate::swarm::SwarmError> {
    let states = cluster::node_states(s.manager()?)?;
    let mut t = Table::new(title, &["node", "address", "role", "state", "manager status"]);
    for n in s.nodes() {
        let st = states.iter().find(|x| x.id == n.node_id);
        let mgr = st.and_then(|x| x.manager.as_ref()).map(|m| {
            if m.leader {
                "Leader".to_string()
            } else {
                m.reachability.clone()
            }
        });
        t.row([
            n.label(),
            n.addr.to_string(),
            n.role.name().to_string(),
            st.map(|x| x.status.state.clone()).unwrap_or_else(|| "?".into()),
            mgr.unwrap_or_else(|| "—".into()),
        ]);
    }
    Ok(t)
}

fn placement(s: &Swarm) -> Result<BTreeMap<String, usize>, crate::swarm::SwarmError> {
    let mut m = BTreeMap::new();
    for t in cluster::tasks(s.manager()?, SERVICE)? {
        let label = s.nodes().iter().find(|n| n.node_id == t.node_id).map(|n| n.label()).unwrap_or(t.node_id);
        *m.entry(label).or_insert(0) += 1;
    }
    Ok(m)
}

fn observe(s: &mut Swarm, r: &mut LabReport) -> Result<(), crate::swarm::SwarmError> {
    r.tables.push(node_table(s, "The swarm: who manages, who leads")?);
    let leader = cluster::leader(s)?;
    r.check(
        "exactly one manager leads (Raft)",
        leader.is_some_and(|i| s.nodes()[i].role == Role::Manager),
        format!("leader: {}", leader.map(|i| s.nodes()[i].label()).unwrap_or_else(|| "none".into())),
    );

    progress(&format!("service {SERVICE}: {TASKS} idle tasks"));
    let image = s.image().to_string();
    cluster::create_service(s, SERVICE, TASKS, &image)?;
    let up = cluster::wait_running(s, SERVICE, TASKS, None, WAIT)?;
    let before = placement(s)?;
    let mut t =
        Table::new("Where the scheduler put the tasks", &["node", "tasks before", "tasks after the worker died"]);
    r.check(
        "the tasks spread over more than one node (managers run tasks too)",
        before.len() > 1,
        format!("{before:?}, all running after {:.1} s", up.as_secs_f64()),
    );

    let victim = s.nodes().iter().rposition(|n| n.role == Role::Worker).unwrap_or(0);
    let label = s.nodes()[victim].label();
    progress(&format!("SIGKILL of {label}'s dockerd and containerd"));
    if let Some(n) = s.node_mut(victim) {
        n.kill_engine()?;
    }
    let down = cluster::wait_node_down(s, victim, WAIT)?;
    let again = cluster::wait_running(s, SERVICE, TASKS, None, WAIT)?;
    let after = placement(s)?;
    for n in s.nodes() {
        let l = n.label();
        t.row([l.clone(), before.get(&l).unwrap_or(&0).to_string(), after.get(&l).unwrap_or(&0).to_string()]);
    }
    r.tables.push(t);
    r.check(
        format!("the managers mark {label} down"),
        true,
        format!("{:.1} s after the kill (dispatcher heartbeat 1 s)", down.as_secs_f64()),
    );
    r.check(
        format!("its tasks run again elsewhere, none on {label}"),
        !after.contains_key(&label) && after.values().sum::<usize>() == TASKS,
        format!("{TASKS} running {:.1} s after the kill; {after:?}", again.as_secs_f64()),
    );

    if let Some(old) = leader.filter(|_| s.nodes().iter().filter(|n| n.role == Role::Manager).count() >= 3) {
        let old_label = s.nodes()[old].label();
        progress(&format!("SIGKILL of the leader {old_label}'s engine"));
        if let Some(n) = s.node_mut(old) {
            n.kill_engine()?;
        }
        let elected = cluster::wait_new_leader(s, old, WAIT)?;
        let new = cluster::leader(s)?.map(|i| s.nodes()[i].label()).unwrap_or_else(|| "none".into());
        r.tables.push(node_table(s, "After the leader died")?);
        r.check(
            "the remaining managers elect a new leader and the service API answers",
            new != old_label && new != "none",
            format!("{new} leads {:.1} s after {old_label} died", elected.as_secs_f64()),
        );
        let still = cluster::tasks(s.manager()?, SERVICE)?.len();
        r.check(
            "the service keeps its tasks through the election",
            still == TASKS,
            format!("{still} tasks desired running; {}", yes(still == TASKS)),
        );
    }
    Ok(())
}
