//! The two buses a vCPU exit lands on, port I/O and MMIO (after vmm-reference's
//! `register_pio`/`register_mmio` and Firecracker's `device_manager`): devices register an
//! address range once; an access is routed to the device owning the address with the offset
//! into its range. Unclaimed addresses read as the bus's fill byte and drop writes.

use std::sync::{Arc, Mutex};

/// A device reachable on a bus. `offset` is relative to the start of its registered range.
pub trait BusDevice: Send {
    fn bus_read(&mut self, offset: u64, data: &mut [u8]);
    fn bus_write(&mut self, offset: u64, data: &[u8]);
}

/// Errors from registering a device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("range {base:#x}+{len:#x} is empty or overlaps a registered device")]
    Overlap { base: u64, len: u64 },
}

struct Range {
    base: u64,
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// One address space (port I/O or guest-physical MMIO) and the devices on it.
pub struct Bus {
    ranges: Vec<Range>,
    fill: u8,
}

impl Bus {
    /// A bus whose unclaimed addresses read as `fill` (0xff for an empty ISA bus, 0 for MMIO).
    pub fn new(fill: u8) -> Bus {
        Bus { ranges: Vec::new(), fill }
    }

    /// Route `base..base+len` to `device`.
    pub fn register(&mut self, base: u64, len: u64, device: Arc<Mutex<dyn BusDevice>>) -> Result<(), BusError> {
        let end = base.checked_add(len).filter(|_| len > 0).ok_or(BusError::Overlap { base, len })?;
        if self.ranges.iter().any(|r| base < r.base + r.len && r.base < end) {
            return Err(BusError::Overlap { base, len });
        }
        self.ranges.push(Range { base, len, device });
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(&Range, u64)> {
        self.ranges.iter().find_map(|r| addr.checked_sub(r.base).filter(|off| *off < r.len).map(|off| (r, off)))
    }

    pub fn read(&self, addr: u64, data: &mut [u8]) {
        data.fill(self.fill);
        if let Some((r, off)) = self.find(addr) {
            r.device.lock().unwrap_or_else(|e| e.into_inner()).bus_read(off, data);
        }
    }

    pub fn write(&self, addr: u64, data: &[u8]) {
        if let Some((r, off)) = self.find(addr) {
            r.device.lock().unwrap_or_else(|e| e.into_inner()).bus_write(off, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Latch(Vec<(u64, Vec<u8>)>);

    impl BusDevice for Latch {
        fn bus_read(&mut self, offset: u64, data: &mut [u8]) {
            data[0] = offset as u8;
        }
        fn bus_write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn accesses_reach_the_device_at_their_offset() {
        let dev = Arc::new(Mutex::new(Latch::default()));
        let mut bus = Bus::new(0xff);
        bus.register(0x3f8, 8, dev.clone()).unwrap();
        let mut b = [0u8; 2];
        bus.read(0x3fa, &mut b);
        assert_eq!(b, [2, 0xff]);
        bus.write(0x3ff, &[7]);
        assert_eq!(dev.lock().unwrap().0, vec![(7, vec![7])]);
    }

    #[test]
    fn unclaimed_addresses_read_the_fill_byte_and_drop_writes() {
        let dev = Arc::new(Mutex::new(Latch::default()));
        let mut bus = Bus::new(0);
        bus.register(0x1000, 0x1000, dev.clone()).unwrap();
        let mut b = [9u8; 4];
        bus.read(0x2000, &mut b);
        assert_eq!(b, [0; 4]);
        bus.write(0xfff, &[1]);
        assert!(dev.lock().unwrap().0.is_empty());
    }

    #[test]
    fn overlapping_or_empty_ranges_are_refused() {
        let mut bus = Bus::new(0);
        bus.register(0x1000, 0x1000, Arc::new(Mutex::new(Latch::default()))).unwrap();
        let other = Arc::new(Mutex::new(Latch::default()));
        assert!(bus.register(0x1800, 0x1000, other.clone()).is_err());
        assert!(bus.register(0x0, 0x1001, other.clone()).is_err());
        assert!(bus.register(0x4000, 0, other.clone()).is_err());
        assert!(bus.register(0x2000, 0x10, other).is_ok());
    }
}
