//! The virtio-mmio transport (version 2, "modern"): the register window the guest driver
//! programs to negotiate features and set up queues. On DRIVER_OK it hands the queues to the
//! device model, which serves them from its own thread. For a snapshot the transport stops
//! that thread and saves the registers and queues ([`MmioTransport::save`]); a restore builds
//! the transport from them and restarts the device where it stood ([`MmioTransport::restore`],
//! then [`MmioTransport::resume`] once the VMM is jailed).

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::state::{QueueSnapshot, TransportSnapshot};
use super::{ActivateContext, Interrupt, VirtioDevice, VirtioError, Worker};
use crate::vstate::GuestMemoryMmap;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x4356_4243; // "CBVC": cvbench
/// Offset of the QueueNotify register; the builder puts an ioeventfd on it.
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x50;
const CONFIG_OFFSET: u64 = 0x100;

const STATUS_ACKNOWLEDGE: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_FAILED: u32 = 0x80;

/// One virtio-mmio window with its device.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    notify: EventFd,
    stop: Arc<EventFd>,
    queues: Vec<Queue>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    status: u32,
    activated: bool,
    activate_error: Option<String>,
    /// The device's worker, while it serves the queues.
    worker: Option<Worker>,
    /// Restored from a snapshot of a device that was serving: [`MmioTransport::resume`]
    /// restarts it with these queues and raises these interrupt bits.
    resume_with: Option<(Vec<Queue>, u32)>,
}

