//! The guest kernel command line: console and power-off settings, the boot-timer hook, the
//! virtio-mmio devices, static IP autoconfiguration, the kvm_pvm workarounds, and the
//! workload's argv for `/init`.
//!
//! How the workload's argv reaches `/init`: as the value of [`ARGV_PARAM`], a `name=value`
//! parameter the kernel does not know and therefore puts in `/init`'s **environment**
//! (Documentation/admin-guide/kernel-parameters.rst), its words joined by [`ARGV_SEPARATOR`].
//! Not after `--`: the kernel also hands every unknown parameter *without* `=` to `/init` as a
//! positional argument, ahead of the words after `--` (a stray `nomodule` turned every
//! workload's argv into `nomodule noop`), and a VMM that appends parameters to the line (QEMU's
//! microvm adds `virtio_mmio.device=…` at the end) would land them behind `--` too. So `/init`
//! (`microvm/guest/init.sh`) refuses to run when it gets any positional argument at all, and
//! every bare word we emit is one the kernel consumes ([`BARE_WORDS_THE_KERNEL_CONSUMES`]).

use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::devices::BOOT_TIMER_ADDR;

/// Console on COM1; `panic=-1` reboots at once on a panic, so a dying guest ends the VM instead
/// of hanging it; `initramfs_async=0` unpacks the initramfs before the late initcalls, so the
/// boot-timer hook (the last initcall) really marks "about to run /init". (No `nomodule`: the
/// guest kernel has `CONFIG_MODULES=n`, so it does not know that parameter and would hand it to
/// `/init` as an argument.) The reboot method (see [`Reboot`]) follows.
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

/// The parameter carrying the workload's argv into `/init`'s environment (no `.` in the name:
/// the kernel would take it for a module parameter).
pub const ARGV_PARAM: &str = "cvbench_argv";

/// Joins the words of [`ARGV_PARAM`]'s value.
pub const ARGV_SEPARATOR: char = ',';

/// The status `/init` reports when it got positional arguments or no [`ARGV_PARAM`].
pub const INIT_BAD_ARGV_STATUS: i32 = 125;

/// Bare words (no `=`) that the guest kernel consumes itself, so they never reach `/init`:
/// `quiet`, `debug` (core), `noxsave`, `earlyprintk` (x86 early params). Anything else we emit
/// must be `name=value`.
pub const BARE_WORDS_THE_KERNEL_CONSUMES: &[&str] = &["quiet", "noxsave", "debug", "earlyprintk"];

/// Errors in what is to be put on the command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error("workload argument {0:?} cannot travel on the kernel command line (empty, or holds whitespace, a quote or {ARGV_SEPARATOR:?})")]
    BadInitArg(String),
}

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
    /// The workload's argv (subcommand first), for `/init`.
    pub init_args: Vec<String>,
    pub reboot: Reboot,
}

/// Needed by a stock kernel under kvm_pvm (software-emulated guest kernel mode): XSAVE,
/// POPCNT and SMAP misbehave under the emulator and write-protecting rodata is very slow.
pub const PVM_WORKAROUNDS: &str = "noxsave clearcpuid=popcnt,smap rodata=off";

fn netmask(prefix_len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix_len.min(32))).unwrap_or(0))
}

/// Check that every word can be carried in [`ARGV_PARAM`].
pub fn validate_init_args(args: &[String]) -> Result<(), CmdlineError> {
    match args.iter().find(|a| a.is_empty() || a.chars().any(|c| c.is_whitespace() || c == '"' || c == ARGV_SEPARATOR))
    {
        Some(bad) => Err(CmdlineError::BadInitArg(bad.clone())),
        None => Ok(()),
    }
}

/// Render the command line.
pub fn build(spec: &CmdlineSpec) -> Result<String, CmdlineError> {
    validate_init_args(&spec.init_args)?;
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
    let _ = write!(s, " {ARGV_PARAM}={}", spec.init_args.join(&ARGV_SEPARATOR.to_string()));
    Ok(s)
}

/// What `/init` receives from a command line, by the kernel's rules: positional arguments (the
/// parameters before `--` that have no `=` and are not in `known`, then every word after `--`)
/// and the environment (unknown `name=value` parameters whose name has no `.`; we model every
/// such parameter as unknown, which is right for ours).
pub fn init_view<'a>(cmdline: &'a str, known: &[&str]) -> (Vec<&'a str>, Vec<(&'a str, &'a str)>) {
    let (kernel_part, init_part) = match cmdline.split_once(" -- ") {
        Some((k, i)) => (k, Some(i)),
        None => (cmdline.strip_suffix(" --").unwrap_or(cmdline), None),
    };
    let mut argv = Vec::new();
    let mut env = Vec::new();
    for w in kernel_part.split_whitespace() {
        match w.split_once('=') {
            Some((name, value)) if !name.contains('.') => env.push((name, value)),
            Some(_) => {}
            None if known.contains(&w) => {}
            None => argv.push(w),
        }
    }
    argv.extend(init_part.into_iter().flat_map(str::split_whitespace));
    (argv, env)
}

