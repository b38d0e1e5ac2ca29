//! virtio devices on the MMIO transport: the transport (`mmio`), the network device backed by
//! a tap (`net`) and the block device backed by a raw file (`blk`). Guest notifications arrive
//! on ioeventfds and each active device serves its queues on its own worker thread; interrupts
//! go back to the guest through irqfds, so the data path never exits to a vCPU thread.
//! A worker hands its queues back when it stops, so a snapshot can save them (`state`).

pub mod blk;
pub mod mmio;
pub mod net;
pub mod state;

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
    #[error("the worker thread of {0} panicked")]
    WorkerPanicked(&'static str),
    #[error("{0} failed to activate, so it cannot be saved: {1}")]
    FailedDevice(&'static str, String),
    #[error("the snapshot's {0} does not match the back end given for it: {1}")]
    Mismatch(&'static str, String),
    #[error("the snapshot's {0} state is invalid: {1}")]
    BadState(&'static str, String),
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

    /// Continue from a snapshot: the bits the driver had not acknowledged, raised again (an
    /// extra interrupt is harmless, a lost one would leave the driver waiting).
    pub fn resume(&self, bits: u32) {
        if bits != 0 {
            self.status.fetch_or(bits, Ordering::SeqCst);
            let _ = self.irq.write(1);
        }
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
    /// What a snapshot keeps of the device itself.
    fn state(&self) -> state::DeviceSnapshot;
    /// The driver is ready: start serving `queues`. `notify` fires when the driver kicks any
    /// queue; `stop` fires when the VM shuts down, and the worker then returns the queues.
    fn activate(&mut self, ctx: ActivateContext) -> Result<Worker, VirtioError>;
}

/// A device's worker thread; joined, it gives back its queues as they were when it stopped.
pub type Worker = std::thread::JoinHandle<Vec<Queue>>;

/// Start `name`'s worker thread running `serve`, which gets the notify and stop eventfds and
/// returns the queues when it stops. The thread narrows the seccomp filter it inherited from
/// the vCPU (or main) thread that activated the device when the VMM is jailed.
pub fn spawn_worker<W: Send + 'static>(
    name: &'static str,
    mut worker: W,
    notify: EventFd,
    stop: Arc<EventFd>,
    serve: fn(&mut W, &EventFd, &EventFd),
    queues: fn(W) -> Vec<Queue>,
) -> Result<Worker, VirtioError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if crate::jail::active() {
                if let Err(e) = crate::jail::install(crate::jail::ThreadKind::Device) {
                    eprintln!("cvbench-vmm: {name}: {e}");
                    return queues(worker);
                }
            }
            serve(&mut worker, &notify, &stop);
            queues(worker)
        })
        .map_err(|e| VirtioError::SpawnWorker(name, e))
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
