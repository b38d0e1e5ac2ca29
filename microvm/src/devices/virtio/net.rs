//! virtio-net backed by a tap device. The tap is created inside a network namespace the
//! caller made for this VM (never the host's root namespace) and gets the host end of the
//! VM's /30 (through `cvbench-netlink`, the project's one link set-up path); the guest end is
//! configured by the guest. No offloads are negotiated, so frames
//! cross as plain Ethernet with a zeroed virtio-net header, copied by a worker thread.

use std::fs::File;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cvbench_netlink::{tap, Rtnl};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::state::DeviceSnapshot;
use super::{ActivateContext, Interrupt, VirtioDevice, VirtioError, Worker, VIRTIO_F_VERSION_1};
use crate::vstate::GuestMemoryMmap;

const VIRTIO_ID_NET: u32 = 1;
const VIRTIO_NET_F_MAC: u64 = 1 << 5;
/// `struct virtio_net_hdr_v1`: 12 bytes with VERSION_1 (num_buffers always present).
const NET_HDR_LEN: usize = 12;
const QUEUE_SIZES: &[u16] = &[256, 256];
const RX: usize = 0;
const TX: usize = 1;
const MAX_FRAME: usize = 65_550;

/// Where and how to create the tap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapConfig {
    /// A network namespace file (e.g. `/run/netns/NAME` or `/proc/PID/ns/net`).
    pub netns: PathBuf,
    /// Interface name (at most 15 bytes).
    pub name: String,
    /// Host-side address of the tap, with `prefix_len` (a /30 per VM).
    pub host_ip: Ipv4Addr,
    pub prefix_len: u8,
}

/// Create the tap inside `cfg.netns`, give it [`host_mac`] and the host address and bring it up. The tap is
/// not persistent: it disappears when the returned fd (and every copy) is closed.
pub fn open_tap(cfg: &TapConfig) -> Result<File, VirtioError> {
    let name = cfg.name.clone();
    let tap_err = |source| VirtioError::Tap { name: cfg.name.clone(), source };
    if cfg.name.is_empty() || cfg.name.len() > 15 {
        return Err(tap_err(std::io::Error::other("interface names are 1 to 15 bytes")));
    }
    let cfg2 = cfg.clone();
    // setns(CLONE_NEWNET) applies to the calling thread only: do it on a short-lived thread so
    // the VMM's other threads stay in their namespace. Fds opened there keep their namespace.
    let handle = std::thread::Builder::new()
        .name("tap-setup".into())
        .spawn(move || open_tap_in_netns(&cfg2))
        .map_err(tap_err)?;
    handle
        .join()
        .map_err(|_| tap_err(std::io::Error::other("tap set-up thread panicked")))?
        .map_err(|source| VirtioError::Tap { name, source })
}

fn open_tap_in_netns(cfg: &TapConfig) -> std::io::Result<File> {
    let ns = File::open(&cfg.netns).map_err(|e| annotate(e, "open", &cfg.netns))?;
    // SAFETY: setns on a valid namespace fd; affects only this thread, which exits right after.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(annotate(std::io::Error::last_os_error(), "setns", &cfg.netns));
    }
    let tun = tap::create(&cfg.name, tap::Lifetime::WhileOpen)?;
    let mut r = Rtnl::open()?;
    let index = r.index_of(&cfg.name)?;
    r.set_mac(index, host_mac(cfg.host_ip))?;
    cvbench_netlink::address_and_raise(&mut r, &cfg.name, cfg.host_ip, cfg.prefix_len)?;
    Ok(tun)
}

fn annotate(e: std::io::Error, what: &str, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// A virtio network device over an open tap.
pub struct Net {
    tap: Option<File>,
    config: [u8; 6],
}

impl Net {
    /// A device with MAC address `mac` over `tap` (from [`open_tap`]).
    pub fn new(tap: File, mac: [u8; 6]) -> Net {
        Net { tap: Some(tap), config: mac }
    }
}

impl VirtioDevice for Net {
    fn name(&self) -> &'static str {
        "virtio-net"
    }
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC
    }
    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }
    fn state(&self) -> DeviceSnapshot {
        DeviceSnapshot::Net { mac: self.config }
    }
    fn activate(&mut self, ctx: ActivateContext) -> Result<Worker, VirtioError> {
        if ctx.queues.len() != 2 {
            return Err(VirtioError::QueueCount(self.name(), ctx.queues.len(), 2));
        }
        let tap = self.tap.take().ok_or_else(|| VirtioError::Tap {
            name: "tap".into(),
            source: std::io::Error::other("device activated twice"),
        })?;
        let worker = NetWorker {
            tap,
            mem: ctx.mem,
            queues: ctx.queues,
            interrupt: ctx.interrupt,
            pending: None,
            buf: vec![0u8; MAX_FRAME],
        };
        // A frame read from the tap but not yet given to the guest is dropped when the worker
        // stops for a snapshot, as a wire may drop it.
        super::spawn_worker(self.name(), worker, ctx.notify, ctx.stop, NetWorker::run, |w| w.queues)
    }
}

struct NetWorker {
    tap: File,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    interrupt: Arc<Interrupt>,
    /// A frame read from the tap that found no free guest buffer yet.
    pending: Option<usize>,
    buf: Vec<u8>,
}