impl MmioTransport {
    /// A transport for `device`; `notify` must be registered as the ioeventfd of
    /// window + [`QUEUE_NOTIFY_OFFSET`] and `irq` as the irqfd of the device's IRQ.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        irq: EventFd,
        notify: EventFd,
        stop: Arc<EventFd>,
    ) -> MmioTransport {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| Queue::new(max).unwrap_or_else(|_| unreachable_queue(max)))
            .collect();
        MmioTransport {
            device,
            mem,
            interrupt: Arc::new(Interrupt::new(irq)),
            notify,
            stop,
            queues,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            status: 0,
            activated: false,
            activate_error: None,
            worker: None,
            resume_with: None,
        }
    }

    /// Stop the device's worker (the VM's stop eventfd must have fired) and save the
    /// transport and its queues as they stand.
    pub fn save(&mut self) -> Result<TransportSnapshot, VirtioError> {
        let name = self.device.name();
        if let Some(e) = &self.activate_error {
            return Err(VirtioError::FailedDevice(name, e.clone()));
        }
        if let Some(worker) = self.worker.take() {
            self.queues = worker.join().map_err(|_| VirtioError::WorkerPanicked(name))?;
        }
        Ok(TransportSnapshot {
            device: self.device.state(),
            status: self.status,
            acked_features: self.acked_features,
            queue_sel: self.queue_sel,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            interrupt_status: self.interrupt.status(),
            activated: self.activated,
            queues: self.queues.iter().map(QueueSnapshot::of).collect(),
        })
    }

    /// A transport for `device` continuing from `state` (checked here against the device and
    /// `mem_size` bytes of guest memory); the other arguments are as for [`MmioTransport::new`].
    /// A device that was serving starts again only at [`MmioTransport::resume`].
    pub fn restore(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        mem_size: u64,
        fds: (EventFd, EventFd, Arc<EventFd>),
        state: &TransportSnapshot,
    ) -> Result<MmioTransport, VirtioError> {
        let name = device.name();
        check_restore(device.as_ref(), mem_size, state)?;
        let queues = state
            .queues
            .iter()
            .zip(device.queue_max_sizes())
            .map(|(q, &max)| q.to_queue(max, &mem))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|what| VirtioError::BadState(name, what))?;
        let (irq, notify, stop) = fds;
        let mut t = MmioTransport::new(device, mem, irq, notify, stop);
        t.status = state.status;
        t.acked_features = state.acked_features;
        t.queue_sel = state.queue_sel;
        t.device_features_sel = state.device_features_sel;
        t.driver_features_sel = state.driver_features_sel;
        if state.activated {
            t.resume_with = Some((queues, state.interrupt_status));
        } else {
            t.queues = queues;
        }
        Ok(t)
    }

    /// Restart a restored device that was serving: its worker takes the saved queues, looks at
    /// them once (buffers the driver queued before the snapshot), and pending interrupts are
    /// raised again. Call it after the jail, so the worker narrows the jail's filter.
    pub fn resume(&mut self) -> Result<(), VirtioError> {
        let Some((queues, interrupts)) = self.resume_with.take() else {
            return Ok(());
        };
        self.queues = queues;
        self.try_activate()?;
        self.activated = true;
        let _ = self.notify.write(1);
        self.interrupt.resume(interrupts);
        Ok(())
    }

    /// Why activation failed, if it did (the guest sees DEVICE_NEEDS_RESET-like failure).
    pub fn activate_error(&self) -> Option<&str> {
        self.activate_error.as_deref()
    }

    pub fn device_name(&self) -> &'static str {
        self.device.name()
    }

    /// Whether the driver brought the device up.
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_OFFSET {
            self.device.read_config(offset - CONFIG_OFFSET, data);
            return;
        }
        let value: u32 = match offset {
            0x00 => MAGIC,
            0x04 => VERSION,
            0x08 => self.device.device_type(),
            0x0c => VENDOR_ID,
            0x10 => {
                let f = self.device.features();
                match self.device_features_sel {
                    0 => f as u32,
                    1 => (f >> 32) as u32,
                    _ => 0,
                }
            }
            0x34 => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            0x44 => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            0x60 => self.interrupt.status(),
            0x70 => self.status,
            0xfc => 0, // config generation: the config space never changes
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
        data[n..].fill(0);
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_OFFSET {
            return; // net and blk config spaces are read-only for the driver
        }
        let mut bytes = [0u8; 4];
        let n = data.len().min(4);
        bytes[..n].copy_from_slice(&data[..n]);
        let v = u32::from_le_bytes(bytes);
        match offset {
            0x14 => self.device_features_sel = v,
            0x20 => match self.driver_features_sel {
                0 => self.acked_features = (self.acked_features & !0xffff_ffff) | u64::from(v),
                1 => self.acked_features = (self.acked_features & 0xffff_ffff) | (u64::from(v) << 32),
                _ => {}
            },
            0x24 => self.driver_features_sel = v,
            0x30 => self.queue_sel = v,
            0x38 => {
                if let Some(q) = self.selected_queue() {
                    q.set_size(v as u16);
                }
            }
            0x44 => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(v == 1);
                }
            }
            // Kicks normally land on the ioeventfd; forward any that exit to the vCPU.
            QUEUE_NOTIFY_OFFSET => {
                let _ = self.notify.write(1);
            }
            0x64 => self.interrupt.ack(v),
            0x70 => self.set_status(v),
            0x80 => self.with_queue(|q| q.set_desc_table_address(Some(v), None)),
            0x84 => self.with_queue(|q| q.set_desc_table_address(None, Some(v))),
            0x90 => self.with_queue(|q| q.set_avail_ring_address(Some(v), None)),
            0x94 => self.with_queue(|q| q.set_avail_ring_address(None, Some(v))),
            0xa0 => self.with_queue(|q| q.set_used_ring_address(Some(v), None)),
            0xa4 => self.with_queue(|q| q.set_used_ring_address(None, Some(v))),
            _ => {}
        }
    }

    fn with_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(q) = self.selected_queue() {
            f(q);
        }
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            // Reset. A device already serving its queues keeps running; Linux only resets
            // at probe time or when unbinding, which a micro-VM guest does not do.
            if !self.activated {
                self.status = 0;
                self.acked_features = 0;
                for q in &mut self.queues {
                    q.reset();
                }
            }
            return;
        }
        if v & STATUS_FEATURES_OK != 0 && self.acked_features & !self.device.features() != 0 {
            // The driver acked something we never offered: refuse FEATURES_OK.
            self.status = v & !STATUS_FEATURES_OK;
            return;
        }
        self.status = v;
        let ready = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;
        if v & ready == ready && !self.activated {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let result = self.try_activate();
        self.activated = true;
        if let Err(e) = result {
            self.activate_error = Some(format!("{e}"));
            self.status |= STATUS_FAILED;
        }
    }

    fn try_activate(&mut self) -> Result<(), VirtioError> {
        let notify = self.notify.try_clone().map_err(|e| VirtioError::EventFd(self.device.name(), e))?;
        let queues = std::mem::take(&mut self.queues);
        // Keep placeholders so the driver can still read QueueNumMax after activation.
        self.queues = queues
            .iter()
            .map(|q| Queue::new(q.max_size()).unwrap_or_else(|_| unreachable_queue(q.max_size())))
            .collect();
        for (dst, src) in self.queues.iter_mut().zip(&queues) {
            dst.set_size(src.size());
            dst.set_ready(src.ready());
        }
        let worker = self.device.activate(ActivateContext {
            mem: self.mem.clone(),
            queues,
            acked_features: self.acked_features,
            interrupt: self.interrupt.clone(),
            notify,
            stop: self.stop.clone(),
        })?;
        self.worker = Some(worker);
        Ok(())
    }
}

