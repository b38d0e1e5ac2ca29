//! Guest devices of the Linux micro-VM and the guest-physical map they live on: the 8250
//! serial console, the i8042 reset line, the boot timer and the virtio-mmio devices, each
//! registered on the port-I/O or MMIO [`Bus`].
//!
//! Layout (documented here once, used by the builder, the kernel command line and the tests):
//! - port I/O: serial COM1 at `0x3f8` (IRQ 4), i8042 at `0x60`/`0x64` (reset only);
//! - MMIO, in a hole below 4 GiB starting at [`MMIO_BASE`]: the boot timer page at
//!   [`BOOT_TIMER_ADDR`], then one 4 KiB virtio-mmio window per device at
//!   [`VIRTIO_MMIO_BASE`] + n × [`VIRTIO_MMIO_SIZE`] on IRQ [`VIRTIO_FIRST_IRQ`] + n.

pub mod boot_timer;
pub mod bus;
pub mod i8042;
pub mod serial;
pub mod virtio;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use boot_timer::{BootTimer, BootTimes, BOOT_TIMER_MAGIC};
pub use bus::{Bus, BusDevice, BusError};
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
/// The i8042's ports: data at 0x60, command/status at 0x64 (one range, 0x61-0x63 ignored).
pub const I8042_PORT: u16 = 0x60;
pub const I8042_PORTS: u64 = 5;
/// Size of the boot-timer page.
pub const BOOT_TIMER_SIZE: u64 = 0x1000;
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

/// Every device the vCPUs reach, on its bus.
pub struct Devices {
    pub pio: Bus,
    pub mmio: Bus,
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
}
