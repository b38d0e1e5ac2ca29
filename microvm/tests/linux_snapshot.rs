//! Linux-guest snapshots: KVM state saved from a live vCPU loads into a fresh one (here), every
//! bad snapshot is refused by `cvbench-vmm linux-restore` before a VM exists (here), a guest
//! that ends before its READY leaves no snapshot behind (here: one guest boot), a restore given
//! other devices than the snapshot's is refused (here), and a guest saved at `wait-go`'s READY
//! restores, takes its go line and runs its job, also with a virtio disk it then writes and
//! reads and with a virtio NIC it then talks to a peer through (only where the guest's user space runs: hardware KVM, i.e. the test host; a loud
//! SKIPPED under kvm_pvm).

mod common;
#[path = "common/netns.rs"]
mod netns;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::require_kvm;
use cvbench_microvm::devices::serial::SerialSnapshot;
use cvbench_microvm::devices::virtio::state::{DeviceSnapshot, QueueSnapshot, TransportSnapshot};
use cvbench_microvm::linux::initramfs::{write_guest_image, GuestImage};
use cvbench_microvm::linux::kernel_cache;
use cvbench_microvm::linux::snapshot::{GuestNetSnapshot, LinuxSnapshot, FORMAT_VERSION, KIND};
use cvbench_microvm::snapshot::frame;
use cvbench_microvm::snapshot::kvm::{self, Blob, VcpuState, VmState};
use cvbench_microvm::stats::{GuestEnd, LinuxStats};
use cvbench_microvm::vstate::{KvmVm, Vcpu, Vm, VmOptions};
use cvbench_microvm::{kvm_kind, KvmKind};
use kvm_bindings::{kvm_irqchip, kvm_regs, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE};
use netns::Netns;

const MEM_MIB: u64 = 128;

fn vmm() -> Command {
    Command::new(common::vmm())
}

fn host_msrs(vm: &KvmVm) -> Vec<u32> {
    kvm::host_msr_list(vm).unwrap()
}

#[test]
fn kvm_state_saved_from_a_vcpu_loads_into_a_fresh_one() {
    require_kvm!("KVM state round trips");
    let vm = KvmVm::new(VmOptions { irqchip: true }).unwrap();
    let msrs = host_msrs(&vm);
    let mut vcpu = vm.create_vcpu(0).unwrap();
    vcpu.set_cpuid(&vm.supported_cpuid().unwrap()).unwrap();
    let regs = kvm_regs { rax: 0x1234, rbx: 7, rip: 0xfff0, rflags: 0x2, ..Default::default() };
    vcpu.set_regs(&regs).unwrap();
    let saved = kvm::save_vcpu(&mut vcpu, &msrs).unwrap();
    let saved_vm = kvm::save_vm(&vm).unwrap();
    assert!(saved.check(&msrs).is_ok());
    assert!(saved_vm.check().is_ok());
    assert!(!saved.msrs.is_empty(), "no MSR could be read");

    let fresh_vm = KvmVm::new(VmOptions { irqchip: true }).unwrap();
    kvm::restore_vm(&fresh_vm, &saved_vm).unwrap();
    let mut fresh = fresh_vm.create_vcpu(0).unwrap();
    fresh.set_cpuid(&fresh_vm.supported_cpuid().unwrap()).unwrap();
    let refused = kvm::restore_vcpu(&mut fresh, &saved).unwrap();
    assert!(refused.is_empty(), "KVM refused saved MSRs {refused:#x?}");
    let again = kvm::save_vcpu(&mut fresh, &msrs).unwrap();
    assert_eq!(again.regs, saved.regs);
    assert_eq!(again.sregs, saved.sregs);
    assert_eq!(again.mp_state, saved.mp_state);
    assert_eq!(again.xcrs, saved.xcrs);
    let indices = |v: &VcpuState| v.msrs.iter().map(|m| m.0).collect::<Vec<_>>();
    assert_eq!(indices(&again), indices(&saved));
    // The LAPIC's registers other than the timer's current count (which runs) come back.
    let (a, b) = (&again.lapic.0.regs, &saved.lapic.0.regs);
    assert_eq!(a[..0x390], b[..0x390]);
}

