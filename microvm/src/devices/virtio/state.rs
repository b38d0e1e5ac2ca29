//! What a snapshot keeps of a virtio-mmio device: the transport's registers, each queue's
//! rings and positions, and the device's own facts the guest driver already read (a disk's
//! size and read-only bit, a NIC's MAC). Back ends (the disk file, the tap) are not state:
//! the restore opens them again and they must match what the guest saw.
//!
//! A snapshot file is untrusted input: [`TransportSnapshot::check`] bounds every field before
//! a queue is built from it, and building goes through `virtio_queue`'s own checks.

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState, QueueT};

use crate::vstate::GuestMemoryMmap;

/// The device behind a transport, as the guest driver knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum DeviceSnapshot {
    /// virtio-blk: capacity in 512-byte sectors, and whether it was offered read-only.
    Block { sectors: u64, read_only: bool },
    /// virtio-net: the MAC address in its config space.
    Net { mac: [u8; 6] },
}

impl DeviceSnapshot {
    /// The device's name in errors ("virtio-blk", "virtio-net").
    pub fn name(&self) -> &'static str {
        match self {
            DeviceSnapshot::Block { .. } => "virtio-blk",
            DeviceSnapshot::Net { .. } => "virtio-net",
        }
    }
}

/// One virtqueue: what the driver programmed and how far both sides got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSnapshot {
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx: bool,
}

impl QueueSnapshot {
    /// The state of `q`.
    pub fn of(q: &Queue) -> QueueSnapshot {
        let s = q.state();
        QueueSnapshot {
            size: s.size,
            ready: s.ready,
            desc_table: s.desc_table,
            avail_ring: s.avail_ring,
            used_ring: s.used_ring,
            next_avail: s.next_avail,
            next_used: s.next_used,
            event_idx: s.event_idx_enabled,
        }
    }

    /// A queue of at most `max_size` entries continuing from this state; a ready queue must lie
    /// wholly inside `mem`.
    pub fn to_queue(&self, max_size: u16, mem: &GuestMemoryMmap) -> Result<Queue, String> {
        let q = Queue::try_from(QueueState {
            max_size,
            next_avail: self.next_avail,
            next_used: self.next_used,
            event_idx_enabled: self.event_idx,
            size: self.size,
            ready: self.ready,
            desc_table: self.desc_table,
            avail_ring: self.avail_ring,
            used_ring: self.used_ring,
        })
        .map_err(|e| format!("{e}"))?;
        if self.ready && !q.is_valid(mem) {
            return Err("its rings do not lie inside guest memory".into());
        }
        Ok(q)
    }

    /// Bounds that need no memory map: size, alignment, rings below `mem_size`.
    fn check(&self, max_size: u16, mem_size: u64) -> Result<(), String> {
        let size = self.size;
        if size == 0 || size > max_size || !size.is_power_of_two() {
            return Err(format!("size {size} (a power of two up to {max_size})"));
        }
        if !self.ready {
            return Ok(());
        }
        let n = u64::from(size);
        // (address, bytes, alignment) of the descriptor table, the available and used rings.
        let rings = [
            ("descriptor table", self.desc_table, 16 * n, 16),
            ("available ring", self.avail_ring, 6 + 2 * n, 2),
            ("used ring", self.used_ring, 6 + 8 * n, 4),
        ];
        for (what, at, len, align) in rings {
            if at % align != 0 {
                return Err(format!("{what} at {at:#x} is not {align}-byte aligned"));
            }
            if at.checked_add(len).is_none_or(|end| end > mem_size) {
                return Err(format!("{what} at {at:#x} ({len} bytes) ends past guest memory ({mem_size:#x})"));
            }
        }
        Ok(())
    }
}

/// A virtio-mmio window with its device, as saved at the snapshot point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSnapshot {
    pub device: DeviceSnapshot,
    /// The device status register (ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK).
    pub status: u32,
    pub acked_features: u64,
    pub queue_sel: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    /// Interrupt status bits the driver had not acknowledged yet.
    pub interrupt_status: u32,
    /// The driver brought the device up: its queues were being served.
    pub activated: bool,
    pub queues: Vec<QueueSnapshot>,
}

/// The status bits a driver may set (virtio 1.x, 2.1): ACKNOWLEDGE, DRIVER, DRIVER_OK,
/// FEATURES_OK, DEVICE_NEEDS_RESET and FAILED.
const STATUS_BITS: u32 = 0x01 | 0x02 | 0x04 | 0x08 | 0x40 | 0x80;
/// The status of a device whose driver finished set-up.
const STATUS_UP: u32 = 0x01 | 0x02 | 0x04 | 0x08;
/// Interrupt status bits: used buffer, configuration change.
const INTERRUPT_BITS: u32 = 0x3;