const EV_NOTIFY: u64 = 0;
const EV_TAP: u64 = 1;
const EV_STOP: u64 = 2;

impl NetWorker {
    fn run(&mut self, notify: &EventFd, stop: &EventFd) {
        let Ok(epoll) = Epoll::new() else { return };
        let add = |fd, set, data| epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(set, data));
        if add(notify.as_raw_fd(), EventSet::IN, EV_NOTIFY).is_err()
            || add(self.tap.as_raw_fd(), EventSet::IN | EventSet::EDGE_TRIGGERED, EV_TAP).is_err()
            || add(stop.as_raw_fd(), EventSet::IN, EV_STOP).is_err()
        {
            return;
        }
        let mut events = [EpollEvent::default(); 8];
        loop {
            let Ok(n) = epoll.wait(-1, &mut events) else {
                continue;
            };
            for ev in &events[..n] {
                match ev.data() {
                    EV_STOP => return,
                    EV_NOTIFY => {
                        let _ = notify.read();
                        self.process_tx();
                        self.process_rx();
                    }
                    _ => self.process_rx(),
                }
            }
        }
    }

    /// Send every frame the guest queued for transmission.
    fn process_tx(&mut self) {
        let mut used_any = false;
        while let Some(chain) = self.queues[TX].pop_descriptor_chain(&self.mem) {
            let head = chain.head_index();
            if let Ok(mut reader) = virtio_queue::Reader::<()>::new(&self.mem, chain) {
                let total = reader.available_bytes();
                let mut frame = vec![0u8; total];
                if reader.read_exact(&mut frame).is_ok() && total > NET_HDR_LEN {
                    // A full tap queue drops the frame, as a congested wire would.
                    let _ = self.tap.write(&frame[NET_HDR_LEN..]);
                }
            }
            if self.queues[TX].add_used(&self.mem, head, 0).is_err() {
                break;
            }
            used_any = true;
        }
        if used_any {
            self.interrupt.signal_used();
        }
    }

    /// Move frames from the tap into guest receive buffers until either runs out.
    fn process_rx(&mut self) {
        let mut used_any = false;
        loop {
            let len = match self.pending.take() {
                Some(len) => len,
                None => match self.tap.read(&mut self.buf[NET_HDR_LEN..]) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(_) => break, // EAGAIN: drained (edge-triggered)
                },
            };
            let Some(chain) = self.queues[RX].pop_descriptor_chain(&self.mem) else {
                self.pending = Some(len);
                break;
            };
            let head = chain.head_index();
            // virtio_net_hdr_v1 with no offloads: all zero but num_buffers = 1.
            self.buf[..NET_HDR_LEN].fill(0);
            self.buf[10..12].copy_from_slice(&1u16.to_le_bytes());
            let frame = &self.buf[..NET_HDR_LEN + len];
            let written = match virtio_queue::Writer::<()>::new(&self.mem, chain) {
                Ok(mut w) if w.available_bytes() >= frame.len() => w.write_all(frame).map_or(0, |()| frame.len()),
                _ => 0, // buffer too small: the frame is dropped
            };
            if self.queues[RX].add_used(&self.mem, head, written as u32).is_err() {
                break;
            }
            used_any = true;
        }
        if used_any {
            self.interrupt.signal_used();
        }
    }
}

/// A locally administered MAC derived from `seed` (e.g. the VMM's pid).
pub fn mac_from_seed(seed: u32) -> [u8; 6] {
    let b = seed.to_be_bytes();
    [0x02, 0xcb, b[0], b[1], b[2], b[3]]
}

/// The tap's own hardware address, a function of its IPv4 address alone: a guest restored from a
/// snapshot onto a new tap (same addresses) finds the host at the MAC its neighbour table
/// remembers, instead of sending to a random one the new tap drops until the entry goes stale.
pub fn host_mac(host_ip: Ipv4Addr) -> [u8; 6] {
    let o = host_ip.octets();
    [0x02, 0xcc, o[0], o[1], o[2], o[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_mac_is_the_same_for_the_same_address_and_never_the_guests() {
        let a = host_mac(Ipv4Addr::new(10, 203, 0, 1));
        assert_eq!(a, host_mac(Ipv4Addr::new(10, 203, 0, 1)));
        assert_ne!(a, host_mac(Ipv4Addr::new(10, 203, 0, 5)));
        assert_eq!(a[0] & 0x03, 0x02, "locally administered unicast");
        assert_ne!(a[..2], mac_from_seed(0x0acb_0001)[..2], "the guest's prefix differs");
    }

    #[test]
    fn mac_from_seed_is_locally_administered_unicast() {
        let mac = mac_from_seed(0x1234_5678);
        assert_eq!(mac[0] & 0x03, 0x02);
        assert_eq!(&mac[2..], &[0x12, 0x34, 0x56, 0x78]);
    }

    #[test]
    fn open_tap_rejects_an_overlong_name() {
        let cfg = TapConfig {
            netns: PathBuf::from("/proc/self/ns/net"),
            name: "a-name-longer-than-15".into(),
            host_ip: Ipv4Addr::new(10, 0, 0, 1),
            prefix_len: 30,
        };
        assert!(matches!(open_tap(&cfg), Err(VirtioError::Tap { .. })));
    }
}
