//! A `--quick` run of the whole matrix through the CLI on native and, once it
//! is registered and can run here, our container backend: every scenario
//! family yields records, native's succeed, and the report is written.

use std::collections::BTreeSet;
use std::process::Command;

use cvbench::backend::by_name;
use cvbench::results::ResultSet;

#[test]
fn quick_matrix_on_native_and_container_writes_a_report() {
    if !cvbench_testkit::require_root("the quick matrix (containers, cgroups)") {
        return;
    }
    let mut backends = vec!["native"];
    match by_name("container") {
        Ok(b) => match b.check() {
            Ok(()) => backends.push("container"),
            Err(e) => eprintln!("SKIPPED (container part): container cannot run here: {e}"),
        },
        Err(e) => eprintln!("SKIPPED (container part): {e} — the container backend is not registered yet"),
    }
    let dir = tempfile::tempdir().unwrap();
    let (results, reports) = (dir.path().join("results"), dir.path().join("reports"));
    let status = Command::new(env!("CARGO_BIN_EXE_cvbench"))
        .args(["bench", "--quick", "--backends", &backends.join(",")])
        .arg("--results")
        .arg(&results)
        .arg("--out")
        .arg(&reports)
        .status()
        .unwrap();
    assert!(status.success(), "cvbench bench exited with {status}");

    let set = ResultSet::read_dir(&results).unwrap();
    for b in &backends {
        let families: BTreeSet<&str> = set
            .records
            .iter()
            .filter(|r| r.backend == *b && r.error.is_none())
            .map(|r| cvbench::report::aggregate::family_of(&r.scenario))
            .collect();
        for f in cvbench::bench::plan::FAMILIES {
            if cvbench::bench::plan::QUICK_OPT_IN.contains(f) {
                continue; // not in the default quick matrix (tests/bench_images.rs covers them)
            }
            assert!(
                families.contains(f),
                "{b}: no successful {f} record; errors: {:?}",
                set.records.iter().filter(|r| r.backend == *b).filter_map(|r| r.error.as_deref()).collect::<Vec<_>>()
            );
        }
    }
    let native_failures: Vec<&str> =
        set.records.iter().filter(|r| r.backend == "native").filter_map(|r| r.error.as_deref()).collect();
    assert!(native_failures.is_empty(), "{native_failures:?}");
    let md = std::fs::read_to_string(reports.join("REPORT.md")).unwrap();
    assert!(md.contains("| native |"));
    assert!(reports.join("results.csv").is_file());
    // The design is recorded: the seed and one order per round.
    let design = set.manifest.design.as_ref().expect("bench manifests record their design");
    assert!(!design.orders.is_empty());
    // The raw set beside the report regenerates it byte for byte.
    let again = dir.path().join("again");
    let status = Command::new(env!("CARGO_BIN_EXE_cvbench"))
        .args(["report", "--in"])
        .arg(reports.join("run"))
        .arg("--out")
        .arg(&again)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read(again.join("REPORT.md")).unwrap(), md.as_bytes());
}