/// A state file that passes every check (zeroed KVM state: the refusals below all come first).
fn good_state() -> LinuxSnapshot {
    let chip = |id| Blob(kvm_irqchip { chip_id: id, ..Default::default() });
    LinuxSnapshot {
        vmm_version: "test".into(),
        mem_mib: MEM_MIB,
        pvm_workarounds: false,
        cmdline: "console=ttyS0".into(),
        vm: VmState {
            pic_master: chip(KVM_IRQCHIP_PIC_MASTER),
            pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE),
            ioapic: chip(KVM_IRQCHIP_IOAPIC),
            pit: Blob::default(),
            clock: Blob::default(),
        },
        vcpus: vec![VcpuState {
            id: 0,
            regs: Default::default(),
            sregs: Blob::default(),
            xsave: Blob::default(),
            xcrs: Blob::default(),
            lapic: Blob::default(),
            msrs: Vec::new(),
            mp_state: 0,
            events: Blob::default(),
            debugregs: Blob::default(),
        }],
        serial: SerialSnapshot::default(),
        devices: Vec::new(),
        net: None,
        data_pages: 0,
    }
}

/// A virtio-blk transport serving one queue, as saved from a guest with a 1 MiB disk.
fn disk_state() -> TransportSnapshot {
    TransportSnapshot {
        device: DeviceSnapshot::Block { sectors: 2048, read_only: false },
        status: 0xf,
        acked_features: 1 << 32,
        queue_sel: 0,
        device_features_sel: 0,
        driver_features_sel: 0,
        interrupt_status: 0,
        activated: true,
        queues: vec![QueueSnapshot {
            size: 256,
            ready: true,
            desc_table: 0x1_0000,
            avail_ring: 0x1_1000,
            used_ring: 0x1_2000,
            next_avail: 3,
            next_used: 3,
            event_idx: false,
        }],
    }
}

/// A snapshot directory holding `state` framed at `version` and a sparse memory file of
/// `mem_bytes` bytes.
fn write_snapshot(dir: &Path, state: &LinuxSnapshot, version: u32, mem_bytes: u64) {
    std::fs::write(dir.join("state"), frame::encode(KIND, version, state).unwrap()).unwrap();
    std::fs::File::create(dir.join("memory")).unwrap().set_len(mem_bytes).unwrap();
}

/// `linux-restore` of `dir` with `extra` flags; returns the output.
fn restore(dir: &Path, extra: &[&str]) -> Output {
    vmm()
        .arg("linux-restore")
        .arg("--snapshot")
        .arg(dir)
        .args(["--timeout-s", "10"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len())
        })
        .collect();
    v.sort();
    v
}

/// The restore must fail as a VMM error (125) naming `file` and saying `what`, and leave the
/// snapshot directory as it was.
fn assert_refused(dir: &Path, extra: &[&str], file: &str, what: &str) {
    let before = listing(dir);
    let out = restore(dir, extra);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{what}: {stderr}");
    assert!(stderr.contains(&dir.join(file).display().to_string()), "{what}: the error does not name {file}: {stderr}");
    assert!(stderr.contains(what), "{what}: {stderr}");
    assert!(!stderr.contains("linux guest:"), "{what}: a guest ran: {stderr}");
    assert_eq!(listing(dir), before, "{what}: the snapshot directory changed");
}

#[test]
fn bad_snapshots_are_refused_before_a_vm_exists_naming_the_file() {
    require_kvm!("Linux snapshot bad-input tests");
    let mem = MEM_MIB << 20;
    type Case = (&'static str, Box<dyn Fn(&mut LinuxSnapshot)>, u32, u64, &'static [&'static str], &'static str);
    let cases: Vec<Case> = vec![
        ("another format version", Box::new(|_| {}), FORMAT_VERSION + 1, mem, &[], "state"),
        ("another memory size asked for", Box::new(|_| {}), FORMAT_VERSION, mem, &["--mem-mib", "256"], "memory"),
        ("truncated memory", Box::new(|_| {}), FORMAT_VERSION, mem - 4096, &[], "memory"),
        ("memory size forged", Box::new(|s| s.mem_mib = 1 << 20), FORMAT_VERSION, mem, &[], "state"),
        ("no vCPU", Box::new(|s| s.vcpus.clear()), FORMAT_VERSION, mem, &[], "state"),
        (
            "an MSR KVM does not save",
            Box::new(|s| s.vcpus[0].msrs.push((0x4b56_4dff, 1))),
            FORMAT_VERSION,
            mem,
            &[],
            "state",
        ),
        ("serial FIFO overfull", Box::new(|s| s.serial.in_buffer = vec![b'x'; 65]), FORMAT_VERSION, mem, &[], "state"),
        (
            "irqchip swapped",
            Box::new(|s| s.vm.ioapic.0.chip_id = KVM_IRQCHIP_PIC_MASTER),
            FORMAT_VERSION,
            mem,
            &[],
            "state",
        ),
        ("data pages forged", Box::new(|s| s.data_pages = u64::MAX), FORMAT_VERSION, mem, &[], "state"),
    ];
    let expect = [
        "format version",
        "were asked for",
        "truncated",
        "outside 16",
        "vCPUs",
        "0x4b564dff",
        "FIFO",
        "irqchip",
        "data pages",
    ];
    for ((what, edit, version, mem_bytes, flags, file), phrase) in cases.into_iter().zip(expect) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = good_state();
        edit(&mut s);
        write_snapshot(dir.path(), &s, version, mem_bytes);
        eprintln!("case: {what}");
        assert_refused(dir.path(), flags, file, phrase);
    }
}

