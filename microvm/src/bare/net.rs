//! The bare guest's network: a private network namespace for the VMM holding one veth whose
//! other end sits in the run's peer namespace (one /30, the server there), and the policy
//! that lets the guest make TCP connections to that one server and nothing else. The wiring is
//! done in-process over rtnetlink (the `cvbench-netlink` crate), not by running `ip`. A refused
//! call never reaches the host: the address is checked before `connect(2)` is made.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;

use serde::{Deserialize, Serialize};

use cvbench_netlink::{Ns, Rtnl};

/// Where the guest may connect, and how the VMM's namespace is wired to the peer's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// A process in the peer namespace (the server); its namespace receives the veth's
    /// other end.
    pub peer_pid: i32,
    /// The one address the guest may connect to: the server, on the peer end of the /30.
    pub peer: SocketAddrV4,
    /// The VMM's end of the /30.
    pub local_ip: Ipv4Addr,
}

/// Errors from building the VMM's network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("unshare(CLONE_NEWNET) failed")]
    Unshare(#[source] std::io::Error),
    #[error("cannot open the network namespace {path}")]
    OpenNetns {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{step} failed")]
    Netlink {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("setns into the {0} network namespace failed")]
    Setns(&'static str, #[source] std::io::Error),
    #[error("peer {peer} and local {local} are not the two hosts of one /30")]
    NotOneSlash30 { peer: Ipv4Addr, local: Ipv4Addr },
}

/// Move the (single-threaded) VMM into a fresh network namespace and wire it to the peer's.
/// Both veth ends vanish with the VMM's namespace, so an exit, a crash or a kill leaves no
/// link behind.
pub fn enter_private_netns(cfg: &NetConfig) -> Result<(), NetError> {
    let (peer, local) = (*cfg.peer.ip(), cfg.local_ip);
    let net = |a: Ipv4Addr| u32::from(a) & !3;
    let host = |a: Ipv4Addr| u32::from(a) & 3;
    if net(peer) != net(local) || peer == local || [0, 3].contains(&host(peer)) || [0, 3].contains(&host(local)) {
        return Err(NetError::NotOneSlash30 { peer, local });
    }
    let open_ns = |path: String| File::open(&path).map_err(|source| NetError::OpenNetns { path, source });
    let peer_ns = open_ns(format!("/proc/{}/ns/net", cfg.peer_pid))?;
    // SAFETY: unshare only changes this thread's namespace; the bare VMM has no other thread
    // yet, so the whole process moves.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(NetError::Unshare(std::io::Error::last_os_error()));
    }
    let own_ns = open_ns("/proc/thread-self/ns/net".into())?;
    let pid = std::process::id();
    let (mine, theirs) = (format!("cvbb{pid}"), format!("cvbp{pid}"));
    let nl_err = |step| move |source| NetError::Netlink { step, source };
    let mut nl = Rtnl::open().map_err(nl_err("opening a netlink socket"))?;
    nl.add_veth(&mine, Ns::Here, &theirs, Ns::File(&peer_ns)).map_err(nl_err("creating the veth pair"))?;
    cvbench_netlink::address_and_raise(&mut nl, &mine, local, 30)
        .map_err(nl_err("addressing the VMM's veth end and bringing it up"))?;
    // The peer's end is configured from inside its namespace (a netlink socket talks to the
    // namespace it was opened in); come back even if that fails. No helper thread: the bare
    // VMM stays one thread until its vCPU runs.
    let enter = |ns: &File, which| {
        // SAFETY: setns on an open namespace descriptor; this thread is the whole process.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(NetError::Setns(which, std::io::Error::last_os_error()));
        }
        Ok(())
    };
    enter(&peer_ns, "peer's")?;
    let peer_side = (|| {
        let mut nl = Rtnl::open().map_err(nl_err("opening a netlink socket in the peer namespace"))?;
        cvbench_netlink::address_and_raise(&mut nl, &theirs, peer, 30)
            .map_err(nl_err("addressing the peer's veth end and bringing it up"))
            .map(drop)
    })();
    enter(&own_ns, "VMM's own")?;
    peer_side
}

/// A socket(2) request the policy allows: IPv4/IPv6 TCP, optionally close-on-exec.
pub fn check_socket(domain: u64, type_: u64, protocol: u64) -> Result<(), String> {
    let kind = type_ & 0xf;
    let flags = type_ & !0xf;
    if domain != libc::AF_INET as u64 && domain != libc::AF_INET6 as u64 {
        return Err(format!("socket domain {domain} (only AF_INET/AF_INET6 TCP is served)"));
    }
    if kind != libc::SOCK_STREAM as u64 || flags & !(libc::SOCK_CLOEXEC as u64) != 0 {
        return Err(format!("socket type {type_:#x} (only SOCK_STREAM, optionally SOCK_CLOEXEC)"));
    }
    if protocol != 0 && protocol != libc::IPPROTO_TCP as u64 {
        return Err(format!("socket protocol {protocol}"));
    }
    Ok(())
}

