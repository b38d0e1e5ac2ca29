//! The bare micro-VM end to end: the real `cvbench-vmm bare` binary on /dev/kvm running the
//! workload (JSON structure identical to a native run), the exit-status path, a guest fault,
//! an unknown system call, stop signals and the timeout. Needs root and /dev/kvm; otherwise
//! each test prints `SKIPPED: <reason>` and returns.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cvbench_microvm::bare::elf::build_test_elf;
use cvbench_testkit::Reap;

mod common;
use common::{require_kvm, vmm, workload};

fn bare_cmd(elf: &Path, extra: &[&str], args: &[&str]) -> Command {
    let mut c = Command::new(vmm());
    c.arg("bare").arg("--elf").arg(elf).args(["--mem-mib", "256"]).args(extra).arg("--").args(args);
    c
}

fn run_bare(elf: &Path, extra: &[&str], args: &[&str]) -> Output {
    bare_cmd(elf, extra, args).stdin(Stdio::null()).output().expect("spawn cvbench-vmm")
}

/// The READY line and the JSON line's workload name + metric keys.
fn shape(out: &Output, what: &str) -> (String, BTreeSet<String>) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed: {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"READY"), "{what}: first line must be READY: {stdout}");
    assert_eq!(lines.len(), 2, "{what}: expected READY + one JSON line: {stdout}");
    let v: serde_json::Value = serde_json::from_str(lines[1]).expect("JSON line");
    let name = v["workload"].as_str().expect("workload name").to_string();
    let keys = v["metrics"].as_object().expect("metrics object").keys().cloned().collect();
    (name, keys)
}

fn same_shape_as_native(args: &[&str]) {
    let w = workload();
    let native = Command::new(&w).args(args).stdin(Stdio::null()).output().expect("spawn workload");
    let vm = run_bare(&w, &["--timeout-s", "120"], args);
    let (n_name, n_keys) = shape(&native, "native run");
    let (v_name, v_keys) = shape(&vm, "bare VM run");
    assert_eq!(v_name, n_name);
    assert_eq!(v_keys, n_keys, "metric keys differ between the bare VM and native");
}

#[test]
fn noop_matches_native_structure() {
    require_kvm!("bare micro-VM tests");
    same_shape_as_native(&["noop"]);
}

#[test]
fn cpu_matches_native_structure_and_checksums() {
    require_kvm!("bare micro-VM tests");
    let args = ["cpu", "--sha-mib", "2", "--sieve-n", "1000000", "--matmul-n", "32"];
    same_shape_as_native(&args);
    let out = run_bare(&workload(), &[], &args);
    let line = String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap_or_default().to_string();
    let v: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
    assert_eq!(v["metrics"]["sieve_primes"], 78498, "the sieve ran in the guest: {line}");
}

#[test]
fn mem_bw_matches_native_structure() {
    require_kvm!("bare micro-VM tests");
    same_shape_as_native(&["mem-bw", "--array-mib", "4", "--iters", "2"]);
}

#[test]
fn mem_touch_matches_native_structure() {
    require_kvm!("bare micro-VM tests");
    same_shape_as_native(&["mem-touch", "--touch-mib", "8", "--chase-mib", "2", "--accesses", "20000"]);
}

#[test]
fn syscall_matches_native_structure() {
    require_kvm!("bare micro-VM tests");
    same_shape_as_native(&["syscall", "--iters", "2000"]);
}