#[test]
fn a_state_file_whose_checksum_fails_or_that_is_missing_is_refused() {
    require_kvm!("Linux snapshot bad-input tests");
    let dir = tempfile::tempdir().unwrap();
    write_snapshot(dir.path(), &good_state(), FORMAT_VERSION, MEM_MIB << 20);
    let path = dir.path().join("state");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.iter().rposition(|&b| b == b'8').unwrap(); // in "128"
    bytes[at] = b'9';
    std::fs::write(&path, &bytes).unwrap();
    assert_refused(dir.path(), &[], "state", "fails its checksum");
    std::fs::remove_file(&path).unwrap();
    assert_refused(dir.path(), &[], "state", "cannot open");
    // A bare VM's state is not a Linux guest's.
    std::fs::write(&path, frame::encode("bare", 1, &good_state()).unwrap()).unwrap();
    assert_refused(dir.path(), &[], "state", "not a linux snapshot");
}

fn guest_kernel() -> Option<PathBuf> {
    let k = kernel_cache::GuestKernel::probe();
    match (k.path(), k.missing()) {
        (Some(p), _) => Some(p.to_path_buf()),
        (None, missing) => {
            let (reason, fix) = missing.unwrap_or_default();
            cvbench_testkit::skip(cvbench_testkit::Need::Kvm, &format!("no guest kernel: {reason}; fix: {fix}"));
            None
        }
    }
}

fn guest_initrd(dir: &Path) -> PathBuf {
    let initrd = dir.join("initramfs.cpio");
    write_guest_image(&GuestImage { workload: common::workload(), busybox: PathBuf::from("/bin/busybox") }, &initrd)
        .unwrap();
    initrd
}

/// A snapshot taken in a test's directory: where it went, the guest's console, the VMM's output.
struct Taken {
    snap: PathBuf,
    console: PathBuf,
    out: Output,
}

/// `linux --snapshot-to DIR/snap` of a guest with `vcpus` vCPUs running `args`, its console in
/// `DIR/take.log`; the console and the VMM's stderr go to the test's log.
fn take(dir: &Path, kernel: &Path, vcpus: u8, args: &[&str]) -> Taken {
    take_with(dir, kernel, vcpus, &[], args)
}

