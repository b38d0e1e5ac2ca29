//! The `cvbench` command line as a newcomer meets it: exit codes 0/1/2/3, the
//! new flags, completions, and the set-up scripts stopping with the install
//! instruction when there is no Rust toolchain on PATH.

use std::path::Path;
use std::process::{Command, Output};

fn cvbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cvbench")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_successful_run_exits_0() {
    let o = cvbench(&["run", "-b", "native", "-w", "noop"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn a_failed_run_exits_1_and_still_prints_its_record() {
    // The workload rejects an unknown flag with its usage text and exit 2.
    let o = cvbench(&["run", "-b", "native", "-w", "noop", "--format", "json", "--", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let rec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(rec["error"].is_string(), "{rec}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["run", "-b", "teleport", "-w", "noop"][..],
        &["run", "-b", "native", "-w", "warp"],
        &["run", "-b", "native", "-w", "noop", "--timeout", "5 parsecs"],
        &["run", "-b", "native", "-w", "noop", "--timeout", "0s"],
        &["run", "-b", "native", "-w", "noop", "--runs", "0"],
        &["run", "-b", "native", "-w", "noop", "--format", "yaml"],
    ] {
        let o = cvbench(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
    }
}

#[test]
fn a_backend_this_host_cannot_run_exits_3_with_the_fix() {
    let o = Command::new(env!("CARGO_BIN_EXE_cvbench"))
        .args(["run", "-b", "microvm-bare", "-w", "noop"])
        .env("CVBENCH_VMM", "/nonexistent/cvbench-vmm")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("cannot run on this host") && t.contains("fix: cargo build"), "{t}");
}

#[test]
fn help_documents_the_exit_codes() {
    for args in [&["--help"][..], &["run", "--help"], &["doctor", "--help"]] {
        let t = text(&cvbench(args));
        assert!(t.contains("Exit codes:") && t.contains("3    this host cannot run"), "{args:?}: {t}");
    }
}

#[test]
fn runs_with_a_baseline_print_the_hyperfine_summary() {
    let o = cvbench(&["run", "-b", "native", "-w", "noop", "--runs", "3", "--warmup", "1", "--baseline", "native"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(t.contains("Time (mean ± σ):") && t.contains("Range (min … max):"), "{t}");
    assert!(t.contains("native · noop ran") && t.contains("times"), "{t}");
    assert_eq!(t.matches("3 runs\n").count(), 2, "{t}");
}

#[test]
fn json_format_prints_one_record_per_run() {
    let o = cvbench(&["run", "-b", "native", "-w", "noop", "--runs", "2", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["iteration"], 1);
}

#[test]
fn doctor_lists_a_verdict_per_backend() {
    let o = cvbench(&["doctor", "--format", "json"]);
    let checks: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for b in cvbench::backend::ALL {
        let name = format!("backend {b}");
        assert!(checks.as_array().unwrap().iter().any(|c| c["name"] == name.as_str()), "{name} missing");
    }
}

#[test]
fn completions_are_generated_for_bash() {
    let o = cvbench(&["completions", "bash"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("microvm-bare"));
}

/// PATH without any directory that holds cargo.
fn path_without_cargo() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs: Vec<_> = std::env::split_paths(&path).filter(|d| !d.join("cargo").exists()).collect();
    std::env::join_paths(dirs).unwrap().into_string().unwrap()
}

#[test]
fn scripts_stop_with_the_install_instruction_without_cargo() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for script in ["scripts/install-deps", "scripts/bench", "scripts/test"] {
        let o = Command::new(root.join(script)).env("PATH", path_without_cargo()).current_dir(root).output().unwrap();
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{script}: {t}");
        assert!(t.contains("sh.rustup.rs") && t.contains("too old"), "{script}: {t}");
    }
}

/// A fake toolchain in a temp dir: `rustc` reports `version`, `cargo fmt` and
/// `cargo clippy` fail (components missing), `rustup` logs its arguments.
fn fake_toolchain(version: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("rustup.log");
    let scripts = [
        ("rustc", format!("#!/bin/sh\necho 'rustc {version} (fake)'\n")),
        ("cargo", "#!/bin/sh\ncase \"$1\" in fmt|clippy) exit 1;; esac\nexit 0\n".to_string()),
        ("rustup", format!("#!/bin/sh\necho \"$@\" >> {}\n", log.display())),
    ];
    for (name, body) in scripts {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

fn install_deps_with(toolchain: &Path) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = format!("{}:{}", toolchain.display(), path_without_cargo());
    Command::new(root.join("scripts/install-deps")).env("PATH", path).current_dir(root).output().unwrap()
}

#[test]
fn install_deps_adds_rustfmt_and_clippy_through_rustup() {
    let tc = fake_toolchain("1.95.0");
    let o = install_deps_with(tc.path());
    let log = std::fs::read_to_string(tc.path().join("rustup.log")).unwrap_or_default();
    assert_eq!(log.trim(), "component add rustfmt clippy", "{}", text(&o));
}

#[test]
fn install_deps_stops_on_a_too_old_rustc() {
    let tc = fake_toolchain("1.63.0");
    let o = install_deps_with(tc.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("older than"), "{}", text(&o));
}
