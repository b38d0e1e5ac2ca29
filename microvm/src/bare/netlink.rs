//! Just enough rtnetlink to wire the bare VMM's network namespace to the peer's without
//! exec'ing `ip`: create a veth pair with its far end in another namespace, put an IPv4
//! address on a link, bring a link up. Each request is acknowledged or fails with the
//! kernel's errno.

use std::ffi::CString;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const IFINFOMSG_LEN: usize = 16;

/// A netlink route socket, bound to the network namespace it was opened in.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A request under construction: header, fixed part, attributes (nesting by back-patching).
struct Msg(Vec<u8>);

impl Msg {
    fn new(kind: u16, flags: u16, fixed: &[u8]) -> Msg {
        let mut m = Msg(vec![0u8; 16]);
        m.0[4..6].copy_from_slice(&kind.to_ne_bytes());
        m.0[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        m.0.extend_from_slice(fixed);
        m
    }

    fn pad(&mut self) {
        self.0.resize(align4(self.0.len()), 0);
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        self.pad();
        self.0.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
    }

    /// Open a nested attribute; returns where to patch its length.
    fn begin(&mut self, kind: u16) -> usize {
        self.pad();
        let at = self.0.len();
        self.0.extend_from_slice(&[0, 0]);
        self.0.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn end(&mut self, at: usize) {
        let len = (self.0.len() - at) as u16;
        self.0[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        self.pad();
        let len = self.0.len() as u32;
        self.0[0..4].copy_from_slice(&len.to_ne_bytes());
        self.0[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.0
    }
}

fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; IFINFOMSG_LEN] {
    let mut b = [0u8; IFINFOMSG_LEN];
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

fn name_bytes(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

impl Netlink {
    /// A route socket in the calling thread's current network namespace.
    pub fn open() -> std::io::Result<Netlink> {
        // SAFETY: socket takes no memory; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        Ok(Netlink { fd: unsafe { OwnedFd::from_raw_fd(fd) }, seq: 0 })
    }

    fn request(&mut self, msg: Msg) -> std::io::Result<()> {
        self.seq += 1;
        let bytes = msg.finish(self.seq);
        // SAFETY: `bytes` is readable for its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let reply = &buf[..n as usize];
            if reply.len() < 20 {
                return Err(std::io::Error::other("short netlink reply"));
            }
            let kind = u16::from_ne_bytes([reply[4], reply[5]]);
            let seq = u32::from_ne_bytes([reply[8], reply[9], reply[10], reply[11]]);
            if kind == NLMSG_ERROR && seq == self.seq {
                let err = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
                return if err == 0 { Ok(()) } else { Err(std::io::Error::from_raw_os_error(-err)) };
            }
        }
    }

    /// Create veth `name` here with its peer `peer_name` in the namespace `peer_ns`.
    pub fn add_veth(&mut self, name: &str, peer_name: &str, peer_ns: RawFd) -> std::io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifinfomsg(0, 0, 0));
        m.attr(IFLA_IFNAME, &name_bytes(name));
        let info = m.begin(IFLA_LINKINFO);
        m.attr(IFLA_INFO_KIND, b"veth");
        let data = m.begin(IFLA_INFO_DATA);
        let peer = m.begin(VETH_INFO_PEER);
        m.0.extend_from_slice(&ifinfomsg(0, 0, 0));
        m.attr(IFLA_IFNAME, &name_bytes(peer_name));
        m.attr(IFLA_NET_NS_FD, &(peer_ns as u32).to_ne_bytes());
        m.end(peer);
        m.end(data);
        m.end(info);
        self.request(m)
    }

    /// Put `addr`/`prefix` on link `index`.
    pub fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> std::io::Result<()> {
        let mut fixed = [0u8; 8];
        fixed[0] = libc::AF_INET as u8;
        fixed[1] = prefix;
        fixed[4..8].copy_from_slice(&index.to_ne_bytes());
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &fixed);
        m.attr(IFA_LOCAL, &addr.octets());
        m.attr(IFA_ADDRESS, &addr.octets());
        self.request(m)
    }

    /// Bring link `index` up.
    pub fn set_up(&mut self, index: u32) -> std::io::Result<()> {
        let up = libc::IFF_UP as u32;
        self.request(Msg::new(RTM_NEWLINK, 0, &ifinfomsg(index as i32, up, up)))
    }
}

/// The index of link `name` in the calling thread's network namespace.
pub fn link_index(name: &str) -> std::io::Result<u32> {
    let c = CString::new(name).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is NUL-terminated.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(std::io::Error::last_os_error()),
        i => Ok(i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_carry_their_full_length_and_alignment() {
        let mut m = Msg::new(RTM_NEWLINK, 0, &ifinfomsg(0, 0, 0));
        let outer = m.begin(IFLA_LINKINFO);
        m.attr(IFLA_INFO_KIND, b"veth");
        m.end(outer);
        let bytes = m.finish(7);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize, bytes.len());
        assert_eq!(bytes.len() % 4, 0);
        let at = 16 + IFINFOMSG_LEN;
        assert_eq!(u16::from_ne_bytes([bytes[at], bytes[at + 1]]), 4 + 8);
        assert_eq!(u16::from_ne_bytes([bytes[at + 2], bytes[at + 3]]), IFLA_LINKINFO | NLA_F_NESTED);
        assert_eq!(&bytes[at + 8..at + 12], b"veth");
    }
}
