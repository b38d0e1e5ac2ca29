//! Route netlink, synchronous: one request at a time, each acknowledged or failed with the
//! kernel's errno.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Which namespace a new link end goes to.
pub enum Ns<'a> {
    /// The socket's own namespace.
    Here,
    /// The namespace of this process.
    Pid(u32),
    /// The namespace open at this file.
    File(&'a File),
}

/// A route netlink socket, bound to the network namespace it was opened in.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
}

impl Rtnl {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Rtnl> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { sock, seq: 0 })
    }

    /// A socket in the namespace open at `ns`, opened on a helper thread that joins it.
    pub fn open_in(ns: &File) -> io::Result<Rtnl> {
        super::in_netns(ns, Rtnl::open)
    }

    /// Send one request and collect the replies up to its acknowledgement.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        let mut replies = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full()?;
            let mut off = 0;
            while off < data.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    match reply.payload {
                        NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                        NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(replies),
                        NetlinkPayload::InnerMessage(r) => replies.push(r),
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }

    /// A veth pair: `name` in `ns`, `peer` in `peer_ns`.
    pub fn add_veth(&mut self, name: &str, ns: Ns, peer: &str, peer_ns: Ns) -> io::Result<()> {
        fn place(m: &mut LinkMessage, ns: Ns) {
            match ns {
                Ns::Here => {}
                Ns::Pid(p) => m.attributes.push(LinkAttribute::NetNsPid(p)),
                Ns::File(f) => m.attributes.push(LinkAttribute::NetNsFd(f.as_raw_fd())),
            }
        }
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.to_string()));
        place(&mut p, peer_ns);
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        place(&mut m, ns);
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL).map(drop)
    }

    /// A bridge named `name` in this socket's namespace.
    pub fn add_bridge(&mut self, name: &str) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL).map(drop)
    }

    /// Make interface `index` a port of the bridge `bridge` (both in this socket's namespace).
    pub fn set_bridge(&mut self, index: u32, bridge: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::Controller(bridge));
        self.request(RouteNetlinkMessage::SetLink(m), 0).map(drop)
    }

    /// The index of interface `name` in this socket's namespace.
    pub fn index_of(&mut self, name: &str) -> io::Result<u32> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        let replies = self.request(RouteNetlinkMessage::GetLink(m), 0)?;
        replies
            .into_iter()
            .find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface {name}")))
    }

    /// Add `addr/prefix` to interface `index`.
    pub fn add_addr(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(addr)));
        m.attributes.push(AddressAttribute::Address(IpAddr::V4(addr)));
        self.request(RouteNetlinkMessage::NewAddress(m), NLM_F_CREATE | NLM_F_EXCL).map(drop)
    }

    /// Set the hardware address of interface `index`.
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.request(RouteNetlinkMessage::SetLink(m), 0).map(drop)
    }

    /// The hardware address of interface `index` (an Ethernet-like link's six bytes).
    pub fn mac_of(&mut self, index: u32) -> io::Result<[u8; 6]> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        let replies = self.request(RouteNetlinkMessage::GetLink(m), 0)?;
        replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(l.attributes),
                _ => None,
            })
            .flatten()
            .find_map(|a| match a {
                LinkAttribute::Address(mac) => <[u8; 6]>::try_from(mac.as_slice()).ok(),
                _ => None,
            })
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("interface {index} has no 6-byte address")))
    }

    /// Bring interface `index` up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(m), 0).map(drop)
    }
}
