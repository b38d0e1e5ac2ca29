//! The report's "Start from a snapshot" section: the restore-start scenario's cold starts
//! against restores (lazy and eager memory) of a micro-VM's waiting workload and against
//! the checkpointing containers' restores (gVisor, runc, cvbench-runtime), one row per backend
//! and start with where it was measured, a phase chart, the units that failed with their
//! first error, and density from one snapshot (private memory per waiting instance).

use std::fmt::Write as _;
use std::path::Path;

use super::charts::{self, PhaseBar, PhaseSegment, Point, When};
use super::Written;
use crate::record::RunRecord;
use crate::stats::median;

/// The restore-start report of the test host's run, relative to the report's directory; linked
/// from a report of this host's run when it is there.
const TESTHOST_REPORT: &str = "restore-start/testhost/REPORT.md";

/// The starts, in report order: (scenario name, row label).
const STARTS: [(&str, &str); 4] = [
    ("restore-start-cold", "cold start"),
    ("restore-start-lazy", "lazy restore"),
    ("restore-start-eager", "eager restore"),
    ("restore-start-restore", "restore (checkpoint)"),
];

fn ok<'a>(records: &'a [RunRecord], backend: &str, scenario: &str) -> Vec<&'a RunRecord> {
    records.iter().filter(|r| r.backend == backend && r.scenario == scenario && r.error.is_none()).collect()
}

/// The backends with restore-start records, in the report's backend order (foreign names last).
fn backends(records: &[RunRecord]) -> Vec<String> {
    let mut v: Vec<String> =
        records.iter().filter(|r| r.scenario.starts_with("restore-")).map(|r| r.backend.clone()).collect();
    v.sort_by_key(|b| {
        let pos = crate::backend::BackendId::ALL.iter().position(|id| id.name() == b.as_str());
        (pos.unwrap_or(usize::MAX), b.clone())
    });
    v.dedup();
    v
}

fn med(v: impl Iterator<Item = f64>) -> Option<f64> {
    median(&v.collect::<Vec<_>>())
}

fn phase_ms(r: &RunRecord, names: &[&str]) -> Option<f64> {
    r.host.phases.iter().find(|(n, _)| names.contains(&n.as_str())).map(|(_, ns)| *ns as f64 / 1e6)
}

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |x| format!("{x:.digits$}"))
}

/// Medians of each start's phases, for the chart.
fn phase_bars(records: &[RunRecord]) -> Vec<PhaseBar> {
    let mut bars = Vec::new();
    for backend in backends(records) {
        for (sc, start) in STARTS {
            let rs = ok(records, &backend, sc);
            let label = format!("{backend} · {start}");
            let ready = med(rs.iter().filter_map(|r| phase_ms(r, &["restore", "boot_to_ready"])));
            let first = med(rs.iter().filter_map(|r| phase_ms(r, &["go_to_first_output"])));
            let last = med(rs.iter().filter_map(|r| phase_ms(r, &["first_output_to_exit"])));
            // The chart labels each bar with its median launch→ready.
            let to_ready = med(rs.iter().filter_map(|r| r.host.launch_to_ready_ns.map(|n| n as f64 / 1e6)));
            if let (Some(a), Some(b), Some(c), Some(total_ms)) = (ready, first, last, to_ready) {
                // Laid end to end from launch: to ready, then (after READY) the go and the job.
                let seg = |name: &str, start: f64, len: f64, when: When| PhaseSegment {
                    name: name.into(),
                    start,
                    end: start + len,
                    when,
                };
                let segments = vec![
                    seg("to ready", 0.0, a, When::Before),
                    seg("go → first output", a, b, When::After),
                    seg("→ exit", a + b, c, When::After),
                ];
                let uncovered = (total_ms > a).then_some((a, total_ms));
                let ready = Point { x: 0.0, y: total_ms, lo: total_ms, hi: total_ms };
                bars.push(PhaseBar { label, segments, uncovered, ready });
            }
        }
    }
    bars
}

