//! The report's "Start from a snapshot" section: the restore-start scenario's cold starts
//! against restores (lazy and eager memory) of a micro-VM's waiting workload, with a phase
//! chart, and density from one snapshot (private memory per waiting instance); one part per
//! backend that has such records (microvm-bare, microvm).

use std::fmt::Write as _;
use std::path::Path;

use super::charts::{self, PhaseBar, PhaseSegment, Point, When};
use super::Written;
use crate::record::RunRecord;
use crate::stats::median;

/// The three starts, in report order: (scenario name, row label).
const STARTS: [(&str, &str); 3] = [
    ("restore-start-cold", "cold boot"),
    ("restore-start-lazy", "lazy restore"),
    ("restore-start-eager", "eager restore"),
];

fn ok<'a>(records: &'a [RunRecord], scenario: &str) -> Vec<&'a RunRecord> {
    records.iter().filter(|r| r.scenario == scenario && r.error.is_none()).collect()
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
    for (sc, label) in STARTS {
        let rs = ok(records, sc);
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
            bars.push(PhaseBar { label: label.into(), segments, uncovered, ready });
        }
    }
    bars
}

/// The section, or nothing when the result set has no restore-start records.
pub fn section(records: &[RunRecord], out: &Path, w: &mut Written) -> String {
    if !records.iter().any(|r| r.scenario.starts_with("restore-")) {
        return String::new();
    }
    let mut s = String::from("\n## Start from a snapshot\n\n");
    s.push_str(
        "A micro-VM's waiting workload (`wait-go`: READY, then a go line on stdin, then the job) booted cold \
         against restored from a snapshot taken where it waits: lazy restore maps the memory file `MAP_PRIVATE` \
         (pages fault in on first touch), eager restore reads it in first. A restored VM's \"ready\" is the \
         VMM's `restored` line (the guest printed READY before it was saved); a cold Linux guest's includes its \
         kernel's boot. Medians of the successful units.\n",
    );
    let mut backends: Vec<&str> =
        records.iter().filter(|r| r.scenario.starts_with("restore-")).map(|r| r.backend.as_str()).collect();
    backends.sort_unstable();
    backends.dedup();
    for b in backends {
        let mine: Vec<RunRecord> = records.iter().filter(|r| r.backend == b).cloned().collect();
        s.push_str(&backend_part(&mine, b, out, w));
    }
    s
}

/// One backend's table, chart and density rows.
fn backend_part(records: &[RunRecord], backend: &str, out: &Path, w: &mut Written) -> String {
    let mut s = format!("\n### {}\n\n", if backend.is_empty() { "(unnamed backend)" } else { backend });
    s.push_str(
        "| start | n | ready ms | exit ms | job ms | job's page faults | VMM faults after restore | snapshot on disk KiB |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (sc, label) in STARTS {
        let rs = ok(records, sc);
        let get = |f: &dyn Fn(&RunRecord) -> Option<f64>| med(rs.iter().filter_map(|r| f(r)));
        let _ = writeln!(
            s,
            "| {label} | {} | {} | {} | {} | {} | {} | {} |",
            rs.len(),
            cell(get(&|r| r.host.launch_to_ready_ns.map(|n| n as f64 / 1e6)), 1),
            cell(get(&|r| r.host.launch_to_exit_ns.map(|n| n as f64 / 1e6)), 1),
            cell(get(&|r| r.metrics.get("job_ns").map(|n| n / 1e6)), 1),
            cell(get(&|r| r.metrics.get("job_minflt").copied()), 0),
            cell(get(&|r| r.extra.get("minflt_after_restore").copied()), 0),
            cell(get(&|r| r.extra.get("snapshot_memory_disk_kib").copied()), 0),
        );
    }
    let bars = phase_bars(records);
    if !bars.is_empty() {
        // microvm-bare's chart keeps the name it had when it was the only one.
        let name = if backend == "microvm-bare" || backend.is_empty() {
            "restore-start".into()
        } else {
            format!("restore-start-{backend}")
        };
        let name = name.as_str();
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
    s.push_str("\n#### Density from one snapshot\n\n");
    s.push_str(
        "N instances waiting for their go line at once, booted cold or restored from the same memory file. \
         Private memory is `Private_Clean + Private_Dirty` of each VMM's smaps_rollup while all wait: the \
         snapshot file's page cache is shared between the restored instances and not counted.\n\n\
         | start | instances | private KiB per instance | RSS KiB per instance |\n|---|---|---|---|\n",
    );
    let mut names: Vec<&str> =
        records.iter().filter(|r| r.scenario.starts_with("restore-density-")).map(|r| r.scenario.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for sc in names {
        let rs = ok(records, sc);
        let label = if sc.contains("-lazy-") { "restored (lazy)" } else { "cold boot" };
        let _ = writeln!(
            s,
            "| {label} | {} | {} | {} |",
            rs.len(),
            cell(med(rs.iter().filter_map(|r| r.extra.get("waiting_private_kib").copied())), 0),
            cell(med(rs.iter().filter_map(|r| r.footprint.rss_kib.map(|k| k as f64))), 0),
        );
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
        let mut r = RunRecord { scenario: scenario.into(), ..Default::default() };
        r.host.launch_to_ready_ns = Some(ready_ms * 1_000_000);
        r.host.launch_to_exit_ns = Some((ready_ms + 100) * 1_000_000);
        r.extra = extra.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        r
    }

    #[test]
    fn each_backend_gets_its_own_table() {
        let dir = tempfile::tempdir().unwrap();
        let mut bare = rec("restore-start-lazy", 10, &[]);
        bare.backend = "microvm-bare".into();
        let mut linux = rec("restore-start-lazy", 400, &[]);
        linux.backend = "microvm".into();
        let s = section(&[bare, linux], dir.path(), &mut Written::default());
        // Backends in name order: microvm's part ends where microvm-bare's begins.
        let (l, b) = (s.find("### microvm\n").unwrap(), s.find("### microvm-bare").unwrap());
        assert!(l < b, "{s}");
        let (linux_part, bare_part) = (&s[l..b], &s[b..]);
        assert!(linux_part.contains("| lazy restore | 1 | 400.0 |") && !linux_part.contains("| 10.0 |"), "{s}");
        assert!(bare_part.contains("| lazy restore | 1 | 10.0 |") && !bare_part.contains("| 400.0 |"), "{s}");
    }

    #[test]
    fn no_restore_records_no_section() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(section(&[rec("startup-serial", 5, &[])], dir.path(), &mut Written::default()), "");
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
        let s = section(&rs, dir.path(), &mut Written::default());
        assert!(s.contains("| cold boot | 1 | 30.0 | 130.0 |"), "{s}");
        assert!(s.contains("| lazy restore | 2 | 15.0 | 115.0 | — | — | 4500 |"), "{s}");
        assert!(s.contains("| restored (lazy) | 1 | 548 |"), "{s}");
    }
}
