//! The guest kernel command line: console and power-off settings, the boot-timer hook, the
//! virtio-mmio devices, static IP autoconfiguration, the kvm_pvm workarounds, and the
//! arguments handed to `/init` (after `--`, behind [`INIT_SENTINEL`]).
//!
//! The kernel hands every parameter it does not know and that has no `=` to `/init` as an
//! argument, *before* the ones after `--` (Documentation/admin-guide/kernel-parameters.rst). A
//! stray bare word therefore shifts the workload's argv (`nomodule noop`): so the words after
//! `--` start with a sentinel that `/init` checks, and every bare word we emit is one the guest
//! kernel is known to consume ([`BARE_WORDS_THE_KERNEL_CONSUMES`]).

use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::devices::BOOT_TIMER_ADDR;

/// Console on COM1; `panic=-1`
/// reboots at once on a panic, so a dying guest ends the VM instead of hanging it;
/// `initramfs_async=0` unpacks the initramfs before the late initcalls, so the boot-timer
/// hook (the last initcall) really marks "about to run /init".
/// (No `nomodule`: the guest kernel has `CONFIG_MODULES=n`, so it does not know that parameter
/// and would hand it to `/init` as the first argument.)
/// The reboot method (see [`Reboot`]) follows.
pub const BASE: &str = "console=ttyS0 panic=-1 initramfs_async=0";

/// How the guest's final `reboot -f` (or a panic) ends the VM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reboot {
    /// `reboot=k`: reset through the i8042 controller, our VMM's power-off path.
    #[default]
    Keyboard,
    /// `reboot=t`: a triple fault, for VMMs without an i8042 (QEMU `-M microvm`), which end on
    /// the resulting shutdown when started with `-no-reboot`.
    TripleFault,
}

/// The first argument `/init` must receive; everything after it is the workload's argv.
/// `/init` refuses to run the workload (exit status [`INIT_BAD_ARGV_STATUS`]) when anything
/// else comes first.
pub const INIT_SENTINEL: &str = "cvbench-init";

/// The status `/init` reports when its argv did not start with [`INIT_SENTINEL`].
pub const INIT_BAD_ARGV_STATUS: i32 = 125;

/// Bare words (no `=`) that the guest kernel consumes itself, so they never reach `/init`:
/// `quiet` (core), `noxsave` (x86 early param). Anything else must be `name=value`.
pub const BARE_WORDS_THE_KERNEL_CONSUMES: &[&str] = &["quiet", "noxsave", "debug", "earlyprintk"];

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
    pub reboot: Reboot,
}

fn netmask(prefix_len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix_len.min(32))).unwrap_or(0))
}

/// Render the command line.
pub fn build(spec: &CmdlineSpec) -> String {
    let mut s = String::from(BASE);
    s.push_str(match spec.reboot {
        Reboot::Keyboard => " reboot=k",
        Reboot::TripleFault => " reboot=t",
    });
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
    s.push_str(" -- ");
    s.push_str(INIT_SENTINEL);
    for a in &spec.init_args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// The argv `/init` receives from a command line, by the kernel's rule: the parameters before
/// `--` that have no `=` and are not in `known` (bare words the kernel consumes), then every word
/// after `--`. (Parameters with `=` that the kernel does not know go to the environment.)
pub fn init_argv<'a>(cmdline: &'a str, known: &[&str]) -> Vec<&'a str> {
    let (kernel_part, init_part) = match cmdline.split_once(" -- ") {
        Some((k, i)) => (k, Some(i)),
        None => (cmdline.strip_suffix(" --").unwrap_or(cmdline), None),
    };
    let mut argv: Vec<&str> =
        kernel_part.split_whitespace().filter(|w| !w.contains('=') && !known.contains(w)).collect();
    argv.extend(init_part.into_iter().flat_map(str::split_whitespace));
    argv
}

/// The workload's argv as `/init` would see it: the words after [`INIT_SENTINEL`], or an error
/// naming the words the kernel put in front of it.
pub fn workload_argv<'a>(cmdline: &'a str, known: &[&str]) -> Result<Vec<&'a str>, Vec<&'a str>> {
    let argv = init_argv(cmdline, known);
    match argv.split_first() {
        Some((first, rest)) if *first == INIT_SENTINEL => Ok(rest.to_vec()),
        _ => Err(argv),
    }
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
        assert!(s.ends_with(" quiet -- cvbench-init cpu --ms 5"));
    }

    /// The bug that kept every workload from running in the Linux guest: `nomodule` (unknown to a
    /// CONFIG_MODULES=n kernel) reached /init ahead of the workload's argv.
    #[test]
    fn workload_receives_exactly_its_argv_with_every_option() {
        let s = build(&CmdlineSpec {
            extra: "quiet".into(),
            pvm_workarounds: true,
            virtio: vec![(0xd000_1000, 5)],
            net: Some(GuestNet {
                guest_ip: Ipv4Addr::new(10, 203, 0, 2),
                host_ip: Ipv4Addr::new(10, 203, 0, 1),
                prefix_len: 30,
            }),
            init_args: vec!["noop".into()],
            reboot: Reboot::TripleFault,
        });
        assert_eq!(workload_argv(&s, BARE_WORDS_THE_KERNEL_CONSUMES), Ok(vec!["noop"]));
    }

    #[test]
    fn a_stray_bare_word_is_caught_before_the_workload_sees_it() {
        let s = "console=ttyS0 nomodule quiet -- cvbench-init noop";
        assert_eq!(workload_argv(s, BARE_WORDS_THE_KERNEL_CONSUMES), Err(vec!["nomodule", "cvbench-init", "noop"]));
    }

    #[test]
    fn no_init_args_still_carries_the_sentinel() {
        let s = build(&CmdlineSpec::default());
        assert_eq!(workload_argv(&s, BARE_WORDS_THE_KERNEL_CONSUMES), Ok(vec![]));
    }

    #[test]
    fn the_guest_kernel_config_has_no_modules_so_nomodule_must_not_be_emitted() {
        // The fragment turns modules off; the base line must then not carry module parameters.
        let fragment = include_str!("../../guest/kernel.fragment");
        if fragment.lines().any(|l| l.trim() == "CONFIG_MODULES=n" || l.trim() == "# CONFIG_MODULES is not set") {
            assert!(!BASE.split_whitespace().any(|w| w == "nomodule"));
        }
        for w in BASE.split_whitespace().chain(PVM_WORKAROUNDS.split_whitespace()) {
            assert!(
                w.contains('=') || BARE_WORDS_THE_KERNEL_CONSUMES.contains(&w),
                "bare word {w:?} would reach /init"
            );
        }
    }
}
