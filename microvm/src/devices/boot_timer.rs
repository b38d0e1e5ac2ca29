//! The boot timer: an MMIO page the guest writes a magic byte to when it reaches a boot
//! milestone, so the VMM can time the guest's boot from its own start, with no clock shared
//! with the guest.
//!
//! Page at [`super::BOOT_TIMER_ADDR`] (0xd000_0000), magic [`BOOT_TIMER_MAGIC`] (0xcb):
//! - offset 0: the guest kernel is about to start `/init` (written by the cvbench kernel patch,
//!   `cvbench_boot_timer=0xd0000000` on the kernel command line);
//! - offset 1: `/init` is running in user space (written by the guest init via `/dev/mem`);
//! - offset 2: the workload's exit status (any byte), written by `/init` before it powers off.
//!
//! Firecracker uses one register at 0xc000_0000 with value 123; the extra registers let a
//! kernel-side and a user-side milestone be told apart on hosts where user space cannot run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::BusDevice;

/// The byte the guest writes to mark a milestone.
pub const BOOT_TIMER_MAGIC: u8 = 0xcb;
const KERNEL_INIT: u64 = 0;
const USER_INIT: u64 = 1;
const EXIT_STATUS: u64 = 2;

/// Milestones seen so far, as time since the VMM started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootTimes {
    /// The guest kernel is about to run `/init`.
    pub kernel_init: Option<Duration>,
    /// `/init` runs in user space.
    pub user_init: Option<Duration>,
    /// The workload's exit status as reported by `/init`.
    pub exit_status: Option<u8>,
}

/// The device; clones share the recorded times.
#[derive(Clone)]
pub struct BootTimer {
    start: Instant,
    times: Arc<Mutex<BootTimes>>,
}

impl BootTimer {
    /// A timer measuring from `start` (the VMM's own start).
    pub fn new(start: Instant) -> BootTimer {
        BootTimer { start, times: Arc::default() }
    }

    /// What the guest has reported so far.
    pub fn times(&self) -> BootTimes {
        *self.times.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    pub fn write(&self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        let now = self.start.elapsed();
        let mut t = self.times.lock().unwrap_or_else(|e| e.into_inner());
        match offset {
            KERNEL_INIT if value == BOOT_TIMER_MAGIC => {
                t.kernel_init.get_or_insert(now);
            }
            USER_INIT if value == BOOT_TIMER_MAGIC => {
                t.user_init.get_or_insert(now);
            }
            EXIT_STATUS => t.exit_status = Some(value),
            _ => {}
        }
    }
}

impl BusDevice for BootTimer {
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

    #[test]
    fn only_the_magic_byte_marks_a_milestone() {
        let t = BootTimer::new(Instant::now());
        t.write(0, &[0x01]);
        assert_eq!(t.times().kernel_init, None);
        t.write(0, &[BOOT_TIMER_MAGIC]);
        assert!(t.times().kernel_init.is_some());
        assert_eq!(t.times().user_init, None);
    }

    #[test]
    fn the_first_milestone_time_is_kept() {
        let t = BootTimer::new(Instant::now());
        t.write(1, &[BOOT_TIMER_MAGIC]);
        let first = t.times().user_init;
        std::thread::sleep(Duration::from_millis(2));
        t.write(1, &[BOOT_TIMER_MAGIC]);
        assert_eq!(t.times().user_init, first);
    }

    #[test]
    fn exit_status_register_keeps_the_last_value() {
        let t = BootTimer::new(Instant::now());
        t.write(2, &[3]);
        assert_eq!(t.times().exit_status, Some(3));
    }
}
