//! The guest kernel command line: console and power-off settings, the boot-timer hook, the
//! virtio-mmio devices, static IP autoconfiguration, the kvm_pvm workarounds, and the
//! arguments handed to `/init` (after `--`).

use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::devices::BOOT_TIMER_ADDR;

/// Console on COM1; `reboot=k` resets through the i8042 (our power-off path); `panic=-1`
/// reboots at once on a panic, so a dying guest ends the VM instead of hanging it;
/// `initramfs_async=0` unpacks the initramfs before the late initcalls, so the boot-timer
/// hook (the last initcall) really marks "about to run /init".
pub const BASE: &str = "console=ttyS0 reboot=k panic=-1 nomodule initramfs_async=0";

/// Needed by a stock kernel under kvm_pvm (software-emulated guest kernel mode): XSAVE,
/// POPCNT and SMAP misbehave under the emulator and write-protecting rodata is very slow.
pub const PVM_WORKAROUNDS: &str = "noxsave clearcpuid=popcnt,smap rodata=off";

/// The guest's half of a VM's /30.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestNet {
    pub guest_ip: Ipv4Addr,
    pub host_ip: Ipv4Addr,
    pub prefix_len: u8,
}

/// Everything that goes into the command line.
#[derive(Clone, Debug, Default)]
pub struct CmdlineSpec {
    /// Extra text from the user (e.g. `quiet`, `loglevel=7`, `root=/dev/vda`).
    pub extra: String,
    pub pvm_workarounds: bool,
    /// (MMIO base, IRQ) of each virtio device, in order.
    pub virtio: Vec<(u64, u32)>,
    pub net: Option<GuestNet>,
    /// Arguments for `/init`.
    pub init_args: Vec<String>,
}

fn netmask(prefix_len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix_len.min(32))).unwrap_or(0))
}

/// Render the command line.
pub fn build(spec: &CmdlineSpec) -> String {
    let mut s = String::from(BASE);
    if spec.pvm_workarounds {
        s.push(' ');
        s.push_str(PVM_WORKAROUNDS);
    }
    let _ = write!(s, " cvbench_boot_timer={BOOT_TIMER_ADDR:#x}");
    for (addr, irq) in &spec.virtio {
        let _ = write!(s, " virtio_mmio.device=4K@{addr:#x}:{irq}");
    }
    if let Some(n) = spec.net {
        let _ = write!(s, " ip={}::{}:{}::eth0:off", n.guest_ip, n.host_ip, netmask(n.prefix_len));
    }
    if !spec.extra.trim().is_empty() {
        s.push(' ');
        s.push_str(spec.extra.trim());
    }
    if !spec.init_args.is_empty() {
        s.push_str(" --");
        for a in &spec.init_args {
            s.push(' ');
            s.push_str(a);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtio_devices_and_boot_timer_are_described() {
        let s = build(&CmdlineSpec { virtio: vec![(0xd000_1000, 5), (0xd000_2000, 6)], ..Default::default() });
        assert!(s.contains("virtio_mmio.device=4K@0xd0001000:5 virtio_mmio.device=4K@0xd0002000:6"));
        assert!(s.contains("cvbench_boot_timer=0xd0000000"));
        assert!(!s.contains("noxsave"));
    }

    #[test]
    fn static_ip_uses_the_peer_as_gateway_and_a_slash_30_mask() {
        let s = build(&CmdlineSpec {
            net: Some(GuestNet {
                guest_ip: Ipv4Addr::new(10, 203, 0, 2),
                host_ip: Ipv4Addr::new(10, 203, 0, 1),
                prefix_len: 30,
            }),
            ..Default::default()
        });
        assert!(s.contains(" ip=10.203.0.2::10.203.0.1:255.255.255.252::eth0:off"));
    }

    #[test]
    fn init_args_come_last_after_a_double_dash() {
        let s = build(&CmdlineSpec {
            extra: "quiet".into(),
            pvm_workarounds: true,
            init_args: vec!["cpu".into(), "--ms".into(), "5".into()],
            ..Default::default()
        });
        assert!(s.contains(PVM_WORKAROUNDS));
        assert!(s.ends_with(" quiet -- cpu --ms 5"));
    }
}