/// Whether `state` can continue on `device` in guest memory of `mem_size` bytes: the same device
/// as the guest saw (kind, a disk's size and read-only bit, a NIC's MAC) and a transport state
/// within the device's bounds. The restore calls it before any VM exists, and again as it builds
/// the transport.
pub fn check_restore(device: &dyn VirtioDevice, mem_size: u64, state: &TransportSnapshot) -> Result<(), VirtioError> {
    let name = device.name();
    let have = device.state();
    if have != state.device {
        return Err(VirtioError::Mismatch(name, format!("saved as {:?}, given {have:?}", state.device)));
    }
    state.check(device.features(), device.queue_max_sizes(), mem_size).map_err(|what| VirtioError::BadState(name, what))
}

/// `Queue::new` only fails for sizes that are zero, above 32768 or not a power of two; device
/// models here only ask for fixed powers of two.
fn unreachable_queue(max: u16) -> Queue {
    panic!("virtio queue size {max} is not a power of two in 1..=32768")
}

impl crate::devices::bus::BusDevice for MmioTransport {
    fn bus_read(&mut self, offset: u64, data: &mut [u8]) {
        self.read(offset, data);
    }

    fn bus_write(&mut self, offset: u64, data: &[u8]) {
        self.write(offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::state::DeviceSnapshot;
    use crate::vstate::{create_guest_memory, MemRange};
    use std::sync::Mutex;

    struct Dummy {
        activated: Arc<Mutex<Option<usize>>>,
    }

    impl VirtioDevice for Dummy {
        fn name(&self) -> &'static str {
            "dummy"
        }
        fn device_type(&self) -> u32 {
            42
        }
        fn features(&self) -> u64 {
            super::super::VIRTIO_F_VERSION_1 | 1
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 16]
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            super::super::read_config_bytes(&[7, 8], offset, data);
        }
        fn state(&self) -> DeviceSnapshot {
            DeviceSnapshot::Net { mac: [2, 0, 0, 0, 0, 1] }
        }
        fn activate(&mut self, ctx: ActivateContext) -> Result<Worker, VirtioError> {
            *self.activated.lock().unwrap() = Some(ctx.queues.len());
            let (queues, stop) = (ctx.queues, ctx.stop);
            Ok(std::thread::spawn(move || {
                // Serve nothing; stop when told, handing the queues back.
                let mut pfd =
                    libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(&*stop), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd for the duration of the call.
                unsafe { libc::poll(&mut pfd, 1, -1) };
                queues
            }))
        }
    }

    fn fds() -> (EventFd, EventFd, Arc<EventFd>) {
        (EventFd::new(0).unwrap(), EventFd::new(0).unwrap(), Arc::new(EventFd::new(0).unwrap()))
    }

    fn memory() -> GuestMemoryMmap {
        create_guest_memory(&[MemRange { start: 0, size: 0x10000 }]).unwrap()
    }

    fn transport() -> (MmioTransport, Arc<Mutex<Option<usize>>>) {
        let flag = Arc::new(Mutex::new(None));
        let (irq, notify, stop) = fds();
        let t = MmioTransport::new(Box::new(Dummy { activated: flag.clone() }), memory(), irq, notify, stop);
        (t, flag)
    }

    /// Program queue `sel` (16 entries) at `base` and mark it ready.
    fn set_up_queue(t: &mut MmioTransport, sel: u32, base: u32) {
        t.write(0x30, &sel.to_le_bytes());
        t.write(0x38, &16u32.to_le_bytes());
        t.write(0x80, &base.to_le_bytes());
        t.write(0x90, &(base + 0x100).to_le_bytes());
        t.write(0xa0, &(base + 0x200).to_le_bytes());
        t.write(0x44, &1u32.to_le_bytes());
    }

