//! Forming the swarm (init, join) and asking its managers: nodes, the leader, services and
//! their tasks, with bounded waits whose errors name the service and the task states.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{Node, Role, Swarm, SwarmError};

/// Swarm's manager port.
const MANAGER_PORT: u16 = 2377;
/// One CLI call's bound.
const CALL: Duration = Duration::from_secs(30);

/// A docker engine the CLI can address.
pub trait Engine {
    /// Run the docker CLI against this engine, bounded by `limit`.
    fn docker(&self, args: &[&str], limit: Duration) -> Result<String, SwarmError>;
}

impl Engine for Node {
    fn docker(&self, args: &[&str], limit: Duration) -> Result<String, SwarmError> {
        Node::docker(self, args, limit)
    }
}

/// A swarm whose services the measurements drive: the run's own ([`Swarm`]) or one the user
/// named ([`super::remote::Remote`]).
pub trait Services {
    /// A manager that answers, asked afresh each call (the leader may have changed).
    fn manager_engine(&self) -> Result<&dyn Engine, SwarmError>;
    /// What a task's container printed.
    fn task_log(&self, t: &Task) -> Result<String, SwarmError>;
}

impl Services for Swarm {
    fn manager_engine(&self) -> Result<&dyn Engine, SwarmError> {
        Ok(self.manager()?)
    }

    /// From the container's log on the task's node (a run-made swarm reaches every engine).
    fn task_log(&self, t: &Task) -> Result<String, SwarmError> {
        let node = self.nodes().iter().find(|n| n.node_id == t.node_id && n.dockerd_pid().is_some());
        let cid = t.status.container.as_ref().map(|c| c.id.as_str()).unwrap_or("");
        match node {
            Some(n) if !cid.is_empty() => n.docker(&["logs", cid], CALL),
            _ => Err(SwarmError::EngineDown { node: t.node_id.clone(), detail: "task not placed yet".into() }),
        }
    }
}

/// A node as a manager sees it (`docker node inspect`).
#[derive(Debug, Deserialize)]
pub struct NodeState {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Status")]
    pub status: NodeStatus,
    #[serde(rename = "ManagerStatus", default)]
    pub manager: Option<ManagerStatus>,
}

#[derive(Debug, Deserialize)]
pub struct NodeStatus {
    /// `ready`, `down`, `unknown`, `disconnected`.
    #[serde(rename = "State")]
    pub state: String,
}

#[derive(Debug, Deserialize)]
pub struct ManagerStatus {
    #[serde(rename = "Leader", default)]
    pub leader: bool,
    #[serde(rename = "Reachability", default)]
    pub reachability: String,
}

/// A task as a manager sees it (`docker inspect <task>`).
#[derive(Debug, Deserialize)]
pub struct Task {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "NodeID", default)]
    pub node_id: String,
    #[serde(rename = "DesiredState")]
    pub desired: String,
    #[serde(rename = "Status")]
    pub status: TaskStatus,
}

#[derive(Debug, Deserialize)]
pub struct TaskStatus {
    #[serde(rename = "State")]
    pub state: String,
    #[serde(rename = "Err", default)]
    pub err: String,
    #[serde(rename = "ContainerStatus", default)]
    pub container: Option<ContainerStatus>,
}

#[derive(Debug, Deserialize)]
pub struct ContainerStatus {
    #[serde(rename = "ContainerID", default)]
    pub id: String,
}

/// Task states counted, with the first error seen per state: `3 running, 2 rejected (No such
/// image: ...)`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TaskCounts(pub BTreeMap<String, (usize, String)>);

impl TaskCounts {
    pub fn of(tasks: &[Task]) -> TaskCounts {
        let mut m: BTreeMap<String, (usize, String)> = BTreeMap::new();
        for t in tasks {
            let e = m.entry(t.status.state.clone()).or_default();
            e.0 += 1;
            if e.1.is_empty() {
                e.1 = t.status.err.clone();
            }
        }
        TaskCounts(m)
    }

    pub fn running(&self) -> usize {
        self.0.get("running").map(|(n, _)| *n).unwrap_or(0)
    }
}