/// The address of a guest `sockaddr` if it is the allowed peer, else why not.
pub fn check_connect(sockaddr: &[u8], allowed: SocketAddrV4) -> Result<SocketAddrV4, String> {
    if sockaddr.len() < 16 {
        return Err(format!("connect with a {}-byte address", sockaddr.len()));
    }
    let family = u16::from_ne_bytes([sockaddr[0], sockaddr[1]]);
    if family != libc::AF_INET as u16 {
        return Err(format!("connect to address family {family} (only the run's peer over IPv4)"));
    }
    let port = u16::from_be_bytes([sockaddr[2], sockaddr[3]]);
    let ip = Ipv4Addr::new(sockaddr[4], sockaddr[5], sockaddr[6], sockaddr[7]);
    let addr = SocketAddrV4::new(ip, port);
    if addr != allowed {
        return Err(format!("connect to {addr} (only the run's peer {allowed} is reachable)"));
    }
    Ok(addr)
}

/// Socket options the workload sets: (level, option) pairs with an int value.
pub fn check_sockopt(level: u64, opt: u64, len: u64) -> Result<(), String> {
    let ok = matches!(
        (level as i32, opt as i32),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY)
            | (libc::SOL_SOCKET, libc::SO_REUSEADDR)
            | (libc::SOL_SOCKET, libc::SO_KEEPALIVE)
    );
    if !ok || len != 4 {
        return Err(format!("setsockopt level {level} option {opt} length {len}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockaddr(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut b = vec![0u8; 16];
        b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&port.to_be_bytes());
        b[4..8].copy_from_slice(&ip);
        b
    }

    const PEER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 204, 0, 1), 5201);

    #[test]
    fn connect_is_allowed_only_to_the_peer() {
        assert_eq!(check_connect(&sockaddr([10, 204, 0, 1], 5201), PEER), Ok(PEER));
        assert!(check_connect(&sockaddr([127, 0, 0, 1], 5201), PEER).is_err());
        assert!(check_connect(&sockaddr([10, 204, 0, 1], 22), PEER).is_err());
        let mut v6 = sockaddr([10, 204, 0, 1], 5201);
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        assert!(check_connect(&v6, PEER).is_err());
        assert!(check_connect(&[2, 0], PEER).is_err());
    }

    #[test]
    fn only_tcp_sockets_are_allowed() {
        assert!(check_socket(libc::AF_INET as u64, (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as u64, 0).is_ok());
        assert!(check_socket(libc::AF_PACKET as u64, libc::SOCK_RAW as u64, 0).is_err());
        assert!(check_socket(libc::AF_INET as u64, libc::SOCK_DGRAM as u64, 0).is_err());
        assert!(check_socket(libc::AF_NETLINK as u64, libc::SOCK_STREAM as u64, 0).is_err());
        assert!(check_socket(libc::AF_INET as u64, (libc::SOCK_STREAM | libc::SOCK_NONBLOCK) as u64, 0).is_err());
    }

    #[test]
    fn only_the_workloads_socket_options_are_allowed() {
        assert!(check_sockopt(libc::IPPROTO_TCP as u64, libc::TCP_NODELAY as u64, 4).is_ok());
        assert!(check_sockopt(libc::SOL_SOCKET as u64, libc::SO_BINDTODEVICE as u64, 4).is_err());
        assert!(check_sockopt(libc::IPPROTO_TCP as u64, libc::TCP_NODELAY as u64, 8).is_err());
    }

    #[test]
    fn addresses_must_be_the_two_hosts_of_one_slash_30() {
        let cfg = |peer: [u8; 4], local: [u8; 4]| NetConfig {
            peer_pid: 1,
            peer: SocketAddrV4::new(peer.into(), 1),
            local_ip: local.into(),
        };
        assert!(matches!(enter_private_netns(&cfg([10, 0, 0, 1], [10, 0, 0, 5])), Err(NetError::NotOneSlash30 { .. })));
        assert!(matches!(enter_private_netns(&cfg([10, 0, 0, 0], [10, 0, 0, 1])), Err(NetError::NotOneSlash30 { .. })));
    }
}