impl TransportSnapshot {
    /// Check this state against the device it is restored onto: its offered `features` and
    /// its queues' maximum sizes, in guest memory of `mem_size` bytes.
    pub fn check(&self, features: u64, queue_max_sizes: &[u16], mem_size: u64) -> Result<(), String> {
        let name = self.device.name();
        if self.queues.len() != queue_max_sizes.len() {
            return Err(format!("{name} has {} queues, the device has {}", self.queues.len(), queue_max_sizes.len()));
        }
        if self.status & !STATUS_BITS != 0 {
            return Err(format!("{name}: unknown status bits {:#x}", self.status));
        }
        if self.acked_features & !features != 0 {
            return Err(format!("{name}: features {:#x} were never offered", self.acked_features & !features));
        }
        if self.interrupt_status & !INTERRUPT_BITS != 0 {
            return Err(format!("{name}: unknown interrupt status bits {:#x}", self.interrupt_status));
        }
        if self.activated && self.status & STATUS_UP != STATUS_UP {
            return Err(format!("{name}: serving its queues with status {:#x} (not DRIVER_OK)", self.status));
        }
        for (i, (q, &max)) in self.queues.iter().zip(queue_max_sizes).enumerate() {
            q.check(max, mem_size).map_err(|what| format!("{name} queue {i}: {what}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::vstate::{create_guest_memory, MemRange};

    const MEM: u64 = 1 << 20;

    /// A transport state that passes: a block device, activated, one queue of 256 entries.
    pub(crate) fn good() -> TransportSnapshot {
        TransportSnapshot {
            device: DeviceSnapshot::Block { sectors: 2048, read_only: false },
            status: STATUS_UP,
            acked_features: 1 << 32,
            queue_sel: 0,
            device_features_sel: 1,
            driver_features_sel: 1,
            interrupt_status: 0,
            activated: true,
            queues: vec![QueueSnapshot {
                size: 256,
                ready: true,
                desc_table: 0x1_0000,
                avail_ring: 0x1_1000,
                used_ring: 0x1_2000,
                next_avail: 7,
                next_used: 7,
                event_idx: false,
            }],
        }
    }

    #[test]
    fn a_consistent_state_passes_and_builds_the_queue_it_describes() {
        let s = good();
        assert_eq!(s.check(1 << 32, &[256], MEM), Ok(()));
        let mem = create_guest_memory(&[MemRange { start: 0, size: MEM as usize }]).unwrap();
        let q = s.queues[0].to_queue(256, &mem).unwrap();
        assert_eq!(QueueSnapshot::of(&q), s.queues[0]);
        assert_eq!(q.desc_table(), 0x1_0000);
    }

    #[test]
    fn each_bad_field_is_refused_with_a_reason() {
        type Edit = Box<dyn Fn(&mut TransportSnapshot)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("queue count", Box::new(|s| s.queues.push(s.queues[0]))),
            ("no queue", Box::new(|s| s.queues.clear())),
            ("status bits", Box::new(|s| s.status |= 0x10)),
            ("features never offered", Box::new(|s| s.acked_features |= 1 << 40)),
            ("interrupt bits", Box::new(|s| s.interrupt_status = 0x8)),
            ("serving without DRIVER_OK", Box::new(|s| s.status = 0x3)),
            ("queue size zero", Box::new(|s| s.queues[0].size = 0)),
            ("queue size over the maximum", Box::new(|s| s.queues[0].size = 512)),
            ("queue size not a power of two", Box::new(|s| s.queues[0].size = 100)),
            ("descriptor table misaligned", Box::new(|s| s.queues[0].desc_table = 0x1_0008)),
            ("available ring misaligned", Box::new(|s| s.queues[0].avail_ring = 0x1_1001)),
            ("used ring misaligned", Box::new(|s| s.queues[0].used_ring = 0x1_2002)),
            ("descriptor table past memory", Box::new(|s| s.queues[0].desc_table = MEM - 16)),
            ("used ring wrapping", Box::new(|s| s.queues[0].used_ring = u64::MAX - 3)),
        ];
        for (what, edit) in cases {
            let mut s = good();
            edit(&mut s);
            assert!(s.check(1 << 32, &[256], MEM).is_err(), "{what} was accepted");
        }
    }

    #[test]
    fn a_queue_that_is_not_ready_may_hold_any_addresses() {
        let mut s = good();
        s.activated = false;
        s.status = 0x3;
        s.queues[0].ready = false;
        s.queues[0].desc_table = u64::MAX - 15;
        assert_eq!(s.check(1 << 32, &[256], MEM), Ok(()));
    }

    #[test]
    fn building_a_ready_queue_outside_memory_fails() {
        let mem = create_guest_memory(&[MemRange { start: 0, size: 0x1_0000 }]).unwrap();
        assert!(good().queues[0].to_queue(256, &mem).unwrap_err().contains("guest memory"));
    }
}