impl std::fmt::Display for TaskCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return write!(f, "none");
        }
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(s, (n, e))| if e.is_empty() { format!("{n} {s}") } else { format!("{n} {s} ({e})") })
            .collect();
        write!(f, "{}", parts.join(", "))
    }
}

fn parse<T: serde::de::DeserializeOwned>(command: &str, text: &str) -> Result<T, SwarmError> {
    serde_json::from_str(text).map_err(|e| SwarmError::Parse { command: command.into(), detail: e.to_string() })
}

/// `swarm init` on the first node, then every other node joins with its role's token; waits
/// (bounded) until the first manager sees every node ready.
pub fn form(nodes: &mut [Node], heartbeat_s: u32, limit: Duration) -> Result<(), SwarmError> {
    let Some((first, rest)) = nodes.split_first_mut() else {
        return Err(SwarmError::Config("a swarm needs at least one node".into()));
    };
    let a = first.addr.to_string();
    let listen = format!("{a}:{MANAGER_PORT}");
    let hb = format!("{heartbeat_s}s");
    first.docker(
        &["swarm", "init", "--advertise-addr", &a, "--listen-addr", &listen, "--dispatcher-heartbeat", &hb],
        limit,
    )?;
    first.node_id = first.docker(&["info", "--format", "{{.Swarm.NodeID}}"], CALL)?.trim().to_string();
    let manager_token = first.docker(&["swarm", "join-token", "-q", "manager"], CALL)?.trim().to_string();
    let worker_token = first.docker(&["swarm", "join-token", "-q", "worker"], CALL)?.trim().to_string();
    for n in rest.iter_mut() {
        join(n, &listen, if n.role == Role::Manager { &manager_token } else { &worker_token }, limit)?;
    }
    let want: Vec<(String, String)> = std::iter::once(first.node_id.clone())
        .chain(rest.iter().map(|n| n.node_id.clone()))
        .zip(labels(first, rest))
        .collect();
    wait_until(&format!("every node of the swarm ready at {}", first.label()), limit, || {
        let states = node_states(first)?;
        let missing: Vec<String> = want
            .iter()
            .filter(|(id, _)| !states.iter().any(|s| &s.id == id && s.status.state == "ready"))
            .map(|(_, l)| l.clone())
            .collect();
        Ok(if missing.is_empty() { None } else { Some(format!("not ready: {}", missing.join(", "))) })
    })
    .map(|_| ())
    .map_err(|e| match e {
        SwarmError::Wait { detail, .. } => SwarmError::NotJoined { node: "the swarm".into(), detail },
        e => e,
    })
}

fn labels(first: &Node, rest: &[Node]) -> Vec<String> {
    std::iter::once(first.label()).chain(rest.iter().map(Node::label)).collect()
}

/// One node joins the swarm whose manager listens at `manager`.
pub fn join(n: &mut Node, manager: &str, token: &str, limit: Duration) -> Result<(), SwarmError> {
    let a = n.addr.to_string();
    let listen = format!("{a}:{MANAGER_PORT}");
    n.docker(&["swarm", "join", "--token", token, "--advertise-addr", &a, "--listen-addr", &listen, manager], limit)
        .map_err(|e| SwarmError::NotJoined { node: n.label(), detail: e.to_string() })?;
    n.node_id = n.docker(&["info", "--format", "{{.Swarm.NodeID}}"], CALL)?.trim().to_string();
    Ok(())
}

/// Node `n` leaves the swarm (`--force`: a manager may leave too).
pub fn leave(n: &mut Node) -> Result<(), SwarmError> {
    n.docker(&["swarm", "leave", "--force"], CALL)?;
    n.node_id.clear();
    Ok(())
}

/// The worker join token, from a manager.
pub fn worker_token(s: &Swarm) -> Result<String, SwarmError> {
    Ok(s.manager_engine()?.docker(&["swarm", "join-token", "-q", "worker"], CALL)?.trim().to_string())
}

