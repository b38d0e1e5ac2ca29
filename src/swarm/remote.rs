//! A swarm the user names (`cvbench bench --swarm-manager ENDPOINT`): the docker API address of
//! one of its managers, checked before use; its nodes as that manager lists them, for the
//! manifest. The run only creates and removes its own service there: it stops no engine on the
//! user's hosts, so node loss and leader loss are not measured on such a swarm.

use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::cluster::{self, Engine, Services, Task};
use super::{run_bounded, SwarmError};
use crate::record::{Availability, NamedSwarm, SwarmNodeInfo, SwarmRole};

/// One CLI call's bound.
const CALL: Duration = Duration::from_secs(30);

/// What is not measured on a swarm the user named, and why.
pub const NOT_MEASURED: &str = "node loss and leader loss are not measured on a swarm the user named: \
     they kill engines, and cvbench stops nothing on a user's hosts; the engines' memory is not measured there \
     (they run on other hosts); the rolling update restarts every task on the same image \
     (`docker service update --force`), since the run pushes no tag to the user's registry";

/// A docker API address: `unix:///absolute/path` or `tcp://host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

/// Why an endpoint or an image reference was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("{0:?}: a swarm manager is named unix:///absolute/path/docker.sock or tcp://host:port")]
    Scheme(String),
    #[error("{0:?}: the socket path must be absolute (unix:///run/docker.sock)")]
    RelativePath(String),
    #[error("{0:?}: the socket path must not contain `..` or NUL")]
    BadPath(String),
    #[error("{0:?}: tcp://host:port needs a port 1-65535")]
    Port(String),
    #[error("{0:?}: the host must be an IP address or a DNS name (letters, digits, `-`, `.`)")]
    Host(String),
    #[error("{0:?}: an image reference is 1-255 characters of letters, digits and `._/:@-`, not starting with `-`")]
    Image(String),
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Endpoint, EndpointError> {
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(EndpointError::RelativePath(s.into()));
            }
            if path.contains('\0') || path.split('/').any(|c| c == "..") || path.len() > 107 {
                return Err(EndpointError::BadPath(s.into()));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let Some(rest) = s.strip_prefix("tcp://") else { return Err(EndpointError::Scheme(s.into())) };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, p) = v6.split_once("]:").ok_or_else(|| EndpointError::Port(s.into()))?;
            h.parse::<std::net::Ipv6Addr>().map_err(|_| EndpointError::Host(s.into()))?;
            (h.to_string(), p)
        } else {
            let (h, p) = rest.rsplit_once(':').ok_or_else(|| EndpointError::Port(s.into()))?;
            (h.to_string(), p)
        };
        let port = port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| EndpointError::Port(s.into()))?;
        let dns_ok = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !(dns_ok || host.parse::<std::net::IpAddr>().is_ok()) {
            return Err(EndpointError::Host(s.into()));
        }
        Ok(Endpoint::Tcp { host, port })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

/// An image reference the user's nodes pull: checked so it cannot be read as a CLI option.
pub fn check_image(r: &str) -> Result<(), EndpointError> {
    let ok = (1..=255).contains(&r.len())
        && !r.starts_with('-')
        && r.chars().all(|c| c.is_ascii_alphanumeric() || "._/:@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(EndpointError::Image(r.into()))
    }
}

/// What `bench --swarm-manager` names: the manager and the image its nodes pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub endpoint: Endpoint,
    pub image: String,
}

/// A connected swarm the user named.
pub struct Remote {
    pub target: Target,
    host: String,
}

#[derive(Deserialize)]
struct SwarmInfo {
    #[serde(rename = "LocalNodeState", default)]
    state: String,
    #[serde(rename = "ControlAvailable", default)]
    control: bool,
}

/// `docker node inspect`, the fields the manifest keeps.
#[derive(Deserialize)]
struct NodeInspect {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Description")]
    description: Description,
    #[serde(rename = "Spec")]
    spec: NodeSpec,
    #[serde(rename = "Status")]
    status: cluster::NodeStatus,
    #[serde(rename = "ManagerStatus", default)]
    manager: Option<cluster::ManagerStatus>,
}

#[derive(Deserialize)]
struct Description {
    #[serde(rename = "Hostname", default)]
    hostname: String,
    #[serde(rename = "Engine", default)]
    engine: EngineDescription,
}

#[derive(Deserialize, Default)]
struct EngineDescription {
    #[serde(rename = "EngineVersion", default)]
    version: String,
}

#[derive(Deserialize)]
struct NodeSpec {
    #[serde(rename = "Role")]
    role: SwarmRole,
    #[serde(rename = "Availability")]
    availability: Availability,
}

fn parse<T: serde::de::DeserializeOwned>(command: &str, text: &str) -> Result<T, SwarmError> {
    serde_json::from_str(text).map_err(|e| SwarmError::Parse { command: command.into(), detail: e.to_string() })
}