/// [`take`] with extra VMM flags (e.g. a disk).
fn take_with(dir: &Path, kernel: &Path, vcpus: u8, flags: &[&str], args: &[&str]) -> Taken {
    let initrd = guest_initrd(dir);
    let snap = dir.join("snap");
    std::fs::create_dir(&snap).unwrap();
    let console = dir.join("take.log");
    let out = vmm()
        .arg("linux")
        .args(["--vcpus", &vcpus.to_string()])
        .arg("--kernel")
        .arg(kernel)
        .arg("--initrd")
        .arg(&initrd)
        .args(["--cmdline", "quiet", "--mem-mib", &MEM_MIB.to_string()])
        .arg("--console")
        .arg(&console)
        .arg("--snapshot-to")
        .arg(&snap)
        .args(flags)
        .args(["--timeout-s", "600", "--"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    eprintln!("take console:\n{}\nstderr:\n{}", read_text(&console), String::from_utf8_lossy(&out.stderr));
    Taken { snap, console, out }
}

fn read_text(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

#[test]
fn a_guest_that_ends_before_ready_leaves_no_snapshot() {
    require_kvm!("Linux-guest snapshot runs");
    let Some(kernel) = guest_kernel() else { return };
    let dir = tempfile::tempdir().unwrap();
    // An unknown subcommand: the workload prints its usage and exits 2 without a READY.
    let Taken { snap, out, .. } = take(dir.path(), &kernel, 1, &["no-such-workload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("no snapshot written to") && stderr.contains(&snap.display().to_string()), "{stderr}");
    assert!(stderr.contains("before its workload printed READY"), "{stderr}");
    assert_eq!(std::fs::read_dir(&snap).unwrap().count(), 0, "files left in the snapshot directory");
}

/// Restore `snap` (`load`, extra VMM flags such as the disk again), send the go line, wait for the
/// VMM; its output and the stats it wrote.
fn restore_and_go_with(snap: &Path, console: &Path, stats: &Path, load: &str, flags: &[&str]) -> (Output, LinuxStats) {
    let mut child = vmm()
        .arg("linux-restore")
        .arg("--snapshot")
        .arg(snap)
        .args(["--load", load, "--timeout-s", "600"])
        .args(flags)
        .arg("--console")
        .arg(console)
        .arg("--stats-json")
        .arg(stats)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = read_text(stats);
    eprintln!("restore ({load}) console:\n{}\nstderr:\n{}", read_text(console), String::from_utf8_lossy(&out.stderr));
    let s: LinuxStats =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("stats {}: {e}: {text}", stats.display()));
    (out, s)
}

/// Restore `snap` with `load` and `flags`, send the go line, and check that the guest resumed (no
/// second READY), ran its job to exit status 0 and powered off by itself; the console's text.
fn resumed_and_ran(dir: &Path, snap: &Path, load: &str, flags: &[&str], job: &str) -> (String, LinuxStats) {
    let console = dir.join(format!("restore-{load}.log"));
    let stats = dir.join(format!("stats-{load}.json"));
    let (out, s) = restore_and_go_with(snap, &console, &stats, load, flags);
    let log = read_text(&console);
    assert_eq!(s.end, GuestEnd::PowerOff, "{load}: the restored guest did not power off by itself");
    assert_eq!(s.exit_status, Some(0), "{load}: the {job} job's exit status: {log}");
    assert_eq!(out.status.code(), Some(0), "{load}");
    assert!(!log.contains("READY"), "{load}: the restored guest booted again instead of resuming: {log}");
    (log, s)
}

/// The guest kernel for a test whose guest runs its user space (`what` it checks), or `None`
/// after a loud skip: under kvm_pvm, or without a built guest kernel.
fn guest_for(what: &str) -> Option<PathBuf> {
    if skip_under_pvm(what) {
        return None;
    }
    guest_kernel()
}

/// Skip (loudly) where the guest's user space cannot run.
fn skip_under_pvm(what: &str) -> bool {
    if kvm_kind() == KvmKind::SoftwarePvm {
        cvbench_testkit::skip(
            cvbench_testkit::Need::Kvm,
            &format!(
                "{what}: /dev/kvm is kvm_pvm, where the guest's user space (the workload that prints READY) \
                 cannot make system calls; this runs in the test host"
            ),
        );
        return true;
    }
    false
}

#[test]
fn a_guest_saved_at_ready_restores_takes_its_go_line_and_runs_its_job() {
    require_kvm!("Linux-guest snapshot runs");
    let Some(kernel) = guest_for("Linux-guest snapshot and restore") else { return };
    let dir = tempfile::tempdir().unwrap();
    let job = ["wait-go", "--job", "mem-touch", "--touch-mib", "8", "--chase-mib", "1", "--accesses", "1000"];
    let Taken { snap, console, out } = take(dir.path(), &kernel, 1, &job);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "taking the snapshot failed: {stderr}");
    assert!(read_text(&console).contains("READY"), "no READY before the snapshot");
    let state_len = std::fs::metadata(snap.join("state")).unwrap().len();
    assert_eq!(std::fs::metadata(snap.join("memory")).unwrap().len(), MEM_MIB << 20);
    assert!(state_len > 0);

    for load in ["lazy", "eager"] {
        let (log, s) = resumed_and_ran(dir.path(), &snap, load, &[], "mem-touch");
        assert!(log.contains("\"job_ns\""), "{load}: the job's report is missing from the console: {log}");
        let r = s.restore.expect("restore figures");
        assert!(r.restore_ns > 0);
        if load == "lazy" {
            // The job touched 8 MiB the snapshot held as holes plus guest pages from the file.
            assert!(r.minflt_after_restore > 0, "{load}: no page faults after a lazy restore");
        }
    }
    // The snapshot is reusable: restoring did not change it.
    assert_eq!(std::fs::metadata(snap.join("state")).unwrap().len(), state_len);
}

#[test]
fn a_two_vcpu_guest_restores_with_both_vcpus() {
    require_kvm!("Linux-guest snapshot runs");
    let Some(kernel) = guest_for("two-vCPU Linux-guest snapshot and restore") else { return };
    let dir = tempfile::tempdir().unwrap();
    let Taken { snap, out, .. } = take(dir.path(), &kernel, 2, &["wait-go", "--job", "noop"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "taking the snapshot failed: {stderr}");
    let state = std::fs::read(snap.join("state")).unwrap();
    let saved: LinuxSnapshot = frame::decode(&snap.join("state"), KIND, FORMAT_VERSION, &state).unwrap();
    assert_eq!(saved.vcpus.iter().map(|v| v.id).collect::<Vec<_>>(), [0, 1]);

    let (log, _) = resumed_and_ran(dir.path(), &snap, "lazy", &[], "noop");
    assert!(log.contains("\"job_ns\""), "the job's report is missing");
}

#[test]
fn a_restore_whose_devices_do_not_match_the_snapshot_is_refused() {
    require_kvm!("Linux snapshot bad-input tests");
    let dir = tempfile::tempdir().unwrap();
    let image = |name: &str, len: u64| {
        let p = dir.path().join(name);
        std::fs::File::create(&p).unwrap().set_len(len).unwrap();
        p.display().to_string()
    };
    let (disk, bigger) = (image("disk.img", 1 << 20), image("bigger.img", 2 << 20));
    let with_disk = |edit: &dyn Fn(&mut LinuxSnapshot)| {
        let mut s = good_state();
        s.devices = vec![disk_state()];
        edit(&mut s);
        s
    };
    let with_nic = {
        let mut s = good_state();
        let nic = TransportSnapshot { device: DeviceSnapshot::Net { mac: [2, 0xcb, 0, 0, 0, 1] }, ..disk_state() };
        s.devices = vec![TransportSnapshot { queues: vec![nic.queues[0]; 2], ..nic }];
        s.net =
            Some(GuestNetSnapshot { host_ip: [10, 0, 0, 1].into(), guest_ip: [10, 0, 0, 2].into(), prefix_len: 30 });
        s
    };
    let cases: Vec<(&str, LinuxSnapshot, Vec<&str>, &str)> = vec![
        ("a disk saved, none given", with_disk(&|_| {}), vec![], "saved with a virtio-blk disk"),
        ("a disk given, none saved", good_state(), vec!["--blk", disk.as_str()], "saved without a disk"),
        ("a disk of another size", with_disk(&|_| {}), vec!["--blk", bigger.as_str()], "saved as"),
        (
            "a queue past guest memory",
            with_disk(&|s| s.devices[0].queues[0].used_ring = MEM_MIB << 20),
            vec!["--blk", disk.as_str()],
            "ends past guest memory",
        ),
        (
            "a queue larger than the device's",
            with_disk(&|s| s.devices[0].queues[0].size = 1024),
            vec!["--blk", disk.as_str()],
            "size 1024",
        ),
        ("a NIC saved, no network given", with_nic, vec![], "saved with a NIC"),
    ];
    for (what, state, flags, phrase) in cases {
        let snap = tempfile::tempdir_in(dir.path()).unwrap();
        write_snapshot(snap.path(), &state, FORMAT_VERSION, MEM_MIB << 20);
        eprintln!("case: {what}");
        assert_refused(snap.path(), &flags, "state", phrase);
    }
}

#[test]
fn a_guest_saved_with_a_disk_restores_and_writes_and_reads_it() {
    require_kvm!("Linux-guest snapshot runs");
    let Some(kernel) = guest_for("Linux-guest snapshot and restore with a virtio disk") else { return };
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.ext4");
    std::fs::File::create(&disk).unwrap().set_len(32 << 20).unwrap();
    let mkfs = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&disk).status().expect("mkfs.ext4 (e2fsprogs)");
    assert!(mkfs.success(), "mkfs.ext4 failed");
    let disk = disk.display().to_string();
    // The guest's /init mounts the disk at /mnt; the job writes, syncs and reads a file there.
    let job = ["wait-go", "--job", "disk", "--dir", "/mnt", "--size-mib", "2", "--rand-ops", "8"];
    let Taken { snap, console, out } = take_with(dir.path(), &kernel, 1, &["--blk", disk.as_str()], &job);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "taking the snapshot failed: {stderr}");
    assert!(read_text(&console).contains("READY"), "no READY before the snapshot");
    let state = std::fs::read(snap.join("state")).unwrap();
    let saved: LinuxSnapshot = frame::decode(&snap.join("state"), KIND, FORMAT_VERSION, &state).unwrap();
    assert_eq!(saved.devices.len(), 1);
    let blk = &saved.devices[0];
    assert!(matches!(blk.device, DeviceSnapshot::Block { sectors: 65536, read_only: false }), "{:?}", blk.device);
    assert!(blk.activated && blk.queues[0].ready, "the guest's driver had not brought the disk up: {blk:?}");
    assert!(blk.queues[0].next_used > 0, "the guest mounted the disk, so requests were served: {blk:?}");

    let (log, _) = resumed_and_ran(dir.path(), &snap, "lazy", &["--blk", disk.as_str()], "disk");
    assert!(log.contains("\"seq_write_mb_s\"") && log.contains("\"job_ns\""), "the job's report is missing: {log}");
}

#[test]
fn a_guest_saved_with_a_nic_restores_and_talks_over_it() {
    require_kvm!("Linux-guest snapshot runs");
    let Some(kernel) = guest_for("Linux-guest snapshot and restore with a virtio NIC") else { return };
    let dir = tempfile::tempdir().unwrap();
    let netns = Netns::new("snapnet");
    // The peer, in the test's namespace: one connection served, then it exits 0. It listens on
    // every address of the namespace, as the tap (and 10.203.0.1 on it) exists only while a VMM runs.
    let mut server = cvbench_testkit::Reap::new(
        Command::new("nsenter")
            .arg(format!("--net={}", netns.path().display()))
            .arg(common::workload())
            .args(["serve", "--listen", "0.0.0.0:5201", "--max-conns", "1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("nsenter (util-linux)"),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "READY", "the peer server did not start");
    let tap = format!("cvbs{}", std::process::id() % 100_000);
    let ns = netns.path().display().to_string();
    let net =
        ["--net-netns", ns.as_str(), "--net-tap", &tap, "--net-host-ip", "10.203.0.1", "--net-guest-ip", "10.203.0.2"];
    let job = ["wait-go", "--job", "net-rr", "--peer", "10.203.0.1:5201", "--requests", "50"];
    let Taken { snap, console, out } = take_with(dir.path(), &kernel, 1, &net, &job);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "taking the snapshot failed: {stderr}");
    assert!(read_text(&console).contains("READY"), "no READY before the snapshot");
    assert!(!netns.links().contains(&tap), "tap {tap} left behind by the VMM that took the snapshot");
    let state = std::fs::read(snap.join("state")).unwrap();
    let saved: LinuxSnapshot = frame::decode(&snap.join("state"), KIND, FORMAT_VERSION, &state).unwrap();
    assert_eq!(saved.devices.len(), 1);
    let nic = &saved.devices[0];
    assert!(matches!(nic.device, DeviceSnapshot::Net { .. }), "{:?}", nic.device);
    assert!(
        nic.activated && nic.queues.iter().all(|q| q.ready),
        "the guest's driver had not brought the NIC up: {nic:?}"
    );
    let want = GuestNetSnapshot { host_ip: [10, 203, 0, 1].into(), guest_ip: [10, 203, 0, 2].into(), prefix_len: 30 };
    assert_eq!(saved.net, Some(want));

    let (log, _) = resumed_and_ran(dir.path(), &snap, "lazy", &net, "net-rr");
    assert!(log.contains("\"requests\":50") && log.contains("\"p50_us\""), "the job's report is missing: {log}");
    // The peer saw the restored guest's one connection and ended by itself.
    let status = server.into_inner().wait().unwrap();
    assert!(status.success(), "the peer server: {status}");
    assert!(!netns.links().contains(&tap), "tap {tap} left behind by the restored VMM");
}
