//! The course labs stay runnable: every `cvbench …` command quoted in a lab
//! handout must parse with the real CLI, every lab has its answer key and an
//! index entry, and every `cvbench lab N --quick` runs here (as root), exiting
//! 0, or 3 with a printed reason for what this machine cannot show.

use std::path::{Path, PathBuf};
use std::process::Command;

const LABS: [&str; 7] = [
    "01-namespaces",
    "02-cgroups",
    "03-images-overlayfs",
    "04-vm-from-scratch",
    "05-booting-linux",
    "06-overhead-study",
    "07-orchestration",
];

fn labs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("labs")
}

fn cvbench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cvbench"))
}

fn handouts() -> Vec<PathBuf> {
    let mut v = vec![labs_dir().join("README.md")];
    v.extend(LABS.iter().map(|l| labs_dir().join(l).join("README.md")));
    v
}

#[test]
fn every_lab_has_a_handout_an_answer_key_and_an_index_entry() {
    let index = std::fs::read_to_string(labs_dir().join("README.md")).expect("labs/README.md");
    for l in LABS {
        let dir = labs_dir().join(l);
        for f in ["README.md", "ANSWERS.md"] {
            let p = dir.join(f);
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(text.len() > 1000, "{} is too short to be a lab", p.display());
        }
        assert!(index.contains(&format!("({l}/README.md)")), "labs/README.md does not link {l}");
    }
}

#[test]
fn handouts_hold_no_unfilled_figures() {
    for p in handouts() {
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(!text.contains("<<FILL"), "{} still has a <<FILL placeholder", p.display());
    }
}

#[test]
fn every_cvbench_command_in_the_handouts_parses() {
    let out = cvbench()
        .args(["lab", "check-commands"])
        .args(handouts())
        .output()
        .expect("running cvbench lab check-commands");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "a quoted command no longer parses:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checked: usize =
        stdout.lines().last().and_then(|l| l.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(checked >= 30, "only {checked} commands found: the extractor lost them\n{stdout}");
}

#[test]
fn command_checker_rejects_a_command_that_does_not_parse() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("bad.md");
    std::fs::write(&md, "```sh\ncvbench run --backend native --wrokload noop\n```\n").unwrap();
    let out = cvbench().args(["lab", "check-commands"]).arg(&md).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--wrokload"));
}

fn run_lab(n: u8) {
    if !cvbench_testkit::require_root(&format!("cvbench lab {n} --quick (containers, cgroups, /dev/kvm)")) {
        return;
    }
    let out = cvbench().args(["lab", &n.to_string(), "--quick"]).output().expect("running cvbench lab");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => println!("{stdout}"),
        Some(3) => {
            let reasons: Vec<&str> = stdout.lines().filter(|l| l.starts_with("CANNOT SHOW HERE")).collect();
            assert!(!reasons.is_empty(), "exit 3 without a reason:\n{stdout}");
            eprintln!("SKIPPED (part of lab {n}): this machine cannot show it:");
            for r in reasons {
                eprintln!("  {r}");
            }
            println!("{stdout}");
        }
        other => panic!("cvbench lab {n} --quick exited {other:?}\n{stdout}\n{stderr}"),
    }
}

#[test]
fn lab_1_namespaces_runs() {
    run_lab(1);
}

#[test]
fn lab_2_cgroups_runs() {
    run_lab(2);
}

#[test]
fn lab_3_images_runs() {
    run_lab(3);
}

#[test]
fn lab_4_bare_vm_runs() {
    run_lab(4);
}

#[test]
fn lab_5_linux_boot_runs() {
    run_lab(5);
}

#[test]
fn lab_6_overhead_study_runs() {
    run_lab(6);
}

#[test]
fn lab_7_orchestration_runs() {
    run_lab(7);
}

#[test]
fn lab_8_security_runs() {
    run_lab(8);
}
