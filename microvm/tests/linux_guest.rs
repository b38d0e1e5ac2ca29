//! Linux-guest integration tests: real guest boots under /dev/kvm with the cached cvbench
//! guest kernel. Each boot costs ~30–70 s under kvm_pvm (more when the host is loaded), so
//! there are two: one verifies the devices from the guest kernel's side (ext4 root on
//! virtio-blk, TCP answered over virtio-net, boot timer), one boots the workload initramfs and
//! checks the power-off path (and, on hardware KVM only, the workload's own output).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/netns.rs"]
mod netns;

use cvbench_microvm::linux::initramfs::{write_guest_image, GuestImage};
use cvbench_microvm::linux::kernel_cache;
use cvbench_microvm::stats::{GuestEnd, LinuxStats};
use cvbench_microvm::{kvm_kind, kvm_probe, KvmKind};
use netns::Netns;

fn skip_without_root_and_kvm() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        cvbench_testkit::skip(
            cvbench_testkit::Need::Root,
            "Linux-guest boot tests need root (tap devices, network namespaces)",
        );
        return true;
    }
    if let Err(why) = kvm_probe().usable() {
        cvbench_testkit::skip(cvbench_testkit::Need::Kvm, &format!("Linux-guest boot tests need /dev/kvm: {why}"));
        return true;
    }
    false
}

fn guest_kernel() -> PathBuf {
    let k = kernel_cache::GuestKernel::probe();
    match (k.path(), k.missing()) {
        (Some(p), _) => p.to_path_buf(),
        (None, missing) => {
            let (reason, fix) = missing.unwrap_or_default();
            panic!("{reason}; fix: {fix}")
        }
    }
}

fn workload_binary() -> PathBuf {
    let p = std::env::var_os("CVBENCH_WORKLOAD")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../workload/target/release/cvbench-workload"));
    assert!(
        p.is_file(),
        "workload binary missing at {}: cargo build --release --manifest-path workload/Cargo.toml --target-dir workload/target",
        p.display()
    );
    p
}

/// The VMM child, killed on drop if still running.
struct Vmm(Child);

impl Drop for Vmm {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn vmm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cvbench-vmm"))
}

/// A static x86-64 ELF whose entry is `jmp .`: an init that never makes a system call, so the
/// guest kernel stays up under kvm_pvm (where the first guest syscall faults).
fn spinning_init() -> Vec<u8> {
    let base = 0x40_0000u64;
    let code_off = 64 + 56;
    let mut e = Vec::new();
    e.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&(base + code_off).to_le_bytes()); // entry
    e.extend_from_slice(&64u64.to_le_bytes()); // phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // shoff
    e.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, 1, 64, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // R+X
    e.extend_from_slice(&0u64.to_le_bytes()); // offset
    e.extend_from_slice(&base.to_le_bytes());
    e.extend_from_slice(&base.to_le_bytes());
    let size = code_off + 2;
    e.extend_from_slice(&size.to_le_bytes());
    e.extend_from_slice(&size.to_le_bytes());
    e.extend_from_slice(&0x1000u64.to_le_bytes());
    e.extend_from_slice(&[0xeb, 0xfe]);
    e
}

fn read_console(path: &Path) -> String {
    std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// Try a TCP connection to `addr` from inside `netns`: `Ok(true)` if the guest kernel answered
/// (a RST: connection refused), `Ok(false)` on timeout or no route yet.
fn guest_answers_tcp(netns: &Path, addr: SocketAddr) -> bool {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&netns).unwrap();
        // SAFETY: setns on a valid netns fd, on this short-lived thread only.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Err(e) => e.kind() == ErrorKind::ConnectionRefused,
            Ok(_) => true,
        }
    })
    .join()
    .unwrap()
}

fn stats(path: &Path) -> LinuxStats {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", path.display()))
}