#[test]
fn idle_matches_native_structure_and_ends_when_stdin_closes() {
    require_kvm!("bare micro-VM tests");
    let w = workload();
    let native = Command::new(&w).arg("idle").stdin(Stdio::null()).output().expect("spawn workload");
    let mut child = Reap::new(
        bare_cmd(&w, &["--timeout-s", "60"], &["idle"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn cvbench-vmm"),
    );
    std::thread::sleep(Duration::from_millis(200));
    child.stdin.take().expect("stdin").write_all(b"some input\n").expect("write stdin");
    // Dropping the pipe's write end (above) closes the VMM's stdin: the guest's poll sees EOF.
    let vm = child.into_inner().wait_with_output().expect("wait");
    let (n_name, n_keys) = shape(&native, "native idle");
    let (v_name, v_keys) = shape(&vm, "bare idle");
    assert_eq!((v_name, v_keys), (n_name, n_keys));
    assert!(String::from_utf8_lossy(&vm.stdout).contains("\"stopped_by_signal\":0"));
}

#[test]
fn idle_stops_on_sigterm_through_the_guest_signalfd() {
    require_kvm!("bare micro-VM tests");
    let mut child = Reap::new(
        bare_cmd(&workload(), &["--timeout-s", "60"], &["idle"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn cvbench-vmm"),
    );
    // Hold stdin open until the VMM has exited, so only the signal can end `idle`.
    let stdin = child.stdin.take();
    // The guest prints READY after it has blocked SIGTERM and made its signalfd.
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).expect("read READY");
    assert_eq!(first, "READY\n");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM to our own child");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("read the JSON line");
    let status = child.into_inner().wait().expect("wait");
    drop(stdin);
    assert!(status.success(), "{status:?} {rest}");
    assert!(rest.contains("\"stopped_by_signal\":1"), "{rest}");
}

fn test_elf(dir: &Path, name: &str, code: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, build_test_elf(0x40_0000, code)).expect("write test ELF");
    p
}

const EXIT_42: &[u8] = &[
    0xbf, 0x2a, 0, 0, 0, // mov edi, 42
    0xb8, 0xe7, 0, 0, 0, // mov eax, 231 (exit_group)
    0x0f, 0x05, // syscall
];

#[test]
fn guest_exit_status_becomes_the_vmm_exit_status() {
    require_kvm!("bare micro-VM tests");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_bare(&test_elf(dir.path(), "exit42", EXIT_42), &[], &[]);
    assert_eq!(out.status.code(), Some(42), "{}", String::from_utf8_lossy(&out.stderr));
    // And the workload's own usage-error status 2.
    let out = run_bare(&workload(), &[], &["cpu", "--bogus", "1"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn guest_page_fault_is_reported_with_vector_rip_and_address() {
    require_kvm!("bare micro-VM tests");
    let dir = tempfile::tempdir().expect("tempdir");
    // mov rax, [0x10]: the null page is not mapped.
    let code = [0x48, 0x8b, 0x04, 0x25, 0x10, 0, 0, 0];
    let out = run_bare(&test_elf(dir.path(), "fault", &code), &[], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{stderr}");
    assert!(stderr.contains("exception 14 (#PF page fault)"), "{stderr}");
    assert!(stderr.contains("RIP 0x400078"), "{stderr}"); // entry = vaddr + headers
    assert!(stderr.contains("fault address 0x10"), "{stderr}");
}

#[test]
fn invalid_opcode_is_reported_not_hung() {
    require_kvm!("bare micro-VM tests");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_bare(&test_elf(dir.path(), "ud2", &[0x0f, 0x0b]), &["--timeout-s", "20"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{stderr}");
    assert!(stderr.contains("exception 6 (#UD invalid opcode) at RIP 0x400078"), "{stderr}");
}

#[test]
fn port_io_from_the_program_faults_like_in_a_process() {
    require_kvm!("bare micro-VM tests");
    let dir = tempfile::tempdir().expect("tempdir");
    // out 0x80, al at CPL3: only the VMM's stub ports are open in the I/O bitmap.
    let out = run_bare(&test_elf(dir.path(), "outb", &[0xe6, 0x80]), &[], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{stderr}");
    assert!(stderr.contains("exception 13 (#GP general protection) at RIP 0x400078"), "{stderr}");
}

#[test]
fn unknown_syscall_returns_enosys_with_a_warning() {
    require_kvm!("bare micro-VM tests");
    let dir = tempfile::tempdir().expect("tempdir");
    let code = [
        0xb8, 0xe7, 0x03, 0, 0, // mov eax, 999
        0x0f, 0x05, // syscall
        0xf7, 0xd8, // neg eax
        0x89, 0xc7, // mov edi, eax
        0xb8, 0xe7, 0, 0, 0, // mov eax, 231
        0x0f, 0x05, // syscall
    ];
    let out = run_bare(&test_elf(dir.path(), "enosys", &code), &[], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(libc::ENOSYS), "{stderr}");
    assert!(stderr.contains("system call 999"), "{stderr}");
}

#[test]
fn network_workloads_fail_clearly_with_enosys() {
    require_kvm!("bare micro-VM tests");
    let out = run_bare(&workload(), &[], &["net-rr", "--peer", "127.0.0.1:9", "--requests", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("(socket) is not supported by the bare VM"), "{stderr}");
}

#[test]
fn a_guest_spinning_past_its_timeout_is_stopped() {
    require_kvm!("bare micro-VM tests");
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let out = run_bare(&test_elf(dir.path(), "spin", &[0xeb, 0xfe]), &["--timeout-s", "0.5"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{stderr}");
    assert!(stderr.contains("past its timeout"), "{stderr}");
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
}

#[test]
fn sigterm_kills_a_guest_that_does_not_block_it() {
    require_kvm!("bare micro-VM tests");
    let dir = tempfile::tempdir().expect("tempdir");
    let spin = test_elf(dir.path(), "spin", &[0xeb, 0xfe]);
    let child = Reap::new(bare_cmd(&spin, &["--timeout-s", "60"], &[]).stdin(Stdio::null()).spawn().expect("spawn"));
    std::thread::sleep(Duration::from_millis(300));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM to our own child");
    let status = child.into_inner().wait().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
}

#[test]
fn stats_json_names_the_kvm_kind_and_counts_syscalls() {
    require_kvm!("bare micro-VM tests");
    let dir = tempfile::tempdir().expect("tempdir");
    let stats = dir.path().join("stats.json");
    let out = run_bare(&workload(), &["--stats-json", stats.to_str().expect("utf8")], &["noop"]);
    assert!(out.status.success());
    let v: cvbench_microvm::stats::BareStats =
        serde_json::from_slice(&std::fs::read(&stats).expect("stats file")).expect("stats JSON");
    assert_eq!(v.kvm_kind, Some(cvbench_microvm::kvm_kind()));
    // noop: write READY, write the JSON line, exit_group.
    assert_eq!(v.syscalls, 3, "{v:?}");
}

/// `cvbench-vmm <mode> --config FILE` on a config `text`; the config is read before any VM exists.
fn run_with_config(mode: &str, text: Option<&str>) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("vmm-config.json");
    if let Some(text) = text {
        std::fs::write(&path, text).expect("write the config");
    }
    Command::new(vmm()).arg(mode).arg("--config").arg(&path).stdin(Stdio::null()).output().expect("spawn cvbench-vmm")
}

fn assert_config_refused(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "a bad config is a VMM error: {stderr}");
    assert!(stderr.contains("vmm-config.json") && stderr.contains(needle), "{stderr}");
}

#[test]
fn config_file_with_an_unknown_field_is_refused() {
    let out = run_with_config("bare", Some(r#"{"elf": "/bin/true", "argv": ["true"], "mem_gib": 1}"#));
    assert_config_refused(&out, "unknown field `mem_gib`");
    let out = run_with_config("linux", Some(r#"{"kernel": "/vmlinux", "cmdline": "quiet"}"#));
    assert_config_refused(&out, "unknown field `cmdline`");
}

#[test]
fn config_file_with_a_wrong_type_is_refused() {
    let out = run_with_config("bare", Some(r#"{"elf": "/bin/true", "argv": ["true"], "mem_mib": "512"}"#));
    assert_config_refused(&out, "invalid type");
    let out = run_with_config("linux", Some(r#"{"kernel": "/vmlinux", "vcpus": 300}"#));
    assert_config_refused(&out, "invalid value");
}

#[test]
fn missing_config_file_is_refused() {
    let out = run_with_config("bare", None);
    assert_config_refused(&out, "cannot read the config file");
}

#[test]
fn config_file_with_a_zero_timeout_is_refused_like_the_flag() {
    let out =
        run_with_config("bare", Some(r#"{"elf": "/bin/true", "argv": ["true"], "timeout": {"secs": 0, "nanos": 0}}"#));
    assert_config_refused(&out, "timeout must be positive");
    let out = run_with_config("linux", Some(r#"{"kernel": "/vmlinux", "timeout_ms": 0}"#));
    assert_config_refused(&out, "timeout_ms must be positive");
}

#[test]
fn config_file_and_vm_flags_do_not_mix() {
    let out = Command::new(vmm())
        .args(["bare", "--config", "/nonexistent.json", "--elf", "/bin/true"])
        .output()
        .expect("spawn cvbench-vmm");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"), "{out:?}");
}

#[test]
fn print_config_of_the_flags_is_what_config_takes() {
    let w = workload();
    let printed = Command::new(vmm())
        .arg("bare")
        .arg("--elf")
        .arg(&w)
        .args(["--mem-mib", "256", "--timeout-s", "30.000", "--print-config", "--", "noop"])
        .output()
        .expect("spawn cvbench-vmm");
    assert!(printed.status.success(), "{printed:?}");
    let config: cvbench_microvm::bare::BareConfig = serde_json::from_slice(&printed.stdout).expect("a BareConfig");
    assert_eq!(config.argv, [w.display().to_string(), "noop".to_string()]);
    assert_eq!(config.timeout, Some(Duration::from_secs(30)));
    assert_eq!(config.mem_mib, 256);
}

#[test]
fn noop_runs_from_a_config_file() {
    require_kvm!("bare micro-VM tests");
    let w = workload();
    let config = cvbench_microvm::bare::BareConfig {
        elf: w.clone(),
        argv: vec![w.display().to_string(), "noop".into()],
        env: Vec::new(),
        mem_mib: 256,
        timeout: Some(Duration::from_secs(60)),
        measure_memory: false,
        run_dir: None,
        max_file_mib: cvbench_microvm::bare::default_max_file_mib(),
        net: None,
        jail: true,
        selftest_forbidden_syscall: false,
        snapshot_to: None,
    };
    let out = run_with_config("bare", Some(&serde_json::to_string(&config).expect("serialise")));
    let (name, _) = shape(&out, "bare VM run from --config");
    assert_eq!(name, "noop");
}

/// Every vCPU of a VM starts from KVM's supported CPUID, asked once per VM: the cached table is
/// the one a fresh KVM_GET_SUPPORTED_CPUID returns, entry for entry, on every call.
#[test]
fn supported_cpuid_cached_per_vm_is_what_kvm_reports() {
    use cvbench_microvm::vstate::{KvmVm, Vm, VmOptions};
    require_kvm!("KVM's supported CPUID");
    let vm = KvmVm::new(VmOptions { irqchip: false }).expect("a VM");
    let fresh = vm.kvm().get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES).expect("supported CPUID");
    let first = vm.supported_cpuid().expect("first call");
    let second = vm.supported_cpuid().expect("second call");
    assert!(!fresh.as_slice().is_empty());
    assert_eq!(first.as_slice(), fresh.as_slice());
    assert_eq!(second.as_slice(), fresh.as_slice());
}