/// The workload's argv as `/init` would run it, or the positional arguments that make `/init`
/// refuse (exit status [`INIT_BAD_ARGV_STATUS`]).
pub fn workload_argv<'a>(cmdline: &'a str, known: &[&str]) -> Result<Vec<&'a str>, Vec<&'a str>> {
    let (argv, env) = init_view(cmdline, known);
    if !argv.is_empty() {
        return Err(argv);
    }
    // The last occurrence wins, as in the kernel's environment array.
    match env.iter().rev().find(|(n, _)| *n == ARGV_PARAM) {
        Some((_, v)) => Ok(v.split(ARGV_SEPARATOR).filter(|w| !w.is_empty()).collect()),
        None => Err(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with_everything() -> CmdlineSpec {
        CmdlineSpec {
            extra: "quiet".into(),
            pvm_workarounds: true,
            virtio: vec![(0xd000_1000, 5)],
            net: Some(GuestNet {
                guest_ip: Ipv4Addr::new(10, 203, 0, 2),
                host_ip: Ipv4Addr::new(10, 203, 0, 1),
                prefix_len: 30,
            }),
            init_args: vec!["net-rr".into(), "--peer".into(), "10.203.0.1:5201".into()],
            reboot: Reboot::TripleFault,
        }
    }

    #[test]
    fn virtio_devices_and_boot_timer_are_described() {
        let s = build(&CmdlineSpec { virtio: vec![(0xd000_1000, 5), (0xd000_2000, 6)], ..Default::default() }).unwrap();
        assert!(s.contains("virtio_mmio.device=4K@0xd0001000:5 virtio_mmio.device=4K@0xd0002000:6"));
        assert!(s.contains("cvbench_boot_timer=0xd0000000"));
        assert!(s.contains(" reboot=k"));
        assert!(!s.contains("noxsave"));
    }

    #[test]
    fn static_ip_uses_the_peer_as_gateway_and_a_slash_30_mask() {
        let s = build(&spec_with_everything()).unwrap();
        assert!(s.contains(" ip=10.203.0.2::10.203.0.1:255.255.255.252::eth0:off"));
        assert!(s.contains(PVM_WORKAROUNDS) && s.contains(" reboot=t"));
    }

    /// The bug that kept every workload from running in the Linux guest: `nomodule` (unknown to a
    /// CONFIG_MODULES=n kernel) reached /init ahead of the workload's argv.
    #[test]
    fn workload_receives_exactly_its_argv_with_every_option() {
        let s = build(&spec_with_everything()).unwrap();
        assert_eq!(workload_argv(&s, BARE_WORDS_THE_KERNEL_CONSUMES), Ok(vec!["net-rr", "--peer", "10.203.0.1:5201"]));
    }

    #[test]
    fn parameters_a_vmm_appends_do_not_reach_the_workload() {
        // QEMU's microvm appends its virtio-mmio devices to whatever line it is given.
        let s = build(&spec_with_everything()).unwrap() + " virtio_mmio.device=512@0xfeb00e00:12";
        assert_eq!(workload_argv(&s, BARE_WORDS_THE_KERNEL_CONSUMES), Ok(vec!["net-rr", "--peer", "10.203.0.1:5201"]));
    }

    #[test]
    fn a_stray_bare_word_makes_init_refuse() {
        let s = "console=ttyS0 nomodule quiet cvbench_argv=noop";
        assert_eq!(workload_argv(s, BARE_WORDS_THE_KERNEL_CONSUMES), Err(vec!["nomodule"]));
        let s = "console=ttyS0 cvbench_argv=noop -- extra";
        assert_eq!(workload_argv(s, BARE_WORDS_THE_KERNEL_CONSUMES), Err(vec!["extra"]));
    }

    #[test]
    fn arguments_that_cannot_travel_are_rejected() {
        for bad in ["two words", "a,b", "", "q\"uote"] {
            let spec = CmdlineSpec { init_args: vec!["cpu".into(), bad.into()], ..Default::default() };
            assert_eq!(build(&spec), Err(CmdlineError::BadInitArg(bad.into())));
        }
    }

    #[test]
    fn everything_we_emit_is_name_value_or_a_word_the_kernel_consumes() {
        let fragment = include_str!("../../guest/kernel.fragment");
        if fragment.lines().any(|l| l.trim() == "CONFIG_MODULES=n" || l.trim() == "# CONFIG_MODULES is not set") {
            assert!(!BASE.split_whitespace().any(|w| w == "nomodule"));
        }
        let s = build(&spec_with_everything()).unwrap();
        for w in s.split_whitespace() {
            assert!(
                w.contains('=') || BARE_WORDS_THE_KERNEL_CONSUMES.contains(&w),
                "bare word {w:?} would reach /init"
            );
        }
    }
}
