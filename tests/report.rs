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
    let row = md.lines().find(|l| l.starts_with("| startup-serial | noop launch→READY")).unwrap();
    assert!(row.contains("| 0.496 ms |"), "{row}");
    assert!(row.contains("**×62.8** 31.2 ms"), "{row}");
    assert!(row.contains("**×968** 480 ms"), "{row}");
    assert!(row.ends_with("✗ failed |"), "{row}");
    // Docker's phases come from its event stream.
    assert!(md.contains("containerd+shim+runc→start"));
    // The backend that cannot run here is listed with its reason.
    assert!(md.contains("**qemu** — "));
    assert!(md.contains("guest kernel not built"));
    assert!(md.contains("| syscall | getppid (ns/call) ↓ |"));

    if written.chart_errors.is_empty() {
        for f in ["startup.svg", "startup.png", "ratios.svg", "ratios.png"] {
            let len = std::fs::metadata(out.path().join(f)).map(|m| m.len()).unwrap_or(0);
            assert!(len > 1000, "{f} is {len} bytes");
        }
        assert!(md.contains("![startup distributions](startup.svg)"));
    } else {
        eprintln!("SKIPPED chart checks: {:?}", written.chart_errors);
        assert!(md.contains("chart not drawn"));
    }
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
        r.host.launch_to_ready_ns = r.host.launch_to_ready_ns.map(|v| v * 2);
    }
    let md = report::compare::render(&a, &b, "A", "B");
    let row = md.lines().find(|l| l.starts_with("| startup-serial | noop launch→READY (ms) | crun |")).unwrap();
    assert!(row.contains("| 31.2 | 62.3 | +100% (worse) |"), "{row}");
}
