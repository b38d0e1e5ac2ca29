//! The swarm's network: one run-created namespace per node and one more holding the bridge that
//! joins them, on a private /24 (10.231.K.0/24) that nothing routes to the root namespace.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use cvbench_netlink::{address_and_raise, Ns, Rtnl};
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

/// A link set-up step through route netlink; the kernel's error names what failed.
fn step<T>(what: &str, r: std::io::Result<T>) -> Result<T, SwarmError> {
    r.map_err(|e| SwarmError::Net { what: what.to_string(), detail: e.to_string() })
}

/// A route netlink socket in the named namespace at `path`, and the namespace's open file.
fn rtnl_in(path: &std::path::Path) -> Result<(std::fs::File, Rtnl), SwarmError> {
    let what = format!("open the network namespace {}", path.display());
    let ns = step(&what, std::fs::File::open(path))?;
    let r = step(&what, Rtnl::open_in(&ns))?;
    Ok((ns, r))
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
        let (bridge_ns, mut br) = rtnl_in(&f.bridge_ns_path())?;
        step("raise lo in the bridge namespace", br.index_of("lo").and_then(|i| br.set_up(i)))?;
        step("add the bridge", br.add_bridge(BRIDGE))?;
        let bridge = step("address the bridge", address_and_raise(&mut br, BRIDGE, f.gateway(), 24))?;
        for i in 0..nodes {
            let ns = node_ns_name(tag, i);
            create_netns(&ns).map_err(|e| SwarmError::Netns(ns.clone(), e))?;
            f.node_ns.push(ns.clone());
            let port = format!("n{i}");
            let (_, mut node) = rtnl_in(&f.node_ns_path(i))?;
            step(&format!("add the veth of {ns}"), node.add_veth(NODE_IF, Ns::Here, &port, Ns::File(&bridge_ns)))?;
            step(&format!("address {NODE_IF} in {ns}"), address_and_raise(&mut node, NODE_IF, f.node_addr(i), 24))?;
            step(&format!("raise lo in {ns}"), node.index_of("lo").and_then(|l| node.set_up(l)))?;
            let p = step(&format!("find {port}"), br.index_of(&port))?;
            step(&format!("put {port} on the bridge"), br.set_bridge(p, bridge).and_then(|()| br.set_up(p)))?;
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
