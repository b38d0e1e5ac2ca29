//! Which test binaries exist (cargo's JSON messages from `cargo test --no-run`) and the declared
//! table of those that run in the test host too, with what they need that only it has.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum BinariesError {
    #[error("cannot read cargo's JSON messages")]
    Read(#[source] std::io::Error),
    #[error("cargo's JSON message on line {line} is not one we understand")]
    Parse {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("package id '{0}' names no package")]
    PackageId(String),
    #[error("test binaries not found among cargo's artifacts: {0}")]
    Missing(String),
}

/// One test executable cargo built.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestBinary {
    /// `package:target`, e.g. `cvbench-runtime:oci`.
    pub name: String,
    /// The package's directory: cargo runs a test binary from there.
    pub dir: PathBuf,
    pub exe: PathBuf,
    pub kind: TargetKind,
    /// Extra harness arguments (a filter).
    pub args: Vec<String>,
}

/// Which kind of target a test binary was built from (how `cargo test` selects it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetKind {
    /// A library's unit tests: `cargo test -p PKG --lib`.
    Lib,
    /// An integration test: `cargo test -p PKG --test NAME`.
    Test,
}

impl TestBinary {
    /// `cargo test` arguments that select just this binary.
    pub fn cargo_selector(&self) -> Vec<String> {
        let (package, target) = self.name.split_once(':').unwrap_or((&self.name, ""));
        match self.kind {
            TargetKind::Lib => vec!["-p".into(), package.into(), "--lib".into()],
            TargetKind::Test => vec!["-p".into(), package.into(), "--test".into(), target.into()],
        }
    }

    /// The executable's file name, as cargo's `Running` line shows it.
    pub fn file_name(&self) -> String {
        self.exe.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

/// What a test binary needs that makes it worth running in the test host (this host lacks it or
/// has it only in a form the tests cannot use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Root (namespaces, mounts, cgroups, tap devices).
    Root,
    /// A pure cgroup v2 hierarchy (this host's is hybrid v1).
    CgroupV2,
    /// KVM with hardware semantics: a Linux guest's user space makes system calls.
    HardwareKvm,
    /// A kernel CRIU can checkpoint on (this host's has the [vvar_vclock] mapping criu 3.17
    /// cannot handle; the test host's Debian kernel has not).
    Criu,
}

impl Need {
    pub fn label(self) -> &'static str {
        match self {
            Need::Root => "root",
            Need::CgroupV2 => "pure cgroup v2",
            Need::HardwareKvm => "hardware-semantics KVM",
            Need::Criu => "a kernel CRIU runs on",
        }
    }
}

/// One row of the declared table.
pub struct Declared {
    pub package: &'static str,
    pub target: &'static str,
    /// Extra harness arguments (a test-name filter).
    pub args: &'static [&'static str],
    pub needs: &'static [Need],
}

const RUNTIME: &[Need] = &[Need::Root, Need::CgroupV2];
const GUEST: &[Need] = &[Need::Root, Need::HardwareKvm];
const CRIU: &[Need] = &[Need::Root, Need::Criu];

