//! Result sets on disk: a directory holding `manifest.json` (the environment)
//! and `records.jsonl` (one `RunRecord` per line, appended as runs finish),
//! and their flat exports: `results.csv` (one row per record and metric) and
//! `results.json` (manifest, records and rows).

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::env::Manifest;
use crate::record::{RunRecord, SCHEMA_VERSION};

/// Version of the flat row format (`results.csv` / `results.json`).
pub const ROWS_VERSION: u32 = 1;

pub const MANIFEST: &str = "manifest.json";
pub const RECORDS: &str = "records.jsonl";

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("reading {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("writing {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("parsing {path} line {line}")]
    ParseRecord {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("parsing {0}")]
    ParseJson(PathBuf, #[source] serde_json::Error),
    #[error("serialising for {0}")]
    Serialise(PathBuf, #[source] serde_json::Error),
    #[error("CSV {0}")]
    Csv(PathBuf, #[source] csv::Error),
    #[error("{0} is not a result set: it has no {MANIFEST} (write one with `cvbench bench`)")]
    NotAResultSet(PathBuf),
    #[error("{0} has no {RECORDS}: the result set is incomplete")]
    MissingRecords(PathBuf),
    #[error("{path} line {line} is truncated (the run was interrupted while writing it?); remove that line to use the records before it")]
    Truncated { path: PathBuf, line: usize },
    #[error("{path} line {line} has schema version {found}; this cvbench reads version {SCHEMA_VERSION} only")]
    UnknownSchema { path: PathBuf, line: usize, found: u64 },
    #[error("{0} holds no records")]
    Empty(PathBuf),
}

/// A manifest and every record measured under it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultSet {
    pub manifest: Manifest,
    pub records: Vec<RunRecord>,
}

/// One flat row: a single figure of a single record. A failed record with no
/// figures still gets one row (empty metric) so its error is kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    pub rows_version: u32,
    pub env_id: String,
    pub backend: String,
    pub scenario: String,
    pub workload: String,
    pub iteration: u32,
    pub started_unix_ms: u64,
    /// `host.*`, `phase.*`, `footprint.*`, `workload.*` or `extra.*`.
    pub metric: String,
    pub value: Option<f64>,
    pub error: Option<String>,
}

/// Every figure of a record as (metric, value), in a stable order.
pub fn figures(r: &RunRecord) -> Vec<(String, f64)> {
    let mut v = Vec::new();
    if let Some(ns) = r.host.launch_to_ready_ns {
        v.push(("host.launch_to_ready_ns".to_string(), ns as f64));
    }
    if let Some(ns) = r.host.launch_to_exit_ns {
        v.push(("host.launch_to_exit_ns".to_string(), ns as f64));
    }
    for (name, ns) in &r.host.phases {
        v.push((format!("phase.{name}_ns"), *ns as f64));
    }
    let f = &r.footprint;
    for (name, val) in [("peak_rss_kib", f.peak_rss_kib), ("rss_kib", f.rss_kib), ("pss_kib", f.pss_kib)] {
        if let Some(k) = val {
            v.push((format!("footprint.{name}"), k as f64));
        }
    }
    v.extend(r.metrics.iter().map(|(k, x)| (format!("workload.{k}"), *x)));
    v.extend(r.extra.iter().map(|(k, x)| (format!("extra.{k}"), *x)));
    v
}

/// Flatten records into rows.
pub fn rows(records: &[RunRecord]) -> Vec<Row> {
    let mut out = Vec::new();
    for r in records {
        let row = |metric: String, value: Option<f64>| Row {
            rows_version: ROWS_VERSION,
            env_id: r.env_id.clone(),
            backend: r.backend.clone(),
            scenario: r.scenario.clone(),
            workload: r.workload.clone(),
            iteration: r.iteration,
            started_unix_ms: r.started_unix_ms,
            metric,
            value,
            error: r.error.clone(),
        };
        let figs = figures(r);
        if figs.is_empty() {
            out.push(row(String::new(), None));
        }
        out.extend(figs.into_iter().map(|(m, x)| row(m, Some(x))));
    }
    out
}

impl ResultSet {
    /// Read `manifest.json` and `records.jsonl` from `dir`. A missing file,
    /// a truncated last line, a record of another schema version or an
    /// empty set is an error that says which.
    pub fn read_dir(dir: &Path) -> Result<ResultSet, ResultsError> {
        let mp = dir.join(MANIFEST);
        let text = match std::fs::read_to_string(&mp) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ResultsError::NotAResultSet(dir.into())),
            r => r.map_err(|e| ResultsError::Read(mp.clone(), e))?,
        };
        let manifest = serde_json::from_str(&text).map_err(|e| ResultsError::ParseJson(mp, e))?;
        let rp = dir.join(RECORDS);
        let text = match std::fs::read_to_string(&rp) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ResultsError::MissingRecords(dir.into())),
            r => r.map_err(|e| ResultsError::Read(rp.clone(), e))?,
        };
        let records = parse_records(&rp, &text)?;
        if records.is_empty() {
            return Err(ResultsError::Empty(rp));
        }
        Ok(ResultSet { manifest, records })
    }

    /// Environment ids of records that are not the manifest's (records
    /// appended from another host or build), for the report to label.
    pub fn foreign_env_ids(&self) -> Vec<String> {
        let own = self.manifest.id();
        let mut v: Vec<String> = Vec::new();
        for r in &self.records {
            if !r.env_id.is_empty() && r.env_id != own && !v.contains(&r.env_id) {
                v.push(r.env_id.clone());
            }
        }
        v
    }

    /// Write the set as a result directory (replacing its files).
    pub fn write_dir(&self, dir: &Path) -> Result<(), ResultsError> {
        let mut sink = RecordSink::create(dir, &self.manifest)?;
        for r in &self.records {
            sink.append(r)?;
        }
        Ok(())
    }

    /// Write `results.csv` and `results.json` into `out`.
    pub fn export(&self, out: &Path) -> Result<(), ResultsError> {
        std::fs::create_dir_all(out).map_err(|e| ResultsError::Write(out.to_path_buf(), e))?;
        write_csv(&out.join("results.csv"), &rows(&self.records))?;
        let jp = out.join("results.json");
        let doc = JsonExport {
            rows_version: ROWS_VERSION,
            manifest: self.manifest.clone(),
            records: self.records.clone(),
            rows: rows(&self.records),
        };
        let text = serde_json::to_string(&doc).map_err(|e| ResultsError::Serialise(jp.clone(), e))?;
        std::fs::write(&jp, text).map_err(|e| ResultsError::Write(jp, e))
    }
}

