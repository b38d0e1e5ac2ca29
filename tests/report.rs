//! Report generation from the committed fixture result set
//! (`tests/fixtures/results-small`: a real quick run of native, crun and
//! docker on this machine, with qemu unavailable), and the comparison of two
//! result sets.

use std::path::{Path, PathBuf};

use cvbench::report;
use cvbench::results::{read_csv, read_json_export, ResultSet};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/results-small")
}

#[test]
fn report_from_fixture_has_ratios_breakdown_and_the_unavailable_backend() {
    let set = ResultSet::read_dir(&fixture()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let written = report::generate(&set, out.path()).unwrap();
    let md = std::fs::read_to_string(out.path().join("REPORT.md")).unwrap();

    // Medians of the fixture worked out by hand: native 0.496 ms, crun 31.17 ms, docker 480.2 ms.
    // Paired per round (geometric mean of crun ÷ native of the same round): ×39.0 and ×672, lower
    // than the ratio of medians because native's round 4 took 3.72 ms. Five rounds are too few to
    // judge: no bold, said so.
    let row = md.lines().find(|l| l.starts_with("| startup-serial | noop launch→READY")).unwrap();
    assert!(row.contains("| 0.496 ms ["), "{row}");
    assert!(row.contains("×39.0 (×"), "{row}");
    assert!(row.contains("· 31.2 ms ["), "{row}");
    assert!(row.contains("×672 (×"), "{row}");
    assert!(row.contains("5 rounds: not judged"), "{row}");
    assert!(!row.contains("**"), "{row}");
    // qemu could not run on the fixture's host: its cells were never started, so "—", not a failure.
    assert!(row.ends_with("| — |"), "{row}");
    assert!(md.contains("† = measured under software nested KVM (kvm_pvm)"));
    assert!(!row.contains("crun †") && !row.contains("ms [477–554] n=5 †"), "{row}");
    // The lecture's claims are checked against the run, absent backends said so.
    let claims = md.split("## What the lecture says, checked").nth(1).unwrap();
    assert!(claims.contains("not measured in this run (no container-nomemcg cells"), "{claims}");
    let cpu = md.lines().find(|l| l.starts_with("| cpu | SHA-256")).unwrap();
    assert!(!cpu.contains("**"), "{cpu}");
    assert!(cpu.contains("3 rounds: not judged"), "{cpu}");
    // The summary is computed, comes first, and says the quick run is too small to judge.
    let summary = md.split("## Summary\n\n").nth(1).and_then(|s| s.lines().next()).unwrap();
    assert!(summary.starts_with("This run is too small to judge"), "{summary}");
    assert!(summary.contains("natively 0.496 ms"), "{summary}");
    assert!(summary.contains("qemu could not run here"), "{summary}");
    assert!(md.contains("**This run is too small to judge**"), "{md}");
    // Every backend's path and what it exec'd.
    assert!(md.contains("| crun | `crun run` on a generated OCI bundle |"));
    // Docker's phases come from its event stream.
    assert!(md.contains("containerd+shim+runc→start"));
    // The backend that cannot run here is listed with its reason.
    assert!(md.contains("**qemu** — "));
    assert!(md.contains("guest kernel not built"));
    assert!(md.contains("| syscall | getppid (ns/call) ↓ |"));

    if written.chart_errors.is_empty() {
        for f in ["startup.svg", "startup.png", "ratios.svg", "ratios.png", "startup-phases.svg"] {
            let len = std::fs::metadata(out.path().join(f)).map(|m| m.len()).unwrap_or(0);
            assert!(len > 1000, "{f} is {len} bytes");
        }
        assert!(md.contains("![startup distributions](startup.svg)"));
        // crun keeps its colour in every chart that shows it.
        for f in ["startup.svg", "ratios.svg"] {
            let svg = std::fs::read_to_string(out.path().join(f)).unwrap();
            assert!(svg.contains("#2CA02C"), "{f} lacks crun's colour");
        }
    } else {
        eprintln!("SKIPPED chart checks: {:?}", written.chart_errors);
        assert!(md.contains("chart not drawn"));
    }
}

#[test]
fn report_regenerates_byte_for_byte() {
    let set = ResultSet::read_dir(&fixture()).unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let wa = report::generate(&set, a.path()).unwrap();
    report::generate(&set, b.path()).unwrap();
    assert!(wa.files.len() >= 3);
    for f in &wa.files {
        let name = f.file_name().unwrap();
        let (x, y) = (std::fs::read(a.path().join(name)).unwrap(), std::fs::read(b.path().join(name)).unwrap());
        assert!(x == y, "{} differs between two generations", name.to_string_lossy());
    }
}

#[test]
fn truncated_fixture_is_refused_with_its_line() {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(fixture().join("manifest.json"), d.path().join("manifest.json")).unwrap();
    let text = std::fs::read_to_string(fixture().join("records.jsonl")).unwrap();
    let cut = text.trim_end().len() - 25;
    std::fs::write(d.path().join("records.jsonl"), &text[..cut]).unwrap();
    let err = ResultSet::read_dir(d.path()).unwrap_err().to_string();
    assert!(err.contains("is truncated"), "{err}");
}

#[test]
fn exports_round_trip_and_keep_failed_rows() {
    let set = ResultSet::read_dir(&fixture()).unwrap();
    let out = tempfile::tempdir().unwrap();
    set.export(out.path()).unwrap();
    let rows = read_csv(&out.path().join("results.csv")).unwrap();
    let json = read_json_export(&out.path().join("results.json")).unwrap();
    assert_eq!(json.rows, rows);
    assert_eq!(json.records, set.records);
    assert_eq!(rows.iter().filter(|r| r.backend == "qemu" && r.error.is_some()).count(), 3);
}

#[test]
fn compare_reports_change_per_cell() {
    let a = ResultSet::read_dir(&fixture()).unwrap();
    let mut b = a.clone();
    for r in b.records.iter_mut().filter(|r| r.backend == "crun" && r.scenario == "startup-serial") {
        r.host.launch_to_ready_ns = r.host.launch_to_ready_ns.map(|v| v * 3);
    }
    let md = report::compare::render(&a, &b, "A", "B");
    let row = md.lines().find(|l| l.starts_with("| startup-serial | noop launch→READY (ms) | crun |")).unwrap();
    assert!(row.contains("| 31.2 | 93.5 | +200% (worse) | **moved** |"), "{row}");
}

/// `cvbench report --compare <fixture> <fixture> [extra...]`, run in `cwd`.
fn cvbench_compare(cwd: &Path, extra: &[&Path]) -> std::process::Output {
    let fx = fixture();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cvbench"))
        .current_dir(cwd)
        .arg("report")
        .arg("--compare")
        .args([&fx, &fx])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cvbench report --compare failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn compare_without_out_prints_to_stdout_and_writes_nothing() {
    let cwd = tempfile::tempdir().unwrap();
    let o = cvbench_compare(cwd.path(), &[]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("| startup-serial | noop launch→READY (ms) | crun |"), "{stdout}");
    assert!(entries(cwd.path()).is_empty(), "wrote {:?} without --out", entries(cwd.path()));
}

#[test]
fn compare_out_dir_gets_compare_md_and_out_file_is_written_as_named() {
    let tmp = tempfile::tempdir().unwrap();
    let stdout_md = String::from_utf8(cvbench_compare(tmp.path(), &[]).stdout).unwrap();
    let existing = tmp.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    let new_dir = tmp.path().join("new/dir");
    let file = tmp.path().join("elsewhere/cmp.md");

    for (out, written) in
        [(&existing, existing.join("COMPARE.md")), (&new_dir, new_dir.join("COMPARE.md")), (&file, file.clone())]
    {
        let o = cvbench_compare(tmp.path(), &[Path::new("--out"), out]);
        assert_eq!(std::fs::read_to_string(&written).unwrap(), stdout_md, "--out {}", out.display());
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("compare: {}", written.display()));
    }
    assert_eq!(entries(tmp.path()), ["elsewhere", "existing", "new"]);
}

#[test]
fn compare_out_under_a_file_fails_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("plain-file");
    std::fs::write(&blocker, "x").unwrap();
    let fx = fixture();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_cvbench"))
        .arg("report")
        .arg("--compare")
        .args([&fx, &fx])
        .arg("--out")
        .arg(blocker.join("sub"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&blocker.display().to_string()), "{err}");
}