/// The test binaries the test-host pass runs, in order (every test binary runs on this host).
pub const TESTHOST: &[Declared] = &[
    Declared { package: "cvbench-runtime", target: "bad_input", args: &[], needs: RUNTIME },
    Declared { package: "cvbench-runtime", target: "cgroup_v2", args: &[], needs: RUNTIME },
    Declared { package: "cvbench-runtime", target: "container", args: &[], needs: RUNTIME },
    Declared { package: "cvbench-runtime", target: "image", args: &[], needs: RUNTIME },
    Declared { package: "cvbench-runtime", target: "leaks", args: &[], needs: RUNTIME },
    Declared { package: "cvbench-runtime", target: "oci", args: &[], needs: RUNTIME },
    Declared { package: "cvbench-runtime", target: "signals", args: &[], needs: RUNTIME },
    Declared { package: "cvbench-runtime", target: "oci_spec", args: &[], needs: RUNTIME },
    Declared { package: "cvbench-runtime", target: "terminal", args: &[], needs: RUNTIME },
    // Docker driving our runtime where AppArmor is on (dockerd's docker-default profile applied).
    Declared { package: "cvbench-runtime", target: "docker", args: &[], needs: RUNTIME },
    Declared { package: "cvbench-microvm", target: "linux_guest", args: &[], needs: GUEST },
    Declared { package: "cvbench-microvm", target: "bare", args: &[], needs: GUEST },
    Declared { package: "cvbench-microvm", target: "jail", args: &[], needs: GUEST },
    Declared { package: "cvbench-microvm", target: "bare_confinement", args: &[], needs: GUEST },
    Declared { package: "cvbench-microvm", target: "snapshot", args: &[], needs: GUEST },
    Declared { package: "cvbench-microvm", target: "linux_snapshot", args: &[], needs: GUEST },
    Declared { package: "cvbench", target: "linux_guest_backends", args: &[], needs: GUEST },
    Declared { package: "cvbench", target: "microvm_bare", args: &[], needs: GUEST },
    Declared { package: "cvbench", target: "restore_start", args: &[], needs: GUEST },
    // gVisor's KVM platform runs its sentry as a guest kernel: ruled out on kvm_pvm, run here.
    Declared { package: "cvbench", target: "sandbox_peers", args: &["gvisor_kvm"], needs: GUEST },
    // Container checkpoint/restore through CRIU (runc, cvbench-runtime) and its bad input.
    Declared { package: "cvbench-runtime", target: "checkpoint", args: &[], needs: CRIU },
    Declared { package: "cvbench", target: "checkpoint", args: &[], needs: CRIU },
    // The host-kind unit tests: the doctor's facts about a hardware-KVM, pure v2 host.
    Declared {
        package: "cvbench",
        target: "cvbench",
        args: &["hostkind"],
        needs: &[Need::HardwareKvm, Need::CgroupV2],
    },
];

#[derive(Deserialize)]
struct Message {
    reason: String,
    package_id: Option<String>,
    manifest_path: Option<PathBuf>,
    target: Option<Target>,
    executable: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
}

/// Every test executable in cargo's JSON messages (one per line), first seen first.
pub fn from_cargo_json(input: impl BufRead) -> Result<Vec<TestBinary>, BinariesError> {
    let mut out: Vec<TestBinary> = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(BinariesError::Read)?;
        // Cargo forwards build scripts' and rustc's non-JSON noise on the same stream.
        if !line.starts_with('{') {
            continue;
        }
        let m: Message = serde_json::from_str(&line).map_err(|source| BinariesError::Parse { line: i + 1, source })?;
        let (Some(id), Some(manifest), Some(target), Some(exe)) =
            (m.package_id, m.manifest_path, m.target, m.executable)
        else {
            continue;
        };
        let kind = if target.kind.iter().any(|k| k == "test") {
            TargetKind::Test
        } else if target.kind.iter().any(|k| k == "lib") {
            TargetKind::Lib
        } else {
            // A binary's own unit tests: cargo names them in its output; nothing selects them here.
            continue;
        };
        if m.reason != "compiler-artifact" {
            continue;
        }
        let name = format!("{}:{}", package_name(&id)?, target.name);
        if out.iter().any(|b| b.name == name) {
            continue;
        }
        let dir = manifest.parent().map(Path::to_path_buf).unwrap_or_default();
        out.push(TestBinary { name, dir, exe, kind, args: Vec::new() });
    }
    Ok(out)
}

/// `path+file:///dir#name@1.0` -> `name`; `path+file:///dir/name#1.0` -> `name` (cargo leaves the
/// name out when the directory is named after the package).
fn package_name(id: &str) -> Result<&str, BinariesError> {
    let (url, frag) = id.split_once('#').ok_or_else(|| BinariesError::PackageId(id.into()))?;
    let name = match frag.split_once('@') {
        Some((name, _)) => name,
        None => url.trim_end_matches('/').rsplit('/').next().unwrap_or(""),
    };
    if name.is_empty() {
        return Err(BinariesError::PackageId(id.into()));
    }
    Ok(name)
}