/// Parse `records.jsonl` text: every line a record of this schema version.
/// The last line without its newline that does not parse is a truncated
/// write, reported as such.
pub fn parse_records(path: &Path, text: &str) -> Result<Vec<RunRecord>, ResultsError> {
    let mut records = Vec::new();
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) if i + 1 == lines.len() && !complete => {
                return Err(ResultsError::Truncated { path: path.into(), line: i + 1 })
            }
            Err(source) => return Err(ResultsError::ParseRecord { path: path.into(), line: i + 1, source }),
        };
        // The version is checked before the fields, so a newer record reads
        // as "unknown version" rather than as a confusing field error.
        let found = value.get("schema_version").and_then(serde_json::Value::as_u64).unwrap_or(0);
        if found != u64::from(SCHEMA_VERSION) {
            return Err(ResultsError::UnknownSchema { path: path.into(), line: i + 1, found });
        }
        records.push(serde_json::from_value(value).map_err(|source| ResultsError::ParseRecord {
            path: path.into(),
            line: i + 1,
            source,
        })?);
    }
    Ok(records)
}

/// The layout of `results.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonExport {
    pub rows_version: u32,
    pub manifest: Manifest,
    pub records: Vec<RunRecord>,
    pub rows: Vec<Row>,
}

pub fn read_json_export(path: &Path) -> Result<JsonExport, ResultsError> {
    let text = std::fs::read_to_string(path).map_err(|e| ResultsError::Read(path.to_path_buf(), e))?;
    serde_json::from_str(&text).map_err(|e| ResultsError::ParseJson(path.to_path_buf(), e))
}