    fn bring_up(t: &mut MmioTransport) {
        t.write(0x70, &(STATUS_ACKNOWLEDGE | STATUS_DRIVER).to_le_bytes());
        t.write(0x24, &1u32.to_le_bytes());
        t.write(0x20, &1u32.to_le_bytes());
        t.write(0x70, &(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK).to_le_bytes());
        set_up_queue(t, 0, 0x1000);
        set_up_queue(t, 1, 0x2000);
        t.write(0x70, &(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK).to_le_bytes());
    }

    #[test]
    fn a_serving_device_is_saved_with_its_queues_and_restored_serving_them() {
        let (mut t, flag) = transport();
        bring_up(&mut t);
        assert_eq!(*flag.lock().unwrap(), Some(2));
        t.stop.write(1).unwrap();
        let saved = t.save().unwrap();
        assert!(saved.activated);
        assert_eq!(saved.queues.len(), 2);
        assert_eq!((saved.queues[1].desc_table, saved.queues[1].size, saved.queues[1].ready), (0x2000, 16, true));
        assert_eq!(saved.acked_features, 1 << 32);

        let flag2 = Arc::new(Mutex::new(None));
        let device = Box::new(Dummy { activated: flag2.clone() });
        let mut r = MmioTransport::restore(device, memory(), 0x10000, fds(), &saved).unwrap();
        assert_eq!(*flag2.lock().unwrap(), None, "started before resume");
        r.resume().unwrap();
        assert_eq!(*flag2.lock().unwrap(), Some(2));
        assert_eq!(read32(&mut r, 0x70), saved.status);
        r.stop.write(1).unwrap();
        assert_eq!(r.save().unwrap(), saved, "a restored device saves the same state again");
    }

    #[test]
    fn a_restore_refuses_another_device_or_a_bad_queue() {
        let (mut t, _) = transport();
        bring_up(&mut t);
        t.stop.write(1).unwrap();
        let saved = t.save().unwrap();
        let dummy = || Box::new(Dummy { activated: Arc::new(Mutex::new(None)) });

        let mut other = saved.clone();
        other.device = DeviceSnapshot::Net { mac: [2, 0, 0, 0, 0, 9] };
        let e = MmioTransport::restore(dummy(), memory(), 0x10000, fds(), &other).err().unwrap();
        assert!(matches!(e, VirtioError::Mismatch(..)), "{e}");

        let mut bad = saved.clone();
        bad.queues[0].used_ring = 0x1_0000;
        let e = MmioTransport::restore(dummy(), memory(), 0x10000, fds(), &bad).err().unwrap();
        assert!(e.to_string().contains("queue 0") && e.to_string().contains("used ring"), "{e}");
    }

    fn read32(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn identification_registers_describe_a_version_2_device() {
        let (mut t, _) = transport();
        assert_eq!(read32(&mut t, 0x00), MAGIC);
        assert_eq!(read32(&mut t, 0x04), 2);
        assert_eq!(read32(&mut t, 0x08), 42);
        t.write(0x14, &1u32.to_le_bytes());
        assert_eq!(read32(&mut t, 0x10), 1, "feature word 1 carries VERSION_1");
        assert_eq!(read32(&mut t, 0x100) & 0xffff, 0x0807);
    }

    #[test]
    fn driver_ok_after_feature_negotiation_activates_the_device() {
        let (mut t, flag) = transport();
        t.write(0x70, &(STATUS_ACKNOWLEDGE | STATUS_DRIVER).to_le_bytes());
        t.write(0x24, &1u32.to_le_bytes());
        t.write(0x20, &1u32.to_le_bytes());
        t.write(0x70, &(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK).to_le_bytes());
        assert_eq!(read32(&mut t, 0x70) & STATUS_FEATURES_OK, STATUS_FEATURES_OK);
        t.write(0x70, &(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK).to_le_bytes());
        assert_eq!(*flag.lock().unwrap(), Some(2));
        assert!(t.is_activated());
        assert_eq!(read32(&mut t, 0x34), 16, "QueueNumMax still readable");
    }

    #[test]
    fn features_never_offered_are_refused() {
        let (mut t, flag) = transport();
        t.write(0x24, &0u32.to_le_bytes());
        t.write(0x20, &0x8000_0000u32.to_le_bytes());
        t.write(0x70, &(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK).to_le_bytes());
        assert_eq!(read32(&mut t, 0x70) & STATUS_FEATURES_OK, 0);
        assert_eq!(*flag.lock().unwrap(), None);
    }
}