/// The section, or nothing when the result set has no restore-start records.
/// `emulated`: the result set was measured on an emulated CPU (the test host).
pub fn section(records: &[RunRecord], out: &Path, w: &mut Written, emulated: bool) -> String {
    if !records.iter().any(|r| r.scenario.starts_with("restore-")) {
        return String::new();
    }
    let place = if emulated { "test host ‡" } else { "this host" };
    let mut s = String::from("\n## Start from a snapshot\n\n");
    s.push_str(
        "A micro-VM's waiting workload (`wait-go`: READY, then a go line on stdin, then the job) booted cold \
         against restored from a snapshot taken where it waits: lazy restore maps the memory file `MAP_PRIVATE` \
         (pages fault in on first touch), eager restore reads it in first. A restored VM's \"ready\" is the \
         VMM's `restored` line (the guest printed READY before it was saved); a cold Linux guest's includes its \
         kernel's boot. The containers that \
         checkpoint (gVisor through `runsc checkpoint`, runc and cvbench-runtime through CRIU) run the same \
         waiting workload in the runtime's foreground `run`, checkpointed at READY; a restored container's \
         \"ready\" is the runtime's pid file after `restore`, its faults after restore are those of the \
         process tree under that pid (for gVisor the sandbox: sentry and stubs; gVisor's own getrusage reports \
         no page faults, so its job's faults read 0). Medians of the successful \
         units; \"where\" is the host the result set was measured on.\n\n",
    );
    s.push_str(
        "| backend | start | where | n | ready ms | exit ms | job ms | job's page faults | faults after restore | snapshot on disk KiB |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut failures = Vec::new();
    for backend in backends(records) {
        for (sc, label) in STARTS {
            let rs = ok(records, &backend, sc);
            // Units that ran and failed; the bench's placeholders for cells that do not apply
            // (never started: no start time) stay in the report's list of cells not run.
            let bad: Vec<&RunRecord> = records
                .iter()
                .filter(|r| r.backend == backend && r.scenario == sc && r.error.is_some() && !r.never_ran())
                .collect();
            if let Some(first) = bad.first() {
                failures.push(format!(
                    "- {backend} · {label}: {} of {} units failed; first error: {}",
                    bad.len(),
                    bad.len() + rs.len(),
                    first.error.as_deref().unwrap_or_default().lines().next().unwrap_or_default()
                ));
            }
            if rs.is_empty() {
                continue;
            }
            let get = |f: &dyn Fn(&RunRecord) -> Option<f64>| med(rs.iter().filter_map(|r| f(r)));
            let _ = writeln!(
                s,
                "| {backend} | {label} | {place} | {} | {} | {} | {} | {} | {} | {} |",
                rs.len(),
                cell(get(&|r| r.host.launch_to_ready_ns.map(|n| n as f64 / 1e6)), 1),
                cell(get(&|r| r.host.launch_to_exit_ns.map(|n| n as f64 / 1e6)), 1),
                cell(get(&|r| r.metrics.get("job_ns").map(|n| n / 1e6)), 1),
                cell(get(&|r| r.metrics.get("job_minflt").copied()), 0),
                cell(get(&|r| r.extra.get("minflt_after_restore").copied()), 0),
                cell(get(&|r| r.extra.get("snapshot_memory_disk_kib").copied()), 0),
            );
        }
    }
    if !failures.is_empty() {
        s.push_str("\nUnits that failed here (kept in the records with their error):\n\n");
        for f in failures {
            let _ = writeln!(s, "{f}");
        }
    }
    if !emulated && out.join(TESTHOST_REPORT).is_file() {
        let _ = write!(
            s,
            "\nThe starts that need hardware KVM (the Linux micro-VM, microvm) or CRIU (runc and \
             cvbench-runtime restore, where this host's kernel stops it) were measured in the test host, \
             whose CPU is emulated (its timings are not representative of any hardware; its ratios hold within \
             one boot): [{TESTHOST_REPORT}]({TESTHOST_REPORT}).\n"
        );
    }
    let bars = phase_bars(records);
    if !bars.is_empty() {
        let name = "restore-start";
        let r = charts::phases(
            &out.join(name),
            "cold boot vs restore → go → exit (mem-touch 16 MiB, medians; label: launch→ready)",
            &bars,
        );
        match r {
            Ok(files) => {
                w.files.extend(files);
                let _ = write!(s, "\n![{name}]({name}.svg)\n");
            }
            Err(e) => {
                w.chart_errors.push(format!("{name}: {e}"));
                let _ = write!(s, "\n(chart {name} not drawn: {e})\n");
            }
        }
    }
    s.push_str("\n### Density from one snapshot\n\n");
    s.push_str(
        "N instances waiting for their go line at once, booted cold or restored from the same memory file. \
         Private memory is `Private_Clean + Private_Dirty` of each VMM's smaps_rollup while all wait: the \
         snapshot file's page cache is shared between the restored instances and not counted.\n\n\
         For a container it is the sum over the process tree under the runtime's pid (for gVisor the \
         sandbox), the runtime process itself not counted.\n\n\
         | backend | start | instances | private KiB per instance | RSS KiB per instance |\n|---|---|---|---|---|\n",
    );
    let mut names: Vec<&str> =
        records.iter().filter(|r| r.scenario.starts_with("restore-density-")).map(|r| r.scenario.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for backend in backends(records) {
        for sc in &names {
            let rs = ok(records, &backend, sc);
            if rs.is_empty() {
                continue;
            }
            let label = if sc.contains("-lazy-") {
                "restored (lazy)"
            } else if sc.contains("-restore-") {
                "restored (checkpoint)"
            } else {
                "cold start"
            };
            let _ = writeln!(
                s,
                "| {backend} | {label} | {} | {} | {} |",
                rs.len(),
                cell(med(rs.iter().filter_map(|r| r.extra.get("waiting_private_kib").copied())), 0),
                cell(med(rs.iter().filter_map(|r| r.footprint.rss_kib.map(|k| k as f64))), 0),
            );
        }
    }
    if records.iter().any(|r| r.scenario.starts_with("restore-") && r.extra.get("kvm_software_pvm") == Some(&1.0)) {
        s.push_str(
            "\nMeasured under kvm_pvm (software nested KVM): the guest's first touch of a page is a shadow \
             page-table fill, far slower than on hardware KVM.\n",
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(scenario: &str, ready_ms: u64, extra: &[(&str, f64)]) -> RunRecord {
        let mut r = RunRecord { scenario: scenario.into(), backend: "microvm-bare".into(), ..Default::default() };
        r.host.launch_to_ready_ns = Some(ready_ms * 1_000_000);
        r.host.launch_to_exit_ns = Some((ready_ms + 100) * 1_000_000);
        r.extra = extra.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        r
    }

    #[test]
    fn the_test_host_report_is_linked_only_when_it_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let rs = vec![rec("restore-start-cold", 30, &[])];
        let without = section(&rs, dir.path(), &mut Written::default(), false);
        assert!(!without.contains(TESTHOST_REPORT), "{without}");
        std::fs::create_dir_all(dir.path().join("restore-start/testhost")).unwrap();
        std::fs::write(dir.path().join(TESTHOST_REPORT), "# test host\n").unwrap();
        let with = section(&rs, dir.path(), &mut Written::default(), false);
        assert!(with.contains(&format!("[{TESTHOST_REPORT}]({TESTHOST_REPORT})")), "{with}");
        // The test host's own report does not link to itself.
        assert!(!section(&rs, dir.path(), &mut Written::default(), true).contains(TESTHOST_REPORT));
    }

    #[test]
    fn no_restore_records_no_section() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(section(&[rec("startup-serial", 5, &[])], dir.path(), &mut Written::default(), false), "");
    }

    #[test]
    fn the_table_holds_each_start_median_and_the_density_rows() {
        let dir = tempfile::tempdir().unwrap();
        let rs = vec![
            rec("restore-start-cold", 30, &[]),
            rec("restore-start-lazy", 10, &[("minflt_after_restore", 4000.0)]),
            rec("restore-start-lazy", 20, &[("minflt_after_restore", 5000.0)]),
            rec("restore-density-lazy-5", 10, &[("waiting_private_kib", 548.0)]),
        ];
        let s = section(&rs, dir.path(), &mut Written::default(), false);
        assert!(s.contains("| microvm-bare | cold start | this host | 1 | 30.0 | 130.0 |"), "{s}");
        assert!(s.contains("| microvm-bare | lazy restore | this host | 2 | 15.0 | 115.0 | — | — | 4500 |"), "{s}");
        assert!(s.contains("| microvm-bare | restored (lazy) | 1 | 548 |"), "{s}");
    }

    #[test]
    fn container_rows_are_per_backend_say_where_and_list_failures() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = rec("restore-start-restore", 200, &[("minflt_after_restore", 800.0)]);
        g.backend = "gvisor".into();
        let mut r = rec("restore-start-restore", 1, &[]);
        r.backend = "runc".into();
        r.started_unix_ms = 1;
        r.error = Some("runc checkpoint failed (exit Some(1)): criu failed".into());
        let mut na = rec("restore-start-lazy", 0, &[]);
        na.backend = "gvisor".into();
        na.error = Some("gvisor has one restore".into());
        let s = section(&[g, r, na], dir.path(), &mut Written::default(), true);
        assert!(!s.contains("gvisor has one restore"), "a cell that does not apply is no failed unit: {s}");
        assert!(s.contains("| gvisor | restore (checkpoint) | test host ‡ | 1 | 200.0 |"), "{s}");
        assert!(!s.contains("| runc |"), "{s}");
        assert!(
            s.contains("- runc · restore (checkpoint): 1 of 1 units failed; first error: runc checkpoint failed"),
            "{s}"
        );
    }
}