pub fn write_csv(path: &Path, rows: &[Row]) -> Result<(), ResultsError> {
    let mut w = csv::Writer::from_path(path).map_err(|e| ResultsError::Csv(path.to_path_buf(), e))?;
    for r in rows {
        w.serialize(r).map_err(|e| ResultsError::Csv(path.to_path_buf(), e))?;
    }
    w.flush().map_err(|e| ResultsError::Write(path.to_path_buf(), e))
}

pub fn read_csv(path: &Path) -> Result<Vec<Row>, ResultsError> {
    let mut r = csv::Reader::from_path(path).map_err(|e| ResultsError::Csv(path.to_path_buf(), e))?;
    r.deserialize().collect::<Result<Vec<Row>, _>>().map_err(|e| ResultsError::Csv(path.to_path_buf(), e))
}

/// Appends records to a result directory as they are measured, so an
/// interrupted run keeps everything up to the interruption.
pub struct RecordSink {
    path: PathBuf,
    out: BufWriter<File>,
}

impl RecordSink {
    /// Create `dir`, write its manifest and start an empty `records.jsonl`.
    pub fn create(dir: &Path, manifest: &Manifest) -> Result<RecordSink, ResultsError> {
        std::fs::create_dir_all(dir).map_err(|e| ResultsError::Write(dir.to_path_buf(), e))?;
        let mp = dir.join(MANIFEST);
        let text = serde_json::to_string_pretty(manifest).map_err(|e| ResultsError::Serialise(mp.clone(), e))?;
        std::fs::write(&mp, text).map_err(|e| ResultsError::Write(mp, e))?;
        let path = dir.join(RECORDS);
        let f = File::create(&path).map_err(|e| ResultsError::Write(path.clone(), e))?;
        Ok(RecordSink { path, out: BufWriter::new(f) })
    }

