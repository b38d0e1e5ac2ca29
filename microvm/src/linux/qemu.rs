//! The peer launcher: the `qemu-system-x86_64 -M microvm` command line that boots the same
//! kernel and initramfs with the same guest command line as `cvbench-vmm linux`, so the two
//! VMMs can be measured side by side (the `qemu` backend and the boot comparison use it).

use std::path::Path;
use std::process::Command;

use super::cmdline::{self, CmdlineSpec};

/// What QEMU boots.
#[derive(Clone, Debug)]
pub struct QemuSpec<'a> {
    pub kernel: &'a Path,
    pub initrd: Option<&'a Path>,
    pub mem_mib: u64,
    pub vcpus: u8,
    /// The guest command line; build it with [`guest_cmdline`] to match our VMM's.
    pub append: String,
}

/// The guest command line our VMM would generate for a guest with no virtio devices, so the
/// two VMMs boot the guest identically (including the boot-timer hook, which is harmless
/// under QEMU: the write hits unassigned MMIO and is ignored).
pub fn guest_cmdline(extra: &str, pvm: bool, init_args: &[String]) -> String {
    cmdline::build(&CmdlineSpec {
        extra: extra.to_string(),
        pvm_workarounds: pvm,
        init_args: init_args.to_vec(),
        ..Default::default()
    })
}

/// `qemu-system-x86_64 -M microvm` with KVM, no option ROMs, no RTC, CPU `host` without
/// ARCH_CAPABILITIES (kvm_pvm cannot emulate its MSR), console on stdio, no reboot (a guest
/// reset ends QEMU, as it ends our VMM).
pub fn command(spec: &QemuSpec<'_>) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-M", "microvm,x-option-roms=off,rtc=off", "-enable-kvm"])
        .args(["-cpu", "host,-arch-capabilities"])
        .args(["-m", &spec.mem_mib.to_string(), "-smp", &spec.vcpus.to_string()])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .args(["-serial", "stdio", "-kernel"])
        .arg(spec.kernel);
    if let Some(initrd) = spec.initrd {
        c.arg("-initrd").arg(initrd);
    }
    c.arg("-append").arg(&spec.append);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_command_boots_the_given_kernel_with_the_same_cmdline() {
        let append = guest_cmdline("quiet", true, &["noop".to_string()]);
        let spec = QemuSpec {
            kernel: Path::new("/k/vmlinux"),
            initrd: Some(Path::new("/k/initrd")),
            mem_mib: 128,
            vcpus: 1,
            append: append.clone(),
        };
        let c = command(&spec);
        let args: Vec<String> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(args.windows(2).any(|w| w == ["-kernel", "/k/vmlinux"]));
        assert!(args.windows(2).any(|w| w == ["-initrd", "/k/initrd"]));
        assert_eq!(args.last(), Some(&append));
        assert!(append.contains(cmdline::PVM_WORKAROUNDS) && append.ends_with("quiet -- noop"));
    }
}
