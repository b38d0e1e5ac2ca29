//! Link set-up, one way for the whole project: route netlink over a synchronous socket
//! (`netlink-packet-route`) for veth pairs, addresses and bringing links up, and `/dev/net/tun`
//! for tap devices, which rtnetlink cannot create. The container runtime (veth to a peer
//! namespace), the bare VMM (veth from its private namespace), the Linux VMM (its tap) and the
//! QEMU backend (a persistent tap) all call this crate; none execs `ip`.
//!
//! A netlink socket talks to the network namespace it was created in, and a network namespace
//! is per thread: [`in_netns`] runs set-up on a short-lived thread inside a namespace, so the
//! caller's threads stay where they are.

pub mod rtnl;
pub mod tap;

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;

pub use rtnl::{Ns, Rtnl};

/// Run `f` on a scoped thread that first joins the network namespace open at `ns`.
pub fn in_netns<T: Send>(ns: &File, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("network namespace thread panicked")))
    })
}

/// Give link `ifname` (in `r`'s namespace) the address `addr/prefix` and bring it up; returns
/// its index.
pub fn address_and_raise(r: &mut Rtnl, ifname: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<u32> {
    let idx = r.index_of(ifname)?;
    r.add_addr(idx, addr, prefix)?;
    r.set_up(idx)?;
    Ok(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tap and a veth made in a network namespace of a test thread's own: both addressed and
    /// up there, neither visible in the host's namespace.
    #[test]
    fn tap_and_veth_in_a_private_namespace_are_addressed_and_up_and_the_tap_takes_a_mac() {
        if !cvbench_testkit::require_root("creating network namespaces and links") {
            return;
        }
        let made = std::thread::spawn(|| -> io::Result<(u32, u32)> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
            let _tap = tap::create("cvbnltap0", tap::Lifetime::WhileOpen)?;
            let mut r = Rtnl::open()?;
            let tap_idx = address_and_raise(&mut r, "cvbnltap0", Ipv4Addr::new(10, 205, 0, 1), 30)?;
            let mac = [0x02, 0xcc, 10, 205, 0, 1];
            r.set_mac(tap_idx, mac)?;
            assert_eq!(r.mac_of(tap_idx)?, mac, "the tap's address as set");
            r.add_veth("cvbnlv0", Ns::Here, "cvbnlv1", Ns::Here)?;
            address_and_raise(&mut r, "cvbnlv0", Ipv4Addr::new(10, 205, 0, 5), 30)?;
            address_and_raise(&mut r, "cvbnlv1", Ipv4Addr::new(10, 205, 0, 6), 30)?;
            let lo = r.index_of("lo")?;
            r.set_up(lo)?;
            // The addresses are assigned: binding to them works (it fails for a foreign one).
            std::net::TcpListener::bind((Ipv4Addr::new(10, 205, 0, 1), 0))?;
            let listener = std::net::TcpListener::bind((Ipv4Addr::new(10, 205, 0, 5), 0))?;
            let port = listener.local_addr()?.port();
            std::net::TcpStream::connect((Ipv4Addr::new(10, 205, 0, 5), port))?;
            Ok((tap_idx, r.index_of("cvbnlv1")?))
        })
        .join()
        .expect("namespace thread");
        let (tap_idx, veth_idx) = made.expect("links made in the private namespace");
        assert!(tap_idx > 0 && veth_idx > 0);
        for name in ["cvbnltap0", "cvbnlv0", "cvbnlv1"] {
            assert!(!std::path::Path::new("/sys/class/net").join(name).exists(), "{name} in the host namespace");
        }
    }
}