impl Remote {
    /// Check that the endpoint answers and is a manager of an active swarm.
    pub fn connect(target: &Target) -> Result<Remote, SwarmError> {
        check_image(&target.image).map_err(|e| SwarmError::Config(e.to_string()))?;
        if let Endpoint::Unix(p) = &target.endpoint {
            if !p.exists() {
                return Err(SwarmError::EngineDown {
                    node: target.endpoint.to_string(),
                    detail: "no such socket".into(),
                });
            }
        }
        let r = Remote { target: target.clone(), host: target.endpoint.to_string() };
        let info = r
            .docker(&["info", "--format", "{{json .Swarm}}"], CALL)
            .map_err(|e| SwarmError::EngineDown { node: r.host.clone(), detail: e.to_string() })?;
        let info: SwarmInfo = parse("docker info", &info)?;
        if info.state != "active" || !info.control {
            return Err(SwarmError::NotManager {
                endpoint: r.host.clone(),
                state: if info.state == "active" { "a worker".into() } else { format!("swarm state {:?}", info.state) },
            });
        }
        Ok(r)
    }

    /// Every node, as this manager lists them.
    pub fn nodes(&self) -> Result<Vec<SwarmNodeInfo>, SwarmError> {
        let ids = self.docker(&["node", "ls", "-q"], CALL)?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["node", "inspect"];
        args.extend(&ids);
        let raw: Vec<NodeInspect> = parse("docker node inspect", &self.docker(&args, CALL)?)?;
        Ok(raw
            .into_iter()
            .map(|n| SwarmNodeInfo {
                id: n.id,
                hostname: n.description.hostname,
                role: n.spec.role,
                engine_version: n.description.engine.version,
                availability: n.spec.availability,
                state: n.status.state,
                leader: n.manager.is_some_and(|m| m.leader),
            })
            .collect())
    }

    /// What the manifest records.
    pub fn describe(&self) -> Result<NamedSwarm, SwarmError> {
        Ok(NamedSwarm { endpoint: self.host.clone(), image: self.target.image.clone(), nodes: self.nodes()? })
    }
}

impl Engine for Remote {
    fn docker(&self, args: &[&str], limit: Duration) -> Result<String, SwarmError> {
        let mut c = Command::new(super::node::docker_cli());
        c.arg("-H").arg(&self.host).args(args);
        run_bounded(&mut c, limit)
    }
}

impl Services for Remote {
    fn manager_engine(&self) -> Result<&dyn Engine, SwarmError> {
        Ok(self)
    }

    /// The task's log through the manager (`docker service logs TASK`).
    fn task_log(&self, t: &Task) -> Result<String, SwarmError> {
        self.docker(&["service", "logs", "--raw", &t.id], CALL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_and_tcp_endpoints_parse() {
        assert_eq!("unix:///run/docker.sock".parse(), Ok(Endpoint::Unix("/run/docker.sock".into())));
        assert_eq!("tcp://10.0.0.5:2375".parse(), Ok(Endpoint::Tcp { host: "10.0.0.5".into(), port: 2375 }));
        assert_eq!(
            "tcp://manager-1.example:2376".parse(),
            Ok(Endpoint::Tcp { host: "manager-1.example".into(), port: 2376 })
        );
        let v6: Endpoint = "tcp://[::1]:2375".parse().unwrap();
        assert_eq!(v6.to_string(), "tcp://[::1]:2375");
    }

    #[test]
    fn junk_endpoints_are_refused_with_the_reason() {
        type Want = fn(String) -> EndpointError;
        let cases: &[(&str, Want)] = &[
            ("", EndpointError::Scheme),
            ("10.0.0.5:2377", EndpointError::Scheme),
            ("ssh://user@host", EndpointError::Scheme),
            ("http://host:2375", EndpointError::Scheme),
            ("unix://run/docker.sock", EndpointError::RelativePath),
            ("unix:///run/../etc/docker.sock", EndpointError::BadPath),
            ("tcp://host", EndpointError::Port),
            ("tcp://host:0", EndpointError::Port),
            ("tcp://host:65536", EndpointError::Port),
            ("tcp://host:http", EndpointError::Port),
            ("tcp://:2375", EndpointError::Host),
            ("tcp://-H:2375", EndpointError::Host),
            ("tcp://a b:2375", EndpointError::Host),
            ("tcp://[nothex]:2375", EndpointError::Host),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<Endpoint>(), Err(want(s.to_string())), "{s}");
        }
        let e = "10.0.0.5:2377".parse::<Endpoint>().unwrap_err().to_string();
        assert!(e.contains("unix:///") && e.contains("tcp://host:port"), "{e}");
    }

    #[test]
    fn image_references_that_could_be_options_or_junk_are_refused() {
        assert!(check_image("registry.example:5000/cvbench-workload:v1").is_ok());
        assert!(check_image("img@sha256:0123abcd").is_ok());
        for bad in ["", "-H", "--privileged", "a b", "x;rm", &"a".repeat(256)] {
            assert!(check_image(bad).is_err(), "{bad}");
        }
    }
}