/// The declared rows, matched to what cargo built, in the table's order; `only` (if not empty)
/// keeps just the named ones. Every row must be found (a renamed test would vanish silently).
pub fn testhost_binaries(built: &[TestBinary], only: &[String]) -> Result<Vec<TestBinary>, BinariesError> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for row in TESTHOST {
        let name = format!("{}:{}", row.package, row.target);
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        match built.iter().find(|b| b.name == name) {
            Some(b) => out.push(TestBinary { args: row.args.iter().map(|a| a.to_string()).collect(), ..b.clone() }),
            None => missing.push(name),
        }
    }
    if !missing.is_empty() {
        return Err(BinariesError::Missing(missing.join(", ")));
    }
    Ok(out)
}

/// Executable file name -> `package:target`, to name the parts of `cargo test`'s output.
pub fn names_by_file(built: &[TestBinary]) -> HashMap<String, String> {
    built.iter().map(|b| (b.file_name(), b.name.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_artifacts_become_named_test_binaries() {
        let bins = from_cargo_json(include_str!("../fixtures/registry-no-run.json").as_bytes()).unwrap();
        let names: Vec<&str> = bins.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            names,
            ["cvbench-registry:roundtrip", "cvbench-registry:bad_input", "cvbench-registry:cvbench_registry"]
        );
        assert_eq!(bins[1].dir, Path::new("/src/cvbench/registry"));
        assert_eq!(bins[1].file_name(), "bad_input-2039bd6147e7b8af");
        assert_eq!(bins[1].cargo_selector(), ["-p", "cvbench-registry", "--test", "bad_input"]);
        assert_eq!(bins[2].cargo_selector(), ["-p", "cvbench-registry", "--lib"]);
    }

    #[test]
    fn a_package_in_a_directory_of_its_name_is_named_too() {
        let bins = from_cargo_json(include_str!("../fixtures/failing-no-run.json").as_bytes()).unwrap();
        let names: Vec<&str> = bins.iter().map(|b| b.name.as_str()).collect();
        // The library's non-test build has no executable and is not listed.
        assert_eq!(names, ["failfix:crash", "failfix:bad", "failfix:failfix"]);
    }

    #[test]
    fn a_declared_binary_cargo_did_not_build_is_an_error() {
        let bins = from_cargo_json(include_str!("../fixtures/registry-no-run.json").as_bytes()).unwrap();
        let err = testhost_binaries(&bins, &["cvbench-runtime:oci".into()]).unwrap_err();
        assert!(err.to_string().contains("cvbench-runtime:oci"));
    }

    #[test]
    fn declared_binaries_keep_the_table_order_and_arguments() {
        let built: Vec<TestBinary> = ["cvbench:cvbench", "cvbench-runtime:oci"]
            .iter()
            .map(|n| TestBinary {
                name: n.to_string(),
                dir: "/d".into(),
                exe: "/e".into(),
                kind: TargetKind::Test,
                args: vec![],
            })
            .collect();
        let only = vec!["cvbench:cvbench".to_string(), "cvbench-runtime:oci".to_string()];
        let rows = testhost_binaries(&built, &only).unwrap();
        assert_eq!(rows[0].name, "cvbench-runtime:oci");
        assert_eq!(rows[1].args, ["hostkind"]);
    }

    #[test]
    fn garbage_json_is_refused_with_its_line() {
        let err = from_cargo_json("{\"reason\":\n".as_bytes()).unwrap_err();
        assert!(matches!(err, BinariesError::Parse { line: 1, .. }));
    }

    #[test]
    fn package_ids_of_both_forms_name_the_package() {
        assert_eq!(package_name("path+file:///a/registry#cvbench-registry@0.1.0").unwrap(), "cvbench-registry");
        assert_eq!(package_name("path+file:///a/failfix#0.1.0").unwrap(), "failfix");
        assert!(package_name("no-hash").is_err());
    }
}
