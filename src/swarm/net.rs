//! The swarm's network: one run-created namespace per node and one more holding the bridge that
//! joins them, on a private /24 (10.231.K.0/24) that nothing routes to the root namespace.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use cvbench_runtime::network::{create_netns, delete_netns, NETNS_DIR};

use super::SwarmError;

/// First three octets of the swarm subnets: swarm K of a process uses 10.231.K.0/24.
const SUBNET: [u8; 2] = [10, 231];
/// The bridge inside the bridge namespace.
const BRIDGE: &str = "br0";
/// A node's interface inside its namespace.
pub const NODE_IF: &str = "eth0";

/// The namespaces and links of one swarm. Dropping it deletes the namespaces (their links go
/// with them once no process is left inside: the swarm kills those first).
pub struct Fabric {
    subnet: u8,
    bridge_ns: String,
    node_ns: Vec<String>,
}

/// The network namespace names of swarm `tag` (`cvbench-<pid>-sw<K>`).
pub fn bridge_ns_name(tag: &str) -> String {
    format!("{tag}-br")
}

pub fn node_ns_name(tag: &str, i: usize) -> String {
    format!("{tag}-n{i}")
}

/// `ip` with `args`; its stderr becomes the error.
fn ip(args: &[&str]) -> Result<(), SwarmError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| SwarmError::Net { what: format!("ip {}", args.join(" ")), detail: e.to_string() })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(SwarmError::Net {
            what: format!("ip {}", args.join(" ")),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Whether any IPv4 route of the root namespace (`/proc/net/route` text) covers or lies inside
/// `net/prefix`: the swarm's subnet must not look like a host network, even though nothing links
/// the two.
pub fn route_overlaps(route_text: &str, net: Ipv4Addr, prefix: u8) -> Option<String> {
    let mask = |p: u8| if p == 0 { 0 } else { u32::MAX << (32 - p as u32) };
    for line in route_text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        // Little-endian hex, as the kernel prints them.
        let (Ok(dst), Ok(m)) = (u32::from_str_radix(f[1], 16), u32::from_str_radix(f[7], 16)) else { continue };
        let (dst, m) = (u32::from_be_bytes(dst.to_le_bytes()), u32::from_be_bytes(m.to_le_bytes()));
        if m == 0 {
            continue; // the default route covers everything; it is not a host subnet
        }
        let common = m & mask(prefix);
        if dst & common == u32::from(net) & common {
            return Some(format!("{}/{} on {}", Ipv4Addr::from(dst), m.count_ones(), f[0]));
        }
    }
    None
}

impl Fabric {
    /// Create the bridge namespace and `nodes` node namespaces of swarm `tag`, on subnet K.
    pub fn create(tag: &str, subnet: u8, nodes: usize) -> Result<Fabric, SwarmError> {
        let net = Ipv4Addr::new(SUBNET[0], SUBNET[1], subnet, 0);
        let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
        if let Some(r) = route_overlaps(&routes, net, 24) {
            return Err(SwarmError::SubnetInUse { subnet: format!("{net}/24"), route: r });
        }
        let mut f = Fabric { subnet, bridge_ns: bridge_ns_name(tag), node_ns: Vec::new() };
        create_netns(&f.bridge_ns).map_err(|e| SwarmError::Netns(f.bridge_ns.clone(), e))?;
        let gw = format!("{}/24", f.gateway());
        ip(&["-n", &f.bridge_ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &f.bridge_ns, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", &f.bridge_ns, "addr", "add", &gw, "dev", BRIDGE])?;
        ip(&["-n", &f.bridge_ns, "link", "set", BRIDGE, "up"])?;
        for i in 0..nodes {
            let ns = node_ns_name(tag, i);
            create_netns(&ns).map_err(|e| SwarmError::Netns(ns.clone(), e))?;
            f.node_ns.push(ns.clone());
            let port = format!("n{i}");
            let addr = format!("{}/24", f.node_addr(i));
            ip(&["link", "add", NODE_IF, "netns", &ns, "type", "veth", "peer", "name", &port, "netns", &f.bridge_ns])?;
            ip(&["-n", &ns, "addr", "add", &addr, "dev", NODE_IF])?;
            ip(&["-n", &ns, "link", "set", NODE_IF, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &f.bridge_ns, "link", "set", &port, "master", BRIDGE, "up"])?;
        }
        Ok(f)
    }

    /// The bridge's address (the registry listens there).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET[0], SUBNET[1], self.subnet, 1)
    }

    /// Node `i`'s address.
    pub fn node_addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET[0], SUBNET[1], self.subnet, 10 + i as u8)
    }

    pub fn bridge_ns_path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.bridge_ns)
    }

    pub fn node_ns_path(&self, i: usize) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.node_ns[i])
    }

    /// Every namespace path, bridge first.
    pub fn ns_paths(&self) -> Vec<PathBuf> {
        std::iter::once(self.bridge_ns_path()).chain((0..self.node_ns.len()).map(|i| self.node_ns_path(i))).collect()
    }

    /// Delete the namespaces; returns what failed.
    pub fn remove(&mut self) -> Vec<String> {
        let mut errs = Vec::new();
        for ns in self.node_ns.drain(..).chain(std::iter::once(std::mem::take(&mut self.bridge_ns))) {
            if ns.is_empty() {
                continue;
            }
            if let Err(e) = delete_netns(&ns) {
                errs.push(format!("netns {ns}: {e}"));
            }
        }
        errs
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for e in self.remove() {
            eprintln!("cvbench: swarm: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
br9\t0000E70A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";

    #[test]
    fn a_host_route_covering_the_subnet_is_reported_and_the_default_route_is_not() {
        assert_eq!(route_overlaps(ROUTES, Ipv4Addr::new(10, 231, 3, 0), 24).as_deref(), Some("10.231.0.0/16 on br9"));
        assert_eq!(route_overlaps(ROUTES, Ipv4Addr::new(10, 232, 3, 0), 24), None);
        assert_eq!(route_overlaps(ROUTES, Ipv4Addr::new(192, 0, 2, 0), 24).as_deref(), Some("192.0.2.0/24 on eth0"));
    }
}