/// Poll `f` until it returns `Ok(None)`; `Ok(Some(why))` is "not yet". Returns the time taken.
pub fn wait_until(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Result<Option<String>, SwarmError>,
) -> Result<Duration, SwarmError> {
    let t = Instant::now();
    let mut last;
    loop {
        match f() {
            Ok(None) => return Ok(t.elapsed()),
            Ok(Some(why)) => last = why,
            Err(e) => last = e.to_string(),
        }
        if t.elapsed() > limit {
            return Err(SwarmError::Wait { what: what.into(), secs: limit.as_secs(), detail: last });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every node, as the manager `m` sees them.
pub fn node_states(m: &dyn Engine) -> Result<Vec<NodeState>, SwarmError> {
    let ids = m.docker(&["node", "ls", "-q"], CALL)?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = vec!["node", "inspect"];
    args.extend(&ids);
    parse("docker node inspect", &m.docker(&args, CALL)?)
}

/// The index of the leading manager, asked of each running manager in turn.
pub fn leader(s: &Swarm) -> Result<Option<usize>, SwarmError> {
    let mut last = None;
    for m in s.nodes().iter().filter(|n| n.role == Role::Manager && n.dockerd_pid().is_some()) {
        match node_states(m) {
            Ok(states) => {
                let id = states.iter().find(|n| n.manager.as_ref().is_some_and(|m| m.leader)).map(|n| n.id.clone());
                return Ok(id.and_then(|id| s.nodes().iter().position(|n| n.node_id == id)));
            }
            Err(e) => last = Some(e),
        }
    }
    last.map_or(Ok(None), Err)
}

/// The tasks of `service` meant to run, as the manager `m` sees them.
pub fn tasks(m: &dyn Engine, service: &str) -> Result<Vec<Task>, SwarmError> {
    tasks_where(m, service, &["-f", "desired-state=running"])
}

/// Every task of `service` the manager still remembers, failed and replaced ones too.
pub fn task_history(m: &dyn Engine, service: &str) -> Result<Vec<Task>, SwarmError> {
    tasks_where(m, service, &[])
}

fn tasks_where(m: &dyn Engine, service: &str, filter: &[&str]) -> Result<Vec<Task>, SwarmError> {
    let mut args = vec!["service", "ps", "-q", "--no-trunc"];
    args.extend(filter);
    args.push(service);
    let ids = m.docker(&args, CALL)?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = vec!["inspect", "--type", "task"];
    args.extend(&ids);
    parse("docker inspect (tasks)", &m.docker(&args, CALL)?)
}

/// The most tasks a service of ours may ask for (a swarm of one machine's engines).
pub const MAX_REPLICAS: usize = 1000;

/// A service size we accept: 1..=[`MAX_REPLICAS`].
pub fn check_replicas(service: &str, n: usize) -> Result<(), SwarmError> {
    if (1..=MAX_REPLICAS).contains(&n) {
        Ok(())
    } else {
        Err(SwarmError::Config(format!("service {service}: {n} replicas (1 to {MAX_REPLICAS})")))
    }
}

/// Create `service` with `replicas` tasks of the idle workload from `image` (detached: the
/// caller waits for convergence itself).
pub fn create_service(s: &dyn Services, service: &str, replicas: usize, image: &str) -> Result<(), SwarmError> {
    check_replicas(service, replicas)?;
    let r = replicas.to_string();
    s.manager_engine()?.docker(
        &[
            "service",
            "create",
            "-d",
            "-t",
            "--name",
            service,
            "--replicas",
            &r,
            "--no-resolve-image",
            "--stop-grace-period",
            "2s",
            "--update-parallelism",
            "0",
            image,
            "/cvbench-workload",
            "idle",
        ],
        CALL,
    )?;
    Ok(())
}

pub fn scale(s: &dyn Services, service: &str, replicas: usize) -> Result<(), SwarmError> {
    check_replicas(service, replicas)?;
    s.manager_engine()?.docker(&["service", "scale", "-d", &format!("{service}={replicas}")], CALL)?;
    Ok(())
}

/// A rolling update to `image`.
pub fn update_image(s: &dyn Services, service: &str, image: &str) -> Result<(), SwarmError> {
    s.manager_engine()?.docker(&["service", "update", "-d", "--no-resolve-image", "--image", image, service], CALL)?;
    Ok(())
}

/// A rolling update that changes nothing but replaces every task (`--force`).
pub fn force_update(s: &dyn Services, service: &str) -> Result<(), SwarmError> {
    s.manager_engine()?.docker(&["service", "update", "-d", "--force", service], CALL)?;
    Ok(())
}

pub fn remove_service(s: &dyn Services, service: &str) -> Result<(), SwarmError> {
    s.manager_engine()?.docker(&["service", "rm", service], CALL)?;
    Ok(())
}

/// Wait until `want` tasks of `service` run (optionally all from `image`); the error names the
/// service and the task states.
pub fn wait_running(
    s: &dyn Services,
    service: &str,
    want: usize,
    image: Option<&str>,
    limit: Duration,
) -> Result<Duration, SwarmError> {
    let mut last = TaskCounts::default();
    wait_until(&format!("service {service} converged"), limit, || {
        let m = s.manager_engine()?;
        let ts = tasks(m, service)?;
        let ok = ts.len() == want
            && ts.iter().all(|t| t.status.state == "running")
            && image.is_none_or(|i| image_of(m, &t_ids(&ts)).is_ok_and(|imgs| imgs.iter().all(|x| x.starts_with(i))));
        last = TaskCounts::of(&ts);
        Ok(if ok { None } else { Some(last.to_string()) })
    })
    .map_err(|e| match e {
        SwarmError::Wait { secs, .. } => {
            // The replaced tasks say why (a rejected pull, a failed start): name them too.
            let history = s.manager_engine().and_then(|m| task_history(m, service)).map(|h| TaskCounts::of(&h));
            let states = match history {
                Ok(h) => format!("{last} now; {h} in its history"),
                Err(_) => last.to_string(),
            };
            SwarmError::NotConverged { service: service.into(), want, secs, states }
        }
        e => e,
    })
}

fn t_ids(ts: &[Task]) -> Vec<String> {
    ts.iter().map(|t| t.id.clone()).collect()
}

/// The image each task was made from.
fn image_of(m: &dyn Engine, ids: &[String]) -> Result<Vec<String>, SwarmError> {
    let mut args = vec!["inspect", "--type", "task", "--format", "{{.Spec.ContainerSpec.Image}}"];
    args.extend(ids.iter().map(String::as_str));
    Ok(m.docker(&args, CALL)?.lines().map(str::to_string).collect())
}

/// Wait until every running task of `service` has printed READY (read from its log, see
/// [`Services::task_log`]). Returns the time taken.
pub fn wait_ready(s: &dyn Services, service: &str, limit: Duration) -> Result<Duration, SwarmError> {
    let mut seen = std::collections::BTreeSet::new();
    wait_until(&format!("every task of service {service} printed READY"), limit, || {
        let ts = tasks(s.manager_engine()?, service)?;
        let mut waiting = 0;
        for t in &ts {
            if seen.contains(&t.id) {
                continue;
            }
            if s.task_log(t).is_ok_and(|l| l.lines().any(crate::record::is_ready_line)) {
                seen.insert(t.id.clone());
            } else {
                waiting += 1;
            }
        }
        Ok(if waiting == 0 && !ts.is_empty() {
            None
        } else {
            Some(format!("{waiting} of {} tasks not READY", ts.len()))
        })
    })
}

/// Wait until `want` tasks of `service` run and none of them is one of `before` (a forced
/// rolling update replaced every task).
pub fn wait_replaced(
    s: &dyn Services,
    service: &str,
    want: usize,
    before: &[String],
    limit: Duration,
) -> Result<Duration, SwarmError> {
    wait_until(&format!("every task of service {service} replaced"), limit, || {
        let ts = tasks(s.manager_engine()?, service)?;
        let old = ts.iter().filter(|t| before.contains(&t.id)).count();
        let running = ts.iter().filter(|t| t.status.state == "running").count();
        Ok((old > 0 || running != want || ts.len() != want)
            .then(|| format!("{running} of {want} running, {old} not replaced yet")))
    })
}

/// Wait until the managers mark node `i` down.
pub fn wait_node_down(s: &Swarm, i: usize, limit: Duration) -> Result<Duration, SwarmError> {
    let id = s.nodes().get(i).map(|n| n.node_id.clone()).unwrap_or_default();
    wait_until(&format!("node {i} marked down"), limit, || {
        let states = node_states(s.manager()?)?;
        let st = states.iter().find(|n| n.id == id).map(|n| n.status.state.clone()).unwrap_or_else(|| "absent".into());
        Ok(if st == "down" { None } else { Some(format!("node {i} is {st}")) })
    })
}

/// Wait until every node is ready, every manager reachable and one of them leads, as a running
/// manager sees it (after restarting killed engines).
pub fn wait_settled(s: &Swarm, limit: Duration) -> Result<Duration, SwarmError> {
    wait_until("every node ready and every manager reachable", limit, || {
        let states = node_states(s.manager()?)?;
        let mut behind = Vec::new();
        for n in s.nodes() {
            let st = states.iter().find(|x| x.id == n.node_id);
            let ok = st.is_some_and(|x| {
                x.status.state == "ready"
                    && (n.role == Role::Worker || x.manager.as_ref().is_some_and(|m| m.reachability == "reachable"))
            });
            if !ok {
                behind.push(n.label());
            }
        }
        let led = states.iter().any(|x| x.manager.as_ref().is_some_and(|m| m.leader));
        Ok(match (behind.is_empty(), led) {
            (true, true) => None,
            (true, false) => Some("no leader".into()),
            _ => Some(format!("not ready or not reachable: {}", behind.join(", "))),
        })
    })
}

/// Wait until no node's engine runs a container (a restarted engine removes the tasks it lost).
pub fn wait_no_containers(s: &Swarm, limit: Duration) -> Result<Duration, SwarmError> {
    wait_until("every engine without containers", limit, || {
        let mut busy = Vec::new();
        for n in s.nodes() {
            let ids = n.docker(&["ps", "-aq"], CALL)?;
            let k = ids.split_whitespace().count();
            if k > 0 {
                busy.push(format!("{} has {k}", n.label()));
            }
        }
        Ok((!busy.is_empty()).then(|| busy.join(", ")))
    })
}

/// Wait until a manager other than `old` leads and the service API answers.
pub fn wait_new_leader(s: &Swarm, old: usize, limit: Duration) -> Result<Duration, SwarmError> {
    wait_until("a new leader elected", limit, || match leader(s)? {
        Some(l) if l != old => {
            s.nodes()[l].docker(&["service", "ls", "-q"], CALL)?;
            Ok(None)
        }
        other => Ok(Some(format!("leader: {other:?}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_counts_name_each_state_and_its_first_error() {
        let text = r#"[{"ID":"a","NodeID":"n1","DesiredState":"running","Status":{"State":"running","ContainerStatus":{"ContainerID":"c1"}}},
          {"ID":"b","NodeID":"","DesiredState":"running","Status":{"State":"rejected","Err":"No such image: x"}},
          {"ID":"c","NodeID":"","DesiredState":"running","Status":{"State":"rejected","Err":"No such image: y"}}]"#;
        let ts: Vec<Task> = parse("t", text).unwrap();
        let c = TaskCounts::of(&ts);
        assert_eq!(c.running(), 1);
        assert_eq!(c.to_string(), "2 rejected (No such image: x), 1 running");
    }

    #[test]
    fn a_node_list_with_no_leader_field_parses() {
        let text = r#"[{"ID":"x","Status":{"State":"down"}},{"ID":"y","Status":{"State":"ready"},"ManagerStatus":{"Leader":true,"Reachability":"reachable"}}]"#;
        let ns: Vec<NodeState> = parse("n", text).unwrap();
        assert!(!ns[0].manager.as_ref().is_some_and(|m| m.leader));
        assert!(ns[1].manager.as_ref().is_some_and(|m| m.leader));
    }

    #[test]
    fn service_sizes_outside_one_to_the_maximum_are_refused() {
        assert!(check_replicas("s", 1).is_ok() && check_replicas("s", MAX_REPLICAS).is_ok());
        for n in [0, MAX_REPLICAS + 1] {
            let e = check_replicas("s", n).unwrap_err().to_string();
            assert!(e.contains("service s") && e.contains(&n.to_string()), "{e}");
        }
    }

    #[test]
    fn unparseable_answers_are_errors_not_panics() {
        assert!(matches!(parse::<Vec<Task>>("docker inspect", "not json"), Err(SwarmError::Parse { .. })));
    }
}
