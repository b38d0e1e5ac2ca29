//! virtio devices on the MMIO transport: the transport (`mmio`), the network device backed by
//! a tap (`net`) and the block device backed by a raw file (`blk`). Guest notifications arrive
//! on ioeventfds and each active device serves its queues on its own worker thread; interrupts
//! go back to the guest through irqfds, so the data path never exits to a vCPU thread.

pub mod blk;
pub mod mmio;
pub mod net;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use crate::vstate::GuestMemoryMmap;

/// `VIRTIO_F_VERSION_1`: the modern interface, required by virtio-mmio version 2.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Interrupt status bit: a used buffer was returned.
pub const INT_USED_RING: u32 = 1;

/// Errors from virtio devices.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    #[error("cannot create an eventfd for {0}")]
    EventFd(&'static str, #[source] std::io::Error),
    #[error("cannot start the worker thread of {0}")]
    SpawnWorker(&'static str, #[source] std::io::Error),
    #[error("{0} was activated with {1} queues, it needs {2}")]
    QueueCount(&'static str, usize, usize),
    #[error("cannot open the block device backing file {path}")]
    OpenDisk {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tap device {name}")]
    Tap {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// The interrupt a device raises: the status register the driver reads plus the irqfd.
pub struct Interrupt {
    status: AtomicU32,
    irq: EventFd,
}

impl Interrupt {
    pub fn new(irq: EventFd) -> Interrupt {
        Interrupt { status: AtomicU32::new(0), irq }
    }

    /// Tell the driver that used buffers are waiting.
    pub fn signal_used(&self) {
        self.status.fetch_or(INT_USED_RING, Ordering::SeqCst);
        // A failed eventfd write only loses this interrupt; the next completion raises another.
        let _ = self.irq.write(1);
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }
}

/// What the MMIO transport needs from a device model.
pub trait VirtioDevice: Send {
    /// Human-readable name for errors and logs.
    fn name(&self) -> &'static str;
    /// virtio device ID (1 = net, 2 = block).
    fn device_type(&self) -> u32;
    /// Feature bits the device offers.
    fn features(&self) -> u64;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Read the device-specific configuration space at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// The driver is ready: start serving `queues`. `notify` fires when the driver kicks any
    /// queue; `stop` fires when the VM shuts down.
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), VirtioError>;
}

/// Everything a device needs to start serving its queues.
pub struct ActivateContext {
    pub mem: GuestMemoryMmap,
    pub queues: Vec<Queue>,
    pub acked_features: u64,
    pub interrupt: Arc<Interrupt>,
    pub notify: EventFd,
    pub stop: Arc<EventFd>,
}

/// Read `data.len()` bytes of a little-endian config space `space` at `offset`, zero-filling
/// whatever lies past its end.
pub fn read_config_bytes(space: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= space.len() {
        return;
    }
    let n = data.len().min(space.len() - start);
    data[..n].copy_from_slice(&space[start..start + n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_past_the_end_are_zero_filled() {
        let mut d = [0xffu8; 4];
        read_config_bytes(&[1, 2, 3], 1, &mut d);
        assert_eq!(d, [2, 3, 0, 0]);
    }

    #[test]
    fn interrupt_ack_clears_only_the_given_bits() {
        let i = Interrupt::new(EventFd::new(0).unwrap());
        i.signal_used();
        assert_eq!(i.status(), INT_USED_RING);
        i.ack(2);
        assert_eq!(i.status(), INT_USED_RING);
        i.ack(INT_USED_RING);
        assert_eq!(i.status(), 0);
    }
}
