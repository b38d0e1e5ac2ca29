//! Guest devices of the Linux micro-VM and the guest-physical map they live on: the 8250
//! serial console, the i8042 reset line, the boot timer and the virtio-mmio devices.
//!
//! Layout (documented here once, used by the builder, the kernel command line and the tests):
//! - port I/O: serial COM1 at `0x3f8` (IRQ 4), i8042 at `0x60`/`0x64` (reset only);
//! - MMIO, in a hole below 4 GiB starting at [`MMIO_BASE`]: the boot timer page at
//!   [`BOOT_TIMER_ADDR`], then one 4 KiB virtio-mmio window per device at
//!   [`VIRTIO_MMIO_BASE`] + n × [`VIRTIO_MMIO_SIZE`] on IRQ [`VIRTIO_FIRST_IRQ`] + n.

pub mod boot_timer;
pub mod i8042;
pub mod serial;
pub mod virtio;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use boot_timer::{BootTimer, BootTimes, BOOT_TIMER_MAGIC};
pub use i8042::I8042;
pub use serial::Serial;
pub use virtio::mmio::MmioTransport;

/// Start of the MMIO hole: guest RAM must end below it.
pub const MMIO_BASE: u64 = 0xd000_0000;
/// The boot-timer page (see [`boot_timer`]).
pub const BOOT_TIMER_ADDR: u64 = MMIO_BASE;
/// First virtio-mmio window.
pub const VIRTIO_MMIO_BASE: u64 = MMIO_BASE + 0x1000;
/// Size of one virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// IRQ of the first virtio-mmio device; device n uses this + n.
pub const VIRTIO_FIRST_IRQ: u32 = 5;
/// COM1 base port and IRQ.
pub const SERIAL_PORT: u16 = 0x3f8;
pub const SERIAL_IRQ: u32 = 4;

/// Set once the guest asked to reset or power off; the vCPU loops poll it.
#[derive(Clone, Debug, Default)]
pub struct PowerOff(Arc<AtomicBool>);

impl PowerOff {
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Every device the vCPUs reach by port I/O or MMIO, behind one lock held per access.
pub struct Devices {
    pub serial: Serial,
    pub i8042: I8042,
    pub boot_timer: BootTimer,
    pub virtio: Vec<MmioTransport>,
}

impl Devices {
    /// Port-I/O read. Unclaimed ports read as all ones, like an empty ISA bus.
    pub fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        if let Some(b) = data.first_mut() {
            if let Some(off) = port.checked_sub(SERIAL_PORT).filter(|o| *o < 8) {
                *b = self.serial.read(off as u8);
            } else if port == 0x60 || port == 0x64 {
                *b = self.i8042.read(port);
            }
        }
    }

    /// Port-I/O write; writes to unclaimed ports (POST code 0x80, CMOS, ...) are dropped.
    pub fn pio_write(&mut self, port: u16, data: &[u8]) {
        let Some(&b) = data.first() else { return };
        if let Some(off) = port.checked_sub(SERIAL_PORT).filter(|o| *o < 8) {
            self.serial.write(off as u8, b);
        } else if port == 0x60 || port == 0x64 {
            self.i8042.write(port, b);
        }
    }

    /// MMIO read; unclaimed addresses read as zero.
    pub fn mmio_read(&mut self, addr: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(off) = in_window(addr, BOOT_TIMER_ADDR, 0x1000) {
            self.boot_timer.read(off, data);
        } else if let Some((dev, off)) = self.virtio_at(addr) {
            dev.read(off, data);
        }
    }

    /// MMIO write; writes to unclaimed addresses are dropped.
    pub fn mmio_write(&mut self, addr: u64, data: &[u8]) {
        if let Some(off) = in_window(addr, BOOT_TIMER_ADDR, 0x1000) {
            self.boot_timer.write(off, data);
        } else if let Some((dev, off)) = self.virtio_at(addr) {
            dev.write(off, data);
        }
    }

    fn virtio_at(&mut self, addr: u64) -> Option<(&mut MmioTransport, u64)> {
        let rel = addr.checked_sub(VIRTIO_MMIO_BASE)?;
        let idx = usize::try_from(rel / VIRTIO_MMIO_SIZE).ok()?;
        let dev = self.virtio.get_mut(idx)?;
        Some((dev, rel % VIRTIO_MMIO_SIZE))
    }
}

fn in_window(addr: u64, base: u64, size: u64) -> Option<u64> {
    addr.checked_sub(base).filter(|off| *off < size)
}

/// The guest-physical window of virtio-mmio device `n`.
pub fn virtio_window(n: usize) -> u64 {
    VIRTIO_MMIO_BASE + n as u64 * VIRTIO_MMIO_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtio_windows_follow_the_boot_timer_page() {
        assert_eq!(virtio_window(0), 0xd000_1000);
        assert_eq!(virtio_window(2), 0xd000_3000);
        assert!(virtio_window(0) >= BOOT_TIMER_ADDR + 0x1000);
    }

    #[test]
    fn in_window_rejects_addresses_past_the_end() {
        assert_eq!(in_window(0x1fff, 0x1000, 0x1000), Some(0xfff));
        assert_eq!(in_window(0x2000, 0x1000, 0x1000), None);
        assert_eq!(in_window(0xfff, 0x1000, 0x1000), None);
    }
}