    pub fn append(&mut self, r: &RunRecord) -> Result<(), ResultsError> {
        let line = serde_json::to_string(r).map_err(|e| ResultsError::Serialise(self.path.clone(), e))?;
        writeln!(self.out, "{line}")
            .and_then(|_| self.out.flush())
            .map_err(|e| ResultsError::Write(self.path.clone(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{CgroupMode, KvmKind};
    use crate::record::{ExitInfo, HostTimings, SCHEMA_VERSION};

    pub(crate) fn manifest() -> Manifest {
        Manifest {
            cvbench_version: "0.1.0".into(),
            git_rev: Some("abc".into()),
            hostname: "h".into(),
            kernel: "6.1".into(),
            cpu_model: "cpu, with comma".into(),
            cores: 2,
            mem_total_kib: 1 << 20,
            kvm: KvmKind::SoftwarePvm,
            cgroup: CgroupMode::Hybrid,
            peers: [("runc".to_string(), Some("runc 1.1".to_string()))].into_iter().collect(),
            loadavg_at_start: Some("0.10 0.20 0.30".into()),
            host_cpu: None,
            git_dirty: Some(false),
            host_net: None,
            design: None,
            swarm: None,
        }
    }

    fn record(backend: &str, error: Option<&str>) -> RunRecord {
        RunRecord {
            schema_version: SCHEMA_VERSION,
            backend: backend.into(),
            workload: "noop".into(),
            env_id: "e1".into(),
            scenario: "startup-serial".into(),
            host: HostTimings {
                launch_to_ready_ns: error.is_none().then_some(1_500_000),
                launch_to_exit_ns: error.is_none().then_some(2_000_000),
                phases: vec![("spawn".into(), 900)],
            },
            exit: Some(ExitInfo::default()),
            metrics: [("x_per_s".to_string(), 0.1 + 0.2)].into_iter().collect(),
            error: error.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn result_dir_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let set = ResultSet {
            manifest: manifest(),
            records: vec![record("native", None), record("qemu", Some("no kernel, \"x\""))],
        };
        set.write_dir(d.path()).unwrap();
        assert_eq!(ResultSet::read_dir(d.path()).unwrap(), set);
    }

    #[test]
    fn csv_round_trips_rows_exactly() {
        let d = tempfile::tempdir().unwrap();
        let rs = rows(&[record("native", None), record("docker", Some("a,b\nc"))]);
        let p = d.path().join("r.csv");
        write_csv(&p, &rs).unwrap();
        assert_eq!(read_csv(&p).unwrap(), rs);
    }

    #[test]
    fn json_export_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let set = ResultSet { manifest: manifest(), records: vec![record("native", None)] };
        set.export(d.path()).unwrap();
        let back = read_json_export(&d.path().join("results.json")).unwrap();
        assert_eq!(back.records, set.records);
        assert_eq!(back.manifest, set.manifest);
        assert_eq!(back.rows, rows(&set.records));
    }

    #[test]
    fn failed_record_without_figures_keeps_one_row_with_its_error() {
        let mut r = record("qemu", Some("kernel not built"));
        r.host.phases.clear();
        r.metrics.clear();
        let rs = rows(&[r]);
        assert_eq!(rs.len(), 1);
        assert_eq!(rs[0].metric, "");
        assert_eq!(rs[0].error.as_deref(), Some("kernel not built"));
    }

    #[test]
    fn figures_name_every_source() {
        let names: Vec<String> = figures(&record("native", None)).into_iter().map(|(m, _)| m).collect();
        assert_eq!(
            names,
            vec!["host.launch_to_ready_ns", "host.launch_to_exit_ns", "phase.spawn_ns", "workload.x_per_s"]
        );
    }

    #[test]
    fn reading_a_missing_dir_says_it_is_not_a_result_set() {
        let err = ResultSet::read_dir(Path::new("/nonexistent/cv")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cv is not a result set"), "{err}");
    }

    fn written(records: &[RunRecord]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        ResultSet { manifest: manifest(), records: records.to_vec() }.write_dir(d.path()).unwrap();
        d
    }

    #[test]
    fn missing_records_file_is_named() {
        let d = written(&[record("native", None)]);
        std::fs::remove_file(d.path().join(RECORDS)).unwrap();
        let err = ResultSet::read_dir(d.path()).unwrap_err();
        assert!(matches!(err, ResultsError::MissingRecords(_)), "{err}");
    }

    #[test]
    fn truncated_last_record_is_reported_as_truncated() {
        let d = written(&[record("native", None), record("crun", None)]);
        let p = d.path().join(RECORDS);
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, &text[..text.len() - 40]).unwrap();
        let err = ResultSet::read_dir(d.path()).unwrap_err();
        assert!(matches!(err, ResultsError::Truncated { line: 2, .. }), "{err}");
        assert!(err.to_string().contains("line 2 is truncated"), "{err}");
    }

    #[test]
    fn unknown_schema_version_is_refused() {
        let mut r = record("native", None);
        r.schema_version = SCHEMA_VERSION + 1;
        let d = written(&[r]);
        let err = ResultSet::read_dir(d.path()).unwrap_err();
        assert!(
            matches!(err, ResultsError::UnknownSchema { found, .. } if found == u64::from(SCHEMA_VERSION) + 1),
            "{err}"
        );
    }

    #[test]
    fn empty_record_file_is_an_error() {
        let d = written(&[]);
        assert!(matches!(ResultSet::read_dir(d.path()).unwrap_err(), ResultsError::Empty(_)));
    }

    #[test]
    fn records_from_another_environment_are_found() {
        let set = ResultSet { manifest: manifest(), records: vec![record("native", None)] };
        assert_eq!(set.foreign_env_ids(), vec!["e1".to_string()]);
    }
}