#[test]
fn guest_kernel_mounts_ext4_from_virtio_blk_and_answers_tcp_over_virtio_net() {
    if skip_without_root_and_kvm() {
        return;
    }
    let kernel = guest_kernel();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::fs::write(root.join("init"), spinning_init()).unwrap();
    std::fs::set_permissions(root.join("init"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let img = dir.path().join("root.ext4");
    let ok = Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&root).arg(&img).arg("8M").status().unwrap();
    assert!(ok.success(), "mkfs.ext4 failed");
    let netns = Netns::new("blknet");
    let tap = format!("cvbt{}", std::process::id() % 100_000);
    let console = dir.path().join("console.log");
    let stats_path = dir.path().join("stats.json");
    let started = Instant::now();
    let mut child = Vmm(vmm()
        .arg("linux")
        .arg("--kernel")
        .arg(&kernel)
        .arg("--blk")
        .arg(&img)
        .arg("--net-netns")
        .arg(netns.path())
        .args(["--net-tap", &tap, "--net-host-ip", "10.203.0.1", "--net-guest-ip", "10.203.0.2"])
        .args(["--cmdline", "root=/dev/vda rw rootfstype=ext4 init=/init"])
        .arg("--console")
        .arg(&console)
        .arg("--stats-json")
        .arg(&stats_path)
        .args(["--timeout-s", "330"])
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap());
    let tap_deadline = Instant::now() + Duration::from_secs(10);
    while !netns.links().contains(&tap) && Instant::now() < tap_deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(netns.links().contains(&tap), "tap {tap} not created inside the namespace");

    // Wait for init, then for the guest kernel to answer a TCP SYN with a RST.
    let deadline = started + Duration::from_secs(300);
    let mut answered = false;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("VMM exited early ({status}); console:\n{}", read_console(&console));
        }
        if read_console(&console).contains("Run /init as init process")
            && guest_answers_tcp(&netns.path(), "10.203.0.2:7".parse().unwrap())
        {
            answered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let boot_s = started.elapsed().as_secs_f64();
    kill(Pid::from_raw(child.0.id() as i32), Signal::SIGTERM).expect("SIGTERM to our own child");
    let status = child.0.wait().unwrap();
    let log = read_console(&console);
    eprintln!("guest console ({boot_s:.1} s):\n{log}");
    assert!(answered, "guest never answered TCP on 10.203.0.2:7");
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "VMM exit status");
    assert!(
        log.contains("virtio_blk virtio0: [vda] 16384 512-byte logical blocks"),
        "virtio-blk not probed with the image's capacity"
    );
    assert!(log.contains("EXT4-fs (vda): mounted filesystem"), "ext4 root not mounted");
    assert!(log.contains("IP-Config: Complete"), "kernel IP autoconfig did not run");
    let s = stats(&stats_path);
    assert_eq!(s.end, GuestEnd::Signalled(libc::SIGTERM));
    assert!(s.kernel_init_ms.is_some(), "boot timer not written: {s:?}");
    assert!(!netns.links().contains(&tap), "tap {tap} left behind after the VMM exited");
}

#[test]
fn workload_initramfs_boots_to_init_and_the_vmm_exits_on_guest_power_off() {
    if skip_without_root_and_kvm() {
        return;
    }
    let kernel = guest_kernel();
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initramfs.cpio");
    write_guest_image(&GuestImage { workload: workload_binary(), busybox: PathBuf::from("/bin/busybox") }, &initrd)
        .unwrap();
    let console = dir.path().join("console.log");
    let stats_path = dir.path().join("stats.json");
    let status = vmm()
        .arg("linux")
        .arg("--kernel")
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .args(["--cmdline", "quiet"])
        .arg("--console")
        .arg(&console)
        .arg("--stats-json")
        .arg(&stats_path)
        .args(["--timeout-s", "300", "--", "noop"])
        .status()
        .unwrap();
    let log = read_console(&console);
    let s = stats(&stats_path);
    eprintln!("guest console:\n{log}\nstats: {s:?}");
    assert!(s.kernel_init_ms.is_some(), "guest kernel never reached init");
    assert_eq!(s.end, GuestEnd::PowerOff, "the guest did not power the VM off by itself");
    if kvm_kind() == KvmKind::SoftwarePvm {
        cvbench_testkit::skip(
            cvbench_testkit::Need::Kvm,
            &format!(
                "workload-in-guest check: /dev/kvm is kvm_pvm, where the guest's first user-space system \
                 call faults; verified only boot-to-init and power-off (exit status {status})"
            ),
        );
        return;
    }
    assert_eq!(s.exit_status, Some(0), "workload exit status from the guest");
    assert_eq!(status.code(), Some(0));
    assert!(log.contains("READY"), "workload READY line missing from the console");
    assert!(log.contains("\"workload\":\"noop\""), "workload JSON line missing");
}
